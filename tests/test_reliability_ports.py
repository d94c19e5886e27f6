"""Ports that come and go: the keyboard's or the synth's client dies (or closes its port) in the
middle of a performance. improv releases what it can, says so once, keeps running, and reconnects
when a port of that name returns.

The watch itself (`improv.port_watch.PortWatch`) with a fake rtmidi client; the daemon's reaction on
a ManualClock; and `improv run --in NAME --out NAME` over JACK, where the player process is
SIGKILLed mid-phrase and the recorder's port is closed mid-answer, then both come back.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import mido
import pytest

from improv import midi_port, port_watch, ports
from improv.clock import ManualClock
from improv.daemon import Daemon
from improv.engine import Engine
from improv.midi_in import MidiInput
from improv.settings import load_settings
from tests.fakes import FakeMidiOut, FakeModel

SPB = 0.5
REPO = Path(__file__).resolve().parent.parent


class FakeRt:
    """An rtmidi client whose port list the test changes; records close/open calls."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.calls: list[tuple] = []
        self.sent: list[list[int]] = []
        self.fail_open = False

    def get_ports(self):
        return list(self.names)

    def close_port(self):
        self.calls.append(("close",))

    def open_port(self, index, name):
        if self.fail_open:
            raise RuntimeError("gone again")
        self.calls.append(("open", index, name))

    def send_message(self, data):
        self.sent.append(list(data))


def watched(names, name, spec, virtual=False):
    rt = FakeRt(names)
    port = midi_port.OpenPort(rt, name, "jack", virtual=virtual, spec=spec, own_name="improv in")
    return rt, port


def test_a_lost_port_is_reported_once_and_reconnected_when_it_returns(caplog):
    rt, port = watched(["a:out", "kbd:out"], "kbd:out", "kbd:out")
    watch = port_watch.PortWatch(port, "input", logging.getLogger("improv.test"), interval_s=0.5)
    with caplog.at_level(logging.WARNING, logger="improv.test"):
        assert watch.poll(0.0) is None
        rt.names = ["a:out"]
        assert watch.poll(0.1) is None  # between polls: not looked at
        changes = [watch.poll(0.5 + 0.5 * i) for i in range(20)]  # ten seconds gone
        assert changes == ["lost"] + [None] * 19
        rt.names = ["kbd:out", "a:out"]  # back, at another index
        assert watch.poll(20.0) == "back"
        assert watch.poll(20.5) is None
    assert rt.calls == [("close",), ("open", 0, "improv in")]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "'kbd:out' disappeared" in lines[0] and "'kbd:out' is back" in lines[1]
    assert watch.losses == 1 and not watch.lost


def test_a_spec_finds_the_device_again_under_a_new_name_but_an_index_does_not():
    rt, port = watched(["Keyboard:MIDI 1 20:0"], "Keyboard:MIDI 1 20:0", "keyboard")
    watch = port_watch.PortWatch(port, "input", logging.getLogger("improv.test"), interval_s=0.0)
    rt.names = []
    assert watch.poll(1.0) == "lost"
    rt.names = ["Other:port 14:0", "Keyboard:MIDI 1 24:0"]  # ALSA gave it a new client number
    assert watch.poll(2.0) == "back" and port.name == "Keyboard:MIDI 1 24:0"

    rt, port = watched(["x:out", "kbd:out"], "kbd:out", "1")
    watch = port_watch.PortWatch(port, "input", logging.getLogger("improv.test"), interval_s=0.0)
    rt.names = ["x:out"]
    assert watch.poll(1.0) == "lost"
    rt.names = ["x:out", "y:out"]  # index 1 is now another device: not ours
    assert watch.poll(2.0) is None and rt.calls == []


def test_a_failed_reconnect_is_retried_and_virtual_ports_are_never_watched():
    rt, port = watched(["kbd:out"], "kbd:out", "kbd")
    watch = port_watch.PortWatch(port, "input", logging.getLogger("improv.test"), interval_s=0.0)
    rt.names = []
    assert watch.poll(1.0) == "lost"
    rt.names, rt.fail_open = ["kbd:out"], True
    assert watch.poll(2.0) is None and watch.lost
    rt.fail_open = False
    assert watch.poll(3.0) == "back"

    rt, port = watched([], "improv in", None, virtual=True)
    watch = port_watch.PortWatch(port, "input", logging.getLogger("improv.test"), interval_s=0.0)
    assert [watch.poll(float(i)) for i in range(5)] == [None] * 5


