"""Over real JACK ports: a Program Change during a performance switches the model (issue 15).

Two tiny models whose vocabularies share no pitch (low: 21..63, high: 64..108), so every note the
recorder hears says which model played it. At 120 bpm a beat is 0.5 s; the call's first note sets
the grid (a bar line), each call is 4 notes of half a beat, answered 3 beats after it starts."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from benchmarks.harness.improv_process import ImprovProcess
from benchmarks.harness.notes import note_ons, silence, sounding, sounding_in_log
from improv.tokens import TokenConfig

pytestmark = [pytest.mark.jack, pytest.mark.timeout(180)]

rtmidi = pytest.importorskip("rtmidi")
from benchmarks.harness.clients import Player, Recorder, sleep_until  # noqa: E402

SPB = 0.5
SPLIT = 64
CALL = (60, 62, 64, 65)
SECOND_CALL_BEATS = 12.0  # answer 1 lies in beats 3..5, answer 2 in 15..17


@pytest.fixture(scope="module")
def split_models(tmp_path_factory):
    from tests.tiny_models import export_tiny

    root = tmp_path_factory.mktemp("split-models")
    return [export_tiny("lstm", root / "low", seed=1, config=TokenConfig(pitch_min=21, pitch_max=SPLIT - 1)),
            export_tiny("lstm", root / "high", seed=2, config=TokenConfig(pitch_min=SPLIT, pitch_max=108))]


def _play_call(player: Player, t0: float) -> None:
    for i, pitch in enumerate(CALL):
        sleep_until(t0 + i * 0.5 * SPB)
        player.send([0x90, pitch, 90])
        sleep_until(t0 + (i * 0.5 + 0.4) * SPB)
        player.send([0x80, pitch, 0])


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _osc_get(port: int) -> dict:
    """/improv/get to improv's OSC port; {address: value} of the state it sends back."""
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)  # the main thread answers a few times a second
        s.sendto(OscMessageBuilder("/improv/get").build().dgram, ("127.0.0.1", port))
        state = {}
        try:
            while True:
                msg = OscMessage(s.recvfrom(65536)[0])
                state[msg.address] = msg.params[0]
                s.settimeout(0.3)
        except socket.timeout:
            return state


def test_a_program_change_switches_the_model_for_the_next_answer(jack_server, split_models, tmp_path):
    tag = uuid.uuid4().hex[:4]
    player, recorder = Player(f"player-{tag}"), Recorder(f"rec-{tag}")
    osc_port = _free_udp_port()
    improv = ImprovProcess.started(split_models, ["--backend", "jack", "--bpm", "120", "--seed", "4",
                                                  "--key", "off", "--log-level", "info", "--osc", str(osc_port)],
                                   jack_server.env, tmp_path, timing_log=True)
    try:
        jack_server.connect(player.port, jack_server.wait_port(":improv in"))
        jack_server.connect(jack_server.wait_port(":improv out"), recorder.port)
        start = time.perf_counter() + 0.5
        _play_call(player, start)
        sleep_until(start + 10.0 * SPB)
        player.send([0xC0, 9])  # program 10 on the gear: no model there
        sleep_until(start + SECOND_CALL_BEATS * SPB)
        _play_call(player, start + SECOND_CALL_BEATS * SPB)  # the switch comes during the call
        sleep_until(start + (SECOND_CALL_BEATS + 0.75) * SPB)
        player.send([0xC0, 1])
        sleep_until(start + 24.0 * SPB)
        left = sounding(recorder.received)  # before the shutdown's All Notes Off
        before_stop_s = time.perf_counter()
        state = _osc_get(osc_port)
    finally:
        assert improv.stop() == 0
        player.close()
        recorder.close()
    log = improv.output()
    heard = [(round((t - start) / SPB, 2), m[1]) for t, m in note_ons(recorder.received)]
    first = [p for b, p in heard if b < SECOND_CALL_BEATS]
    second = [p for b, p in heard if b >= SECOND_CALL_BEATS]
    assert first and max(first) < SPLIT, \
        f"{silence(improv.note_ons_sent(), recorder.received)}answer 1 is not the first model's: {heard}"
    assert second and min(second) >= SPLIT, f"answer 2 is not the new model's: {heard}\n{log[-2000:]}"
    assert [m for m in ("model low", "model high") if m in log] == ["model low", "model high"]
    assert log.count("no model at position 9") == 1, log[-2000:]
    unreleased = sounding_in_log(improv.sent(), before_s=before_stop_s)
    assert not unreleased, f"improv sent no note-off for {unreleased}; heard {heard}"
    assert not left, f"notes left on at the end: {left} (improv sent their note-offs); {jack_server.xruns()}"
    assert state.get("/improv/state/model") == "high" and state.get("/improv/state/answers") == 2, state
