"""Over real JACK ports: a stalled output (every send succeeds, nothing arrives) is noticed and
recovered (issue 13). The daemon runs in this process (`improv.serve._serve` on a thread), so the
test can stall its output client: the OpenPort's rtmidi client is wrapped to drop every message,
as a client whose JACK cycle never finishes does. The watch reopens the port, which replaces the
wrapped client with a fresh one; a C recorder on improv's output must hear improv again, and
nothing may be left sounding."""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid

import pytest

from benchmarks.harness.notes import note_ons, silence, sounding

pytestmark = [pytest.mark.jack, pytest.mark.timeout(120)]

rtmidi = pytest.importorskip("rtmidi")
from benchmarks.harness.clients import Player, Recorder, sleep_until  # noqa: E402

BPM = 240.0  # the metronome sends 8 messages a second
SPB = 60.0 / BPM


CLICK = 0x99  # the metronome's note-on status (channel 10): struck again every beat


class Stalled:
    """An rtmidi client that, once armed, passes one more metronome click and then drops every
    send (what a client stuck in its JACK cycle looks like): that click sounds at the recorder
    and its note-off never comes, until the watch releases it."""

    def __init__(self, rt) -> None:
        self.rt, self.dropped, self.armed, self.stalled_s, self.held = rt, 0, False, None, None

    def send_message(self, data) -> None:
        if self.stalled_s is not None:
            self.dropped += 1
            return
        self.rt.send_message(data)
        if self.armed and data[0] == CLICK and data[2] > 0:
            self.stalled_s, self.held = time.perf_counter(), data[1]


def _released_before_struck_again(received, after_s: float, pitch: int) -> bool:
    """Whether the click held into the stall (sent at `after_s`) ended (its note-off, or All Notes/Sound Off on its
    channel) before the recorder heard it struck again."""
    ch = CLICK & 0x0F
    later = [(t_s, m) for t_s, m in received if t_s > after_s - 0.005]  # the held click arrives a period on
    strikes = [i for i, (_, m) in enumerate(later) if m[0] == CLICK and m[1] == pitch and m[2] > 0]
    for _, m in later[strikes[0] + 1:] if strikes else []:
        if (m[0] == 0xB0 | ch and m[1] in (120, 123)) or (m[0] & 0x0F == ch and m[1] == pitch and (
                m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0))):
            return True
        if m[0] == CLICK and m[1] == pitch and m[2] > 0:
            return False
    return False

    def __getattr__(self, name):
        return getattr(self.rt, name)


def _call(player: Player, t0: float) -> None:
    for i, pitch in enumerate((60, 62, 64, 65, 67, 65, 64, 62)):
        sleep_until(t0 + i * 0.5 * SPB)
        player.send([0x90, pitch, 90])
        sleep_until(t0 + (i * 0.5 + 0.4) * SPB)
        player.send([0x80, pitch, 0])