def test_sends_wait_while_the_output_reconnects():
    rt, port = watched(["synth:in"], "synth:in", "synth")
    rt.names = ["synth:in"]
    stop = threading.Event()

    def sender():
        while not stop.is_set():
            port.send(mido.Message("note_on", note=60, velocity=1))

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        for _ in range(200):
            assert port.reconnect()
    finally:
        stop.set()
        thread.join()
    assert rt.sent and rt.calls.count(("close",)) == 200


# --------------------------------------------------------------------------- the daemon's reaction


def make(overrides=None):
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    s = load_settings(None, {"time.bpm": 120.0, "sampling.seed": 3, **(overrides or {})})
    engine = Engine(FakeModel(), s, clock, port)
    return Daemon(engine, MidiInput(None)), engine, port


def feed(daemon, timed):
    for t, data in timed:
        daemon.engine.run_until(t)
        daemon.engine.feed_message(t, data)


def test_a_lost_input_releases_the_keys_it_held_and_improv_answers_what_it_heard():
    daemon, engine, port = make({"output.thru": True})
    feed(daemon, [(1.0, [0x90, 60, 90]), (1.5, [0x80, 60, 0]), (1.5, [0x90, 64, 90]),
                  (1.6, [0x90, 67, 90])])  # 64 and 67 are down when the keyboard dies
    engine.run_until(4.0)
    assert port.sounding() == {(0, 64), (0, 67)} and engine.improviser.state == "listening"
    daemon.port_changed("input lost")
    daemon.handle_port_changes()
    engine.run_until(4.0 + 1e-6)
    assert port.sounding() == set() and engine.improviser.listener.keys_down(0.0) == []
    engine.run_until(12.0)
    assert [t for t, _ in port.note_ons() if t > 4.0], "the phrase it heard is answered"
    assert port.sounding() == set()


def test_a_lost_output_forgets_what_sounded_and_a_returning_one_gets_all_notes_off():
    daemon, engine, port = make()
    feed(daemon, [(1.0 + 0.5 * i, [0x90, p, 90]) for i, p in enumerate((60, 62, 64))]
         + [(2.4, [0x80, 60, 0]), (2.4, [0x80, 62, 0]), (2.4, [0x80, 64, 0])])
    engine.run_until(3.51)
    assert engine.improviser.state == "responding" and port.sounding()
    daemon.port_changed("output lost")
    daemon.handle_port_changes()
    assert engine.out.tracker.sounding() == [] and engine.scheduler.pending() == 0
    assert engine.improviser.state == "listening"
    sent = len(port.sent)
    engine.run_until(8.0)
    assert len(port.sent) == sent, "nothing is planned for the synth that left"
    daemon.port_changed("output back")
    daemon.handle_port_changes()
    assert [(m.type, m.control) for m in port.messages[sent:] if m.type == "control_change"] == [
        ("control_change", 123), ("control_change", 64)]
    feed(daemon, [(9.0, [0x90, 65, 90]), (9.3, [0x80, 65, 0])])
    engine.run_until(14.0)
    assert [t for t, _ in port.note_ons() if t > 9.0], "answers again"
    assert port.sounding() == set()


# --------------------------------------------------------------------------- over JACK

PLAYER = textwrap.dedent("""
    import sys, time
    from benchmarks.harness.clients import Player
    player = Player(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    for pitch in (88, 90, 92):
        player.send([0x90, pitch, 90]); time.sleep(0.15)
        player.send([0x80, pitch, 0]); time.sleep(0.05)
    player.send([0x90, 95, 90])  # still down when the process is killed
    print("held", flush=True)
    time.sleep(600)
""")


def _lines(path: Path, *words: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if all(w in line for w in words)]


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _sent(improv, kind: str, pitch: int, after_s: float = -1.0) -> bool:
    """Whether improv's timing log (written as the session goes) has this send."""
    return any(r.kind == kind and r.pitch == pitch and r.actual_s > after_s for r in improv.sent())


def _answer(messages, after_s):
    """Note-ons of improv's answer (the player's pitches are above --range) after `after_s`."""
    return [(t, m) for t, m in messages
            if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2] > 0 and m[1] <= 84 and t > after_s]


