"""Over real JACK ports, with the shipped default model: a player repeats a figure, call after call,
and improv's answers take it up (issue 14). The answers are what a recorder client heard.

At 120 bpm a beat is 0.5 s. The figure is a jig's (D F# A F# D A, in 8th notes), which the
chorale model alone almost never plays; the session memory, hearing it, offers it back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from benchmarks.harness.improv_process import ImprovProcess
from benchmarks.harness.notes import silence
from benchmarks.music import measure
from improv.pairing import pair_messages
from improv.tokens import Note

pytestmark = [pytest.mark.jack, pytest.mark.timeout(180)]

rtmidi = pytest.importorskip("rtmidi")
from benchmarks.harness.clients import Player, Recorder, sleep_until  # noqa: E402

SPB = 0.5
FIGURE = (74, 78, 81, 78, 74, 69)  # D5 F#5 A5 F#5 D5 A4
CALL = [(i * 0.5, p) for i, p in enumerate(FIGURE * 2)] + [(6.0, 74)]  # (beats, pitch): twice, then home
CALLS = 3
EXCHANGE_BEATS = 24.0  # a call (6.5 beats), the silence, an answer as long, and room after it
MODEL = Path(__file__).resolve().parents[1] / "models" / "bach-lstm"
EXTRA: list[str] = []


def _notes(messages, origin_s: float) -> list[Note]:
    played, _ = pair_messages(messages, restrike_ends=False)
    return [Note((n.start - origin_s) / SPB, (n.end - n.start) / SPB, n.pitch, n.velocity) for n in played]


def test_answers_take_up_a_figure_the_player_repeats(jack_server, tmp_path):
    tag = uuid.uuid4().hex[:4]
    player, recorder = Player(f"player-{tag}"), Recorder(f"rec-{tag}")
    improv = ImprovProcess.started(MODEL, ["--backend", "jack", "--bpm", "120", *EXTRA], jack_server.env, tmp_path,
                                   timing_log=True)
    try:
        jack_server.connect(player.port, jack_server.wait_port(":improv in"))
        jack_server.connect(jack_server.wait_port(":improv out"), recorder.port)
        start = time.perf_counter() + 0.5
        for k in range(CALLS):
            t0 = start + k * EXCHANGE_BEATS * SPB
            for beats, pitch in CALL:
                sleep_until(t0 + beats * SPB)
                player.send([0x90, pitch, 90])
                sleep_until(t0 + (beats + 0.4) * SPB)
                player.send([0x80, pitch, 0])
        sleep_until(start + CALLS * EXCHANGE_BEATS * SPB)
    finally:
        improv.stop()
        player.close()
        recorder.close()
    heard = _notes(recorder.received, start)
    call = [Note(b, 0.4, p, 90) for b, p in CALL]
    answers = [[Note(n.onset_beats - k * EXCHANGE_BEATS, n.duration_beats, n.pitch, n.velocity) for n in heard
                if k * EXCHANGE_BEATS + 7.0 <= n.onset_beats < (k + 1) * EXCHANGE_BEATS] for k in range(CALLS)]
    assert all(answers), (f"{silence(improv.note_ons_sent(), recorder.received)}an exchange without an answer: "
                          f"{[len(a) for a in answers]} notes")
    figures = [measure(call, a) for a in answers]
    echoes = [round(m.echo, 2) for m in figures]  # without the session memory: 0.0 each (4 seeds in process)
    assert sum(e > 0 for e in echoes) >= 2 and sum(echoes) / CALLS >= 0.1, \
        f"the answers hardly take the figure up: echo per answer {echoes}; answers {[[n.pitch for n in a] for a in answers]}"
    assert all(m.poly_excess <= 0.3 for m in figures), "a single line is answered by a single line"
