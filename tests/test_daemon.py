"""The daemon without MIDI hardware: fake ports, the real engine and threads, and subprocesses for
signals and the start-up errors."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import mido
import pytest

from improv import ports
from improv.clock import MonotonicClock
from improv.daemon import Daemon
from improv.midi_in import MidiInput
from improv.pairing import pair_messages
from improv.record import Take
from improv.settings import load_settings
from improv.view import LogView, Snapshot, make_view, render

pytestmark = pytest.mark.timeout(120)


class FakePort:
    """Records what is sent; `fail` makes every send raise (a port that went away)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[float, mido.Message]] = []
        self.fail = fail
        self.closed = False

    def send(self, msg: mido.Message) -> None:
        if self.fail:
            raise OSError("port gone")
        self.sent.append((time.perf_counter(), msg))

    def close(self) -> None:
        self.closed = True


def hanging(sent) -> list[tuple[int, int]]:
    """(channel, pitch) of every note-on without a note-off of its own (All Notes Off is not one)."""
    _, strikes = pair_messages([(t, m) for t, m in sent if m.type in ("note_on", "note_off")],
                               restrike_ends=False)
    return sorted({(n.channel, n.pitch) for n in strikes})


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from improv.model_step import StepModel

    return StepModel.load(tiny_model_dir)


@pytest.fixture
def make_daemon(model):
    made: list[Daemon] = []

    def make(port: FakePort, **overrides) -> Daemon:
        from improv.engine import Engine

        settings = load_settings(None, {"time.bpm": 300.0, "sampling.seed": 1, **overrides})
        engine = Engine(model, settings, MonotonicClock(), port)
        daemon = Daemon(engine, MidiInput(None), take=Take())
        daemon.start()
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


def play(daemon: Daemon, notes: list[tuple[float, int]], length_s: float) -> None:
    """Put note-on/off pairs into the input queue at their real times (sleep, as a player)."""
    start = time.perf_counter()
    events = sorted([(t, [0x90, p, 90]) for t, p in notes] +
                    [(t + length_s, [0x80, p, 0]) for t, p in notes])
    for t, data in events:
        time.sleep(max(0.0, start + t - time.perf_counter()))
        daemon.midi_in.put(time.perf_counter(), data)


def test_stop_while_answering_releases_every_note(make_daemon):
    port = FakePort()
    daemon = make_daemon(port)
    play(daemon, [(0.0, 60), (0.2, 64), (0.4, 67), (0.6, 72)], 0.15)
    assert wait_until(lambda: any(m.type == "note_on" for _, m in port.sent)), "no answer"
    daemon.stop()
    assert not hanging(port.sent)
    assert any(m.type == "control_change" and m.control == 123 for _, m in port.sent)
    assert daemon.engine.out.tracker.sounding() == []


def test_thru_notes_are_released_on_stop(make_daemon):
    port = FakePort()
    daemon = make_daemon(port, **{"output.thru": True})
    daemon.midi_in.put(time.perf_counter(), [0x90, 50, 100])  # held, never released
    assert wait_until(lambda: any(m.type == "note_on" and m.note == 50 for _, m in port.sent))
    daemon.stop()
    assert not hanging(port.sent)


def test_channel_filter(make_daemon):
    port = FakePort()
    daemon = make_daemon(port, **{"output.input_channel": 2, "output.thru": True})
    daemon.midi_in.put(time.perf_counter(), [0x90, 50, 100])  # channel 1: ignored
    daemon.midi_in.put(time.perf_counter(), [0x91, 52, 100])  # channel 2: heard
    assert wait_until(lambda: any(m.type == "note_on" for _, m in port.sent))
    time.sleep(0.05)
    assert [m.note for _, m in port.sent if m.type == "note_on"] == [52]
    assert daemon.engine.notes_in == 2  # the engine counts; the improviser filters


def test_model_error_releases_notes_and_keeps_listening(make_daemon, monkeypatch, caplog):
    port = FakePort()
    daemon = make_daemon(port, **{"output.thru": True})
    failed = threading.Event()
    real_on_tick = daemon.engine.improviser.on_tick

    def flaky(now_s):  # fails once, on the first tick after the note came in
        if daemon.engine.notes_in and not failed.is_set():
            failed.set()
            raise RuntimeError("onnxruntime exploded")
        return real_on_tick(now_s)

    monkeypatch.setattr(daemon.engine.improviser, "on_tick", flaky)
    with caplog.at_level(logging.ERROR, logger="improv"):
        daemon.midi_in.put(time.perf_counter(), [0x90, 55, 100])
        assert wait_until(lambda: daemon.model_errors == 1)
    assert "onnxruntime exploded" in caplog.text and "still listening" in caplog.text
    assert len([r for r in caplog.records if r.name == "improv"]) == 1
    assert not hanging(port.sent)  # the thru note was released by the panic
    daemon.midi_in.put(time.perf_counter(), [0x90, 57, 100])  # still listening
    assert wait_until(lambda: any(m.type == "note_on" and m.note == 57 for _, m in port.sent))
    assert daemon._thread is not None and daemon._thread.is_alive()