@pytest.fixture
def in_process_improv(jack_server, tiny_model_dir, monkeypatch):
    """`improv run --backend jack --metronome` on a thread of this process: (the daemon, its
    output watch, stop)."""
    from improv import output_watch, serve
    from improv.settings import load_settings

    made: dict = {}
    attach = output_watch.OutputWatch.attach.__func__

    def keep_watch(cls, *args, **kwargs):
        made["watch"] = attach(cls, *args, **kwargs)
        return made["watch"]

    class KeptDaemon(serve.Daemon):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["daemon"] = self

    monkeypatch.setattr(output_watch.OutputWatch, "attach", classmethod(keep_watch))
    monkeypatch.setattr(serve, "Daemon", KeptDaemon)
    settings = load_settings(None, {"time.bpm": BPM, "time.metronome": True, "sampling.seed": 3})
    options = serve.ServeOptions(backend="jack", quiet=True, start_s=time.perf_counter())
    stop = threading.Event()
    models = serve.load_live_models(tiny_model_dir, ())
    interval = sys.getswitchinterval()
    thread = threading.Thread(target=serve._serve, args=(models, settings, options, stop, None, None),
                              daemon=True, name="improv-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not ("daemon" in made and made.get("watch")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert made.get("watch"), "improv's output watch did not start"
    yield made["daemon"], made["watch"], stop, thread
    stop.set()
    thread.join(timeout=10)
    sys.setswitchinterval(interval)


def test_a_stalled_output_is_noticed_reopened_and_heard_again(jack_server, in_process_improv, caplog):
    daemon, watch, stop, thread = in_process_improv
    caplog.set_level(logging.INFO, logger="improv")
    tag = uuid.uuid4().hex[:4]
    player, recorder = Player(f"player-{tag}"), Recorder(f"rec-{tag}")
    try:
        jack_server.connect(player.port, jack_server.wait_port(":improv in"))
        jack_server.connect(watch.own, recorder.port)
        assert recorder.wait_for(lambda m: len(note_ons(m)) >= 2, timeout_s=10), (
            f"{silence(watch.port.sent, recorder.received, 'messages')}the metronome never arrived before the stall; "
            f"{jack_server.xruns()}")
        stalled = Stalled(watch.port.rt)
        watch.port.rt = stalled
        _call(player, time.perf_counter() + 0.05)  # an answer is planned into the stall
        stalled.armed = True  # from the next note-on on, nothing improv sends arrives anywhere
        deadline = time.monotonic() + 10
        while watch.reopens == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        reopened_s = time.perf_counter()
        assert watch.reopens == 1, f"the stalled output was not reopened; it dropped {stalled.dropped} messages"
        print(f"\nstalled to reopened: {reopened_s - stalled.stalled_s:.2f} s (polled every 0.05 s here)")
        assert watch.port.rt is not stalled
        assert recorder.wait_for(lambda m: any(t > reopened_s for t, _ in note_ons(m)), timeout_s=5), (
            f"nothing improv sent arrived after the reopen; {jack_server.xruns()}")
        assert recorder.port in (watch.graph.connections(watch.own) or set()), "the recorder's connection was not restored"
        time.sleep(2.0)  # a while after the reopen: no second one
        assert _released_before_struck_again(recorder.received, stalled.stalled_s, stalled.held), (
            f"the click that sounded into the stall (pitch {stalled.held}) was not released after the reopen")
    finally:
        stop.set()
        thread.join(timeout=10)
        time.sleep(0.2)
        player.close()
        recorder.close()
    said = [r.getMessage() for r in caplog.records if "messages improv sent" in r.getMessage()]
    assert len(said) == 1 and "improv out" in said[0], said
    assert "went silent" in daemon.last_error, daemon.last_error
    assert watch.reopens == 1, f"reopened {watch.reopens} times"
    assert stalled.dropped >= 3 and reopened_s - stalled.stalled_s < 5.0
    left = sounding(recorder.received)
    assert not left, f"still sounding at the recorder after improv stopped: {left}; {jack_server.xruns()}"
    assert not daemon.engine.out.tracker.sounding(), "improv still tracks notes as sounding"


class NeverRun:
    """An output client JACK never runs (issue 13's silent sessions): every send is taken, nothing leaves."""

    def __init__(self, rt) -> None:
        self.rt, self.dropped = rt, 0

    def send_message(self, data) -> None:
        self.dropped += 1

    def send_at(self, data, due_s) -> None:  # the scheduler's timed sends: taken too, and lost
        self.dropped += 1

    def __getattr__(self, name):
        return getattr(self.rt, name)


@pytest.fixture
def first_output_never_runs(monkeypatch):
    """improv's first output client is a `NeverRun`; those reopened are real."""
    from improv import ports

    opened = []
    open_port = ports.open_port

    def first_stalled(kind, *args, **kwargs):
        port = open_port(kind, *args, **kwargs)
        if kind == "out" and not opened:
            port.rt = NeverRun(port.rt)
            opened.append(port.rt)
        return port

    monkeypatch.setattr(ports, "open_port", first_stalled)
    return opened


def test_an_output_never_run_from_start_up_is_reopened_before_the_first_answer(
        jack_server, first_output_never_runs, in_process_improv, caplog):
    daemon, watch, stop, thread = in_process_improv
    tag = uuid.uuid4().hex[:4]
    recorder = Recorder(f"rec-{tag}")
    try:
        assert first_output_never_runs, "improv's first output client was not replaced by the stalled one"
        assert watch.reopens == 1 and watch.port.rt is not first_output_never_runs[0], (
            f"the output that never ran was not reopened at start-up (it took {first_output_never_runs[0].dropped} sends)")
        jack_server.connect(watch.own, recorder.port)
        assert recorder.wait_for(lambda m: len(note_ons(m)) >= 2, timeout_s=10), (
            f"{silence(watch.port.sent, recorder.received, 'messages')}the metronome never arrived; {jack_server.xruns()}")
    finally:
        stop.set()
        thread.join(timeout=10)
        recorder.close()
    records = caplog.get_records("setup") + caplog.records  # the check ran while the fixture started improv
    said = [r.getMessage() for r in records if "at start-up" in r.getMessage()]
    assert len(said) == 1 and "reopening it" in said[0], said