@pytest.mark.jack
@pytest.mark.timeout(180)
def test_keyboard_and_synth_die_and_return_over_jack(jack_server, tiny_model_dir, tmp_path):
    pytest.importorskip("rtmidi")
    from benchmarks.harness.clients import Player, Recorder
    from benchmarks.harness.notes import sounding, sounding_in_log
    from tests.test_jack import _phrase, assert_nothing_sounds, start_improv_on

    tag = uuid.uuid4().hex[:4]
    kbd_name, synth_name = f"kbd-{tag}", f"synth-{tag}"
    synth = Recorder(synth_name)
    kbd = subprocess.Popen([sys.executable, "-c", PLAYER, kbd_name], env=jack_server.env, cwd=REPO,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    made = [synth]
    improv = None
    try:
        assert kbd.stdout.readline().strip() == "ready"
        improv = start_improv_on(jack_server, tiny_model_dir, tmp_path, "--in", f"{kbd_name}:out",
                                 "--out", f"{synth_name}:in", "--thru", "--bpm", "120", "--seed", "4",
                                 "--range", "48-84")
        log = improv.log_path
        assert improv.info["in_port"] == f"{kbd_name}:out"
        assert improv.info["out_port"] == f"{synth_name}:in"

        # 1. the keyboard's process is killed with a key down (mid-phrase)
        kbd.stdin.write("go\n")
        kbd.stdin.flush()
        assert kbd.stdout.readline().strip() == "held"
        assert _wait(lambda: _sent(improv, "note_on", 95), 5), improv.output()  # echoed (--thru)
        kbd.send_signal(signal.SIGKILL)
        kbd.wait(10)
        killed_s = time.perf_counter()
        assert _wait(lambda: _sent(improv, "note_off", 95, after_s=killed_s), 5), (
            f"the echo of the held key was not released: {improv.output()[-1500:]}")
        assert _wait(lambda: _lines(log, "MIDI input", "disappeared"), 5)

        # 2. it answers what it heard; the synth's port closes in the middle of that answer
        assert synth.wait_for(lambda m: bool(_answer(m, killed_s)) and sounding(m), 10), (
            f"no answer after the keyboard left: {improv.output()[-1500:]}")
        synth.close()
        made.remove(synth)
        assert _wait(lambda: _lines(log, "MIDI output", "disappeared"), 5), improv.output()[-1500:]
        time.sleep(1.6)  # several polls with both gone: still one line each
        assert improv.proc.poll() is None, improv.output()

        # 3. both come back under their names; improv reconnects and answers again
        assert _wait(lambda: not any(p.startswith(f"{kbd_name}:") for p in jack_server.ports()), 5)
        kbd2, synth2 = Player(kbd_name), Recorder(synth_name)
        made += [kbd2, synth2]
        assert _wait(lambda: _lines(log, "MIDI input", "is back")
                     and _lines(log, "MIDI output", "is back"), 10), improv.output()[-1500:]
        time.sleep(0.1)
        spb = 60.0 / 120.0
        k0 = improv.next_beat(time.perf_counter() + 0.3)
        kbd2.play(_phrase([0, 1], [88, 91], 0.5, spb), improv.beat_time(k0))
        assert synth2.wait_for(lambda m: bool(_answer(m, improv.beat_time(k0 + 1.5))), 10), (
            f"no answer after reconnecting: {improv.output()[-1500:]}")
        assert any(m[:2] == [0x90, 88] for _, m in synth2.received), "thru reaches the new synth"
        time.sleep(4 * spb + 0.3)  # the two-beat answer is over
        assert improv.proc.poll() is None
        stop_s = time.perf_counter()
        assert len(_lines(log, "MIDI input", "disappeared")) == 1, log.read_text()
        assert len(_lines(log, "MIDI output", "disappeared")) == 1, log.read_text()
    finally:
        if kbd.poll() is None:
            kbd.kill()
            kbd.wait()
        code = improv.stop() if improv is not None else 0
        for client in made:
            client.close()
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert_nothing_sounds(synth2, jack_server)
    # what improv sent, whichever synth it reached: before it stopped, it ended every note itself
    assert not sounding_in_log(improv.sent(), before_s=stop_s), "improv left a note on"
