"""The output watch's decisions with fakes (no JACK): what counts as a dead output, what does not
(a lossy transport, a connection the user removed), and the back-off when reopening does not help.
The real stall and its recovery over JACK: tests/test_jack_watch.py."""

from __future__ import annotations

import contextlib
import logging

import pytest

from improv import output_watch
from improv.output_watch import MONITOR, OutputWatch
from improv.midi_port import OpenPort

OWN = "improv out:improv out"
WATCHER = f"{MONITOR}:{MONITOR}"


class FakeGraph:
    def __init__(self) -> None:
        self.links = {OWN: {WATCHER, "synth:in"}}
        self.listed = [OWN, WATCHER, "synth:in"]

    def ports(self, pattern: str = "") -> list[str]:
        return list(self.listed)

    def connections(self, port: str):
        return set(self.links[port]) if port in self.links else None

    def connect(self, source: str, destination: str) -> bool:
        self.links.setdefault(source, set()).add(destination)
        return True

    def new_port(self, short_name: str, before: set[str]):
        hits = [p for p in self.listed if p.rpartition(":")[2] == short_name and p not in before]
        return hits[0] if len(hits) == 1 else None

    def close(self) -> None:
        pass


class FakeMonitor:
    def __init__(self) -> None:
        self.waiting = 0

    def get_message(self):
        if self.waiting:
            self.waiting -= 1
            return ([0x90, 60, 1], 0.0)
        return None


class FakeRt:
    def send_message(self, data) -> None:
        pass

    def close_port(self) -> None:
        pass

    def delete(self) -> None:
        pass


class FakeDaemon:
    def __init__(self) -> None:
        self.changes: list[str] = []
        self.last_error = ""
        self.midi_in = self

    def port_changed(self, change: str) -> None:
        self.changes.append(change)

    def paused(self):
        return contextlib.nullcontext()


@pytest.fixture
def rig(monkeypatch):
    graph, monitor, daemon = FakeGraph(), FakeMonitor(), FakeDaemon()
    port = OpenPort(FakeRt(), "improv out", "jack", virtual=True, own_name="improv out")
    reopened = []

    def fake_open_port(kind, spec, backend):
        name = f"improv out-0{len(reopened) + 1}:improv out"
        graph.listed.append(name)
        reopened.append(name)
        return OpenPort(FakeRt(), "improv out", backend, virtual=True, own_name="improv out")

    monkeypatch.setattr(output_watch, "open_port", fake_open_port)
    watch = OutputWatch(graph, port, OWN, monitor, logging.getLogger("improv"))
    return watch, graph, monitor, daemon, reopened


def _run(watch, daemon, monitor, seconds: float, sends_per_poll: int, arrive_every: int = 0,
         start_s: float = 0.0) -> float:
    """Poll every 0.25 s for `seconds`: improv sends, and one in `arrive_every` polls (0: none) something arrives."""
    t = start_s
    for i in range(int(seconds / 0.25)):
        t += 0.25
        for _ in range(sends_per_poll):
            watch.port.send(_Msg())
        if arrive_every and i % arrive_every == 0:
            monitor.waiting += 1
        watch.poll(t, daemon)
    return t


class _Msg:
    def bytes(self) -> list[int]:
        return [0x90, 60, 100]


def test_sending_into_silence_is_said_once_and_reopened(rig, caplog):
    watch, graph, monitor, daemon, reopened = rig
    _run(watch, daemon, monitor, 1.5, sends_per_poll=2)
    assert watch.reopens == 1 and reopened == ["improv out-01:improv out"]
    assert graph.links[watch.own] == {WATCHER, "synth:in"}, "the connections were not restored"
    assert daemon.changes == ["output lost", "output back"] and "went silent" in daemon.last_error
    said = [r for r in caplog.records if "messages improv sent" in r.getMessage()]
    assert len(said) == 1 and "restoring its 1 connection" in said[0].getMessage()


def test_a_lossy_transport_is_not_a_dead_output(rig):
    watch, graph, monitor, daemon, reopened = rig
    _run(watch, daemon, monitor, 10.0, sends_per_poll=4, arrive_every=3)  # most messages lost
    assert watch.reopens == 0