def test_port_errors_are_logged_once_and_the_daemon_runs_on(make_daemon, caplog):
    port = FakePort(fail=True)
    with caplog.at_level(logging.ERROR):
        daemon = make_daemon(port, **{"output.thru": True})
        for pitch in (60, 62, 64):
            daemon.midi_in.put(time.perf_counter(), [0x90, pitch, 100])
            daemon.midi_in.put(time.perf_counter(), [0x80, pitch, 0])
        assert wait_until(lambda: daemon.engine.out.send_errors >= 6)
    assert sum("send failed" in r.getMessage() for r in caplog.records) == 1
    assert daemon._thread.is_alive() and daemon.snapshot().errors >= 6


def test_record_writes_both_parts_at_their_times(tmp_path):
    from improv.midifile import read_midi_tracks

    take = Take()
    t0 = 100.0
    take.note_on("player", t0, 0, 60, 90)
    take.note_off("player", t0 + 0.25, 0, 60)
    take.feed_bytes("improv", t0 + 1.0, [0x90, 67, 80])
    take.feed_bytes("improv", t0 + 1.125, [0xB0, 123, 0])  # All Notes Off ends it
    take.feed_bytes("improv", t0 + 1.2, [0xF8])  # clock: ignored
    path = take.write(tmp_path / "take.mid", bpm=120.0, origin_s=t0)
    tracks = read_midi_tracks(path)
    assert set(tracks) == {"player", "improv"}
    (p,), (i,) = tracks["player"], tracks["improv"]
    assert (p.pitch, p.onset_beats, p.duration_beats) == (60, 0.0, 0.5)
    assert (i.pitch, i.onset_beats, i.duration_beats) == (67, 2.0, 0.25)
    assert mido.MidiFile(str(path)).ticks_per_beat == 960


def test_record_takes_each_answer_note_once(model, tmp_path):
    """The daemon taps improv's part from the scheduler's records, one per message sent."""
    from improv.engine import Engine
    from improv.midifile import read_midi_tracks

    port = FakePort()
    settings = load_settings(None, {"time.bpm": 300.0, "sampling.seed": 1})
    daemon = Daemon(Engine(model, settings, MonotonicClock(), port), MidiInput(None), take=Take())
    daemon.start()
    try:
        play(daemon, [(0.0, 60), (0.2, 64), (0.4, 67), (0.6, 72)], 0.15)
        assert wait_until(lambda: sum(m.type == "note_on" and m.velocity for _, m in port.sent) >= 2)
    finally:
        daemon.stop()
    sent = sorted(m.note for _, m in port.sent if m.type == "note_on" and m.velocity > 0)
    path = daemon.take.write(tmp_path / "take.mid", bpm=300.0)
    assert sorted(n.pitch for n in read_midi_tracks(path)["improv"]) == sent


def test_record_never_starts_before_zero(tmp_path):
    take = Take()
    take.note_on("player", 9.9, 0, 60, 90)
    take.note_off("player", 10.4, 0, 60)
    path = take.write(tmp_path / "t.mid", bpm=60.0, origin_s=10.0)  # origin after the note
    from improv.midifile import read_midi_tracks

    (note,) = read_midi_tracks(path)["player"]
    assert note.onset_beats == pytest.approx(0.9, abs=1e-3)  # the origin backs up a whole beat


def test_view_renders_and_logs_without_a_terminal(capsys):
    from improv.tokens import Note

    snap = Snapshot(backend="jack", in_port="a", out_port="b", model="tiny", bpm=100.0,
                    state="responding", call=(Note(0, 1, 60, 90),),
                    response=(Note(2, 1, 64, 90),), step_ms_p50=0.1, step_ms_p99=0.3,
                    late_ms_p50=0.2, late_ms_p99=0.9)
    from rich.console import Console

    console = Console(record=True, width=100)
    console.print(render(snap))
    text = console.export_text()
    assert "responding" in text and "0.90 ms p99" in text and "jack" in text
    view = make_view(quiet=False, stream=sys.stdout)  # captured: not a terminal
    assert isinstance(view, LogView)
    view.update(snap)
    view.update(snap)  # unchanged: no second line
    assert capsys.readouterr().out.count("improv: responding") == 1


# ---------------------------------------------------------------------- subprocesses


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, JACK_DEFAULT_SERVER=f"nobody-{uuid.uuid4().hex[:8]}",
                JACK_NO_START_SERVER="1", IMPROV_VERBOSE="", **extra)


@pytest.mark.skipif(os.path.exists("/dev/snd/seq"), reason="this machine has an ALSA sequencer")
def test_run_without_midi_system_says_how_to_fix_it(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "improv.cli", "run", "--model", str(tiny_model_dir), "--quiet"],
        env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == f"improv: {ports.FIX_ALSA}"


def test_bad_option_is_a_config_error_before_any_port(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "improv.cli", "run", "--model", str(tiny_model_dir),
         "--range", "high-low"], env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["improv: --range 'high-low': use LO-HI with "
                                                  "MIDI pitches, e.g. 36-96"]


FAKE_RUN = textwrap.dedent("""
    import json, sys, time
    import improv.midi_port as midi_port
    import improv.ports as ports

    class Rt:
        def ignore_types(self, **kw): pass
        def set_callback(self, cb): self.cb = cb
        def cancel_callback(self): pass
        def send_message(self, data): log.write(json.dumps(data) + "\\n"); log.flush()
        def close_port(self): pass
        def delete(self): pass

    log = open(sys.argv[1], "w")
    rts = {}
    def open_port(kind, spec, backend):
        rts[kind] = Rt()
        return midi_port.OpenPort(rts[kind], "fake " + kind, backend, virtual=True)
    ports.open_port = open_port
    ports.choose_backend = lambda name: "fake"

    import threading
    def player():  # a held note with --thru: something sounds when the signal comes
        while "in" not in rts or not hasattr(rts["in"], "cb"):
            time.sleep(0.01)
        time.sleep(0.2)
        rts["in"].cb(([0x90, 62, 100], 0.0), None)
    threading.Thread(target=player, daemon=True).start()

    from improv.serve import ServeOptions, run_daemon
    run_daemon(ServeOptions(model=sys.argv[2], ready_file=sys.argv[3], quiet=True,
                            overrides={"output.thru": True}))
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_releases_notes(tmp_path, tiny_model_dir, sig):
    sent_log, ready = tmp_path / "sent.jsonl", tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-c", FAKE_RUN, str(sent_log), str(tiny_model_dir),
                             str(ready)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(ready.exists, 60), proc.stderr.read() if proc.poll() is not None else ""
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid and info["startup_s"] > 0
        assert wait_until(lambda: "[144, 62, 100]" in sent_log.read_text(), 10)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "ready in" in out and "Traceback" not in err
    sent = [json.loads(line) for line in sent_log.read_text().splitlines()]
    note_on = sent.index([0x90, 62, 100])
    assert [0x80, 62, 0] in sent[note_on:] or [0x90, 62, 0] in sent[note_on:]
    assert [0xB0, 123, 0] in sent[note_on:]
    assert not ready.exists()  # removed on exit: the daemon is gone


def test_run_options_become_settings_overrides():
    from improv.commands.run import build_overrides

    overrides = build_overrides(temperature=0.7, pitch_range="40-80", channel="3",
                                out_channel=2, thru=True, metronome=None, key="A minor")
    assert overrides == {"sampling.temperature": 0.7, "sampling.pitch_lo": 40,
                         "sampling.pitch_hi": 80, "output.input_channel": 3,
                         "output.channel": 2, "output.thru": True, "sampling.key": "A minor"}
    assert build_overrides(channel="omni") == {"output.input_channel": None}
    settings = load_settings(None, overrides)
    assert settings.sampling.pitch_lo == 40 and settings.output.input_channel == 3


def test_view_keeps_the_roll_small():
    from improv.tokens import Note
    from improv.view import call_and_response, pitch_window

    assert pitch_window([60, 64]) == (60, 64)
    lo, hi = pitch_window(list(range(30, 100)))
    assert hi - lo + 1 == 20
    call, response = call_and_response([Note(8, 1, 60, 90)], [Note(10, 1, 62, 90), Note(40, 1, 62, 90)])
    assert call[0].onset_beats == 0 and [n.onset_beats for n in response] == [2]