def test_idle_output_and_a_single_lost_message_are_not_dead(rig):
    watch, graph, monitor, daemon, reopened = rig
    watch.port.send(_Msg())
    _run(watch, daemon, monitor, 5.0, sends_per_poll=0)
    assert watch.reopens == 0


def test_sends_before_the_first_poll_are_not_a_second_of_silence(rig):
    watch, graph, monitor, daemon, reopened = rig
    for _ in range(5):  # sent before the monitor's connection took effect
        watch.port.send(_Msg())
    watch.poll(1000.0, daemon)
    assert watch.reopens == 0


def test_a_connection_the_user_removed_is_adopted(rig, caplog):
    watch, graph, monitor, daemon, reopened = rig
    graph.links[OWN] = {WATCHER, "other:in"}  # the user rewired the synth
    _run(watch, daemon, monitor, 1.0, sends_per_poll=2, arrive_every=1)
    assert watch.saved == {"other:in"} and watch.reopens == 0
    graph.links[OWN] = set()  # everything disconnected, the monitor too: put back, not dead
    _run(watch, daemon, monitor, 0.5, sends_per_poll=0, start_s=1.0)
    assert WATCHER in graph.links[OWN] and watch.saved == set() and watch.reopens == 0


def test_reopening_that_does_not_help_backs_off_and_is_logged_once(rig, caplog):
    watch, graph, monitor, daemon, reopened = rig
    _run(watch, daemon, monitor, 60.0, sends_per_poll=2)  # the whole graph stalled: nothing ever arrives
    assert 3 <= watch.reopens <= 6, f"{watch.reopens} reopens in 60 s"  # 1, +2, +4, +8, +16, +30 s
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2 and "still silent" in said[1], said
    monitor.waiting = 1
    _run(watch, daemon, monitor, 0.25, sends_per_poll=1, start_s=60.0)
    assert "heard again" in caplog.records[-1].getMessage() and not watch.failing


class _Clock:
    """A clock that moves only when the check sleeps (no wall-clock figure decides these tests)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Delivering(FakeRt):
    """An output client JACK runs: what it is sent arrives at the monitor."""

    def __init__(self, monitor: FakeMonitor) -> None:
        self.monitor = monitor

    def send_message(self, data) -> None:
        self.monitor.waiting += 1


def test_an_output_that_delivers_at_start_up_is_kept(rig, caplog):
    watch, graph, monitor, daemon, reopened = rig
    watch.port.rt = _Delivering(monitor)
    clock = _Clock()
    assert watch.check_start(clock, clock.sleep)
    assert watch.reopens == 0 and clock.now < output_watch.START_RESEND_S
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    watch.poll(1.0, daemon)  # the check's own message is not taken for a send into silence later
    assert watch._silent_since is None


def test_an_output_never_run_from_start_up_is_reopened_before_ready(rig, monkeypatch, caplog):
    watch, graph, monitor, daemon, reopened = rig  # the first client's sends never arrive (FakeRt)

    def open_running(kind, spec, backend):
        graph.listed.append(f"improv out-0{len(reopened) + 1}:improv out")
        reopened.append(graph.listed[-1])
        return OpenPort(_Delivering(monitor), "improv out", backend, virtual=True, own_name="improv out")

    monkeypatch.setattr(output_watch, "open_port", open_running)
    clock = _Clock()
    assert watch.check_start(clock, clock.sleep)
    assert watch.reopens == 1 and reopened == ["improv out-01:improv out"]
    assert graph.links[watch.own] == {WATCHER, "synth:in"}, "the connections were not restored"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "at start-up" in said[0], said


def test_a_start_up_check_that_never_passes_gives_up_and_says_so(rig, caplog):
    watch, graph, monitor, daemon, reopened = rig  # the whole graph stalled: nothing ever arrives
    clock = _Clock()
    assert not watch.check_start(clock, clock.sleep)
    assert watch.reopens == output_watch.START_TRIES - 1
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2 and "still nothing" in said[1], said
