"""Notices that what improv sends on a JACK output stops arriving, and recovers by reopening it.

A monitor input ("improv watch", rtmidi's queue mode: no Python in the JACK cycle) is connected
to improv's own output port. The main thread polls (`poll`, every `INTERVAL_S`): it drains the
monitor and compares with what the port took (`OpenPort.sent`). When improv sent at least
`MIN_MESSAGES` over `DEAD_AFTER_S` and nothing at all arrived, the output is dead (a stalled
client: every send succeeds, nothing leaves). Only "nothing at all" counts: a non-realtime jackd
under load drops single messages. Then, said once in the log and on the view: the engine
releases what sounds, the output client is reopened (the input's callback paused meanwhile, see
`MidiInput.paused`), the new one swapped into the `OpenPort`, its saved connections and the
monitor's restored, and the old client closed on a helper thread with a time limit (a stuck
client may never close). A reopen that does not help backs off (doubling up to `MAX_BACKOFF_S`)
and is logged once. The connections are read every poll: a set the user changed is adopted, it
is not a dead output.

At start-up (`check_start`, before improv says it is ready) one All Notes Off goes through the
output to the monitor: an output client that JACK never runs from its first cycle (issue 13's
silent sessions, docs/LIVE.md) is reopened then, before the user's first answer is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mido

from improv.errors import MidiPortError
from improv.jack_graph import JackGraph
from improv.midi_out import ALL_NOTES_OFF
from improv.midi_port import OpenPort, close_client
from improv.ports import close_soon, open_monitor, open_port

MONITOR = "improv watch"
INTERVAL_S = 0.2  # the main loop comes by every 0.25 s
DEAD_AFTER_S = 1.0  # sending this long with nothing arriving: dead
MIN_MESSAGES = 3  # ... and at least this many sent meanwhile
BACKOFF_S = 2.0  # before the next reopen after one; doubled while reopening does not help
MAX_BACKOFF_S = 30.0
START_WAIT_S = 0.5  # the start-up check's message: a running client delivers it within a few periods
START_RESEND_S = 0.1
START_TRIES = 3  # the start-up check: the first output and at most two reopened ones


def open_graph(backend: str, log: Any) -> JackGraph | None:
    """The graph client the watch needs, or None (not JACK; libjack missing: logged)."""
    if backend != "jack":
        return None
    try:
        return JackGraph.open()
    except OSError as err:
        log.warning("the JACK output watch is off (%s): a stalled output would go unnoticed", err)
        return None


class OutputWatch:
    """See the module docstring. `attach` builds one; `poll(now_s, daemon)` from the main thread."""

    def __init__(self, graph: JackGraph, port: OpenPort, own: str, monitor: Any, log: Any) -> None:
        self.graph, self.port, self.own, self.monitor, self.log = graph, port, own, monitor, log
        self.monitor_port = f"{MONITOR}:{MONITOR}"
        self.saved = (graph.connections(own) or set()) - {self.monitor_port}  # the user's connections
        self.reopens = 0
        self.failing = False  # reopened, not heard since
        self._said_still = False
        self._sent_seen = port.sent
        self._last_s: float | None = None
        self._silent_since: float | None = None
        self._silent_messages = 0
        self._retry_at = 0.0
        self._backoff_s = BACKOFF_S

    @classmethod
    def attach(cls, graph: JackGraph, port: OpenPort, before: set[str], log: Any) -> OutputWatch | None:
        """Watch `port`, opened after `before` was listed; None (logged) when it cannot be told apart."""
        own = graph.new_port(port.own_name, before)
        if own is None:
            log.warning("the JACK output watch is off: cannot tell which %r port is improv's", port.own_name)
            return None
        try:
            monitor = open_monitor("jack", MONITOR)
        except MidiPortError as err:
            log.warning("the JACK output watch is off: %s", err)
            return None
        watch = cls(graph, port, own, monitor, log)
        monitor_port = graph.new_port(MONITOR, before)
        watch.monitor_port = monitor_port or watch.monitor_port
        graph.connect(own, watch.monitor_port)
        return watch

    def check_start(self, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> bool:
        """Before the engine runs: whether a message through the output reaches the monitor; the
        output is reopened (no input callback to pause yet) while it does not, START_TRIES in all."""
        for attempt in range(START_TRIES):
            if self._heard_within(clock, sleep):
                self._sent_seen = self.port.sent
                return True
            if attempt == 0:
                self.log.warning("MIDI output %r: nothing arrived from it at start-up (JACK is not running its "
                                 "client); reopening it", self.own)
            if attempt + 1 < START_TRIES:
                self._reopen()
        self.log.warning("MIDI output %r: still nothing after %d reopens at start-up; the output watch keeps "
                         "trying while improv plays", self.own, START_TRIES - 1)
        self._sent_seen = self.port.sent
        return False

    def _heard_within(self, clock: Callable[[], float], sleep: Callable[[float], None]) -> bool:
        """All Notes Off (nothing sounds yet) every START_RESEND_S, until the monitor hears
        anything or START_WAIT_S is over (a message sent before the monitor's connection took
        effect is lost, not late)."""
        probe = mido.Message("control_change", control=ALL_NOTES_OFF, value=0)
        now = clock()
        deadline, resend = now + START_WAIT_S, now
        while now < deadline:
            if now >= resend:
                self.port.send(probe)
                resend = now + START_RESEND_S
            if self._drain():
                return True
            sleep(0.005)
            now = clock()
        return False

    def poll(self, now_s: float, daemon: Any) -> str | None:
        """"dead" when the output was found dead (and reopened, or not), else None."""
        if self._last_s is not None and now_s - self._last_s < INTERVAL_S:
            return None
        last_s, self._last_s = now_s if self._last_s is None else self._last_s, now_s
        arrived = self._drain()
        sent, self._sent_seen = self.port.sent - self._sent_seen, self.port.sent
        self._follow_connections()
        if arrived:
            self._heard()
            return None
        if sent:
            if self._silent_since is None:
                self._silent_since, self._silent_messages = last_s, 0
            self._silent_messages += sent
        if (self._silent_since is not None and now_s - self._silent_since >= DEAD_AFTER_S
                and self._silent_messages >= MIN_MESSAGES and now_s >= self._retry_at):
            self._dead(now_s, daemon)
            return "dead"
        return None

    def close(self) -> None:
        close_client(self.monitor)
        self.graph.close()

    def _drain(self) -> int:
        count = 0
        while self.monitor.get_message() is not None:
            count += 1
        return count

    def _heard(self) -> None:
        if self.failing:
            self.log.warning("MIDI output %r is heard again", self.port.name)
        self.failing, self._silent_since, self._backoff_s, self._said_still = False, None, BACKOFF_S, False

    def _follow_connections(self) -> None:
        now = self.graph.connections(self.own)
        if now is None:
            return  # our port is gone (being reopened, or the server is): keep what we know
        if self.monitor_port not in now:
            self.graph.connect(self.own, self.monitor_port)
            self._silent_since = None  # nothing could arrive meanwhile: start counting again
        users = now - {self.monitor_port}
        if users != self.saved:
            self.log.info("MIDI output %r now connects to %s", self.own, sorted(users) or "nothing")
            self.saved = users

    def _dead(self, now_s: float, daemon: Any) -> None:
        if not self.failing:
            self.log.warning("MIDI output %r: nothing of the %d messages improv sent in %.1f s arrived; "
                             "releasing its notes, reopening it and restoring its %d connection(s)",
                             self.own, self._silent_messages, now_s - self._silent_since, len(self.saved))
            daemon.last_error = f"MIDI output {self.port.name!r} went silent; reopened it"
        elif not self._said_still:
            self._said_still = True
            self.log.warning("MIDI output %r is still silent after reopening it; retrying, at most "
                             "every %g s", self.own, MAX_BACKOFF_S)
        daemon.port_changed("output lost")
        with daemon.midi_in.paused():
            if self._reopen():
                daemon.port_changed("output back")
        self._retry_at = now_s + self._backoff_s
        self._backoff_s = min(MAX_BACKOFF_S, self._backoff_s * 2) if self.failing else self._backoff_s
        self.failing, self._silent_since = True, None

    def _reopen(self) -> bool:
        before = set(self.graph.ports())
        try:
            fresh = open_port("out", None if self.port.virtual else self.port.name, self.port.backend)
        except MidiPortError as err:
            self.log.debug("reopening the output failed: %s", err)
            return False
        own = self.graph.new_port(self.port.own_name, before) or self.own
        old = self.port.swap(fresh.rt)
        self.reopens += 1
        close_soon(old)  # on a helper thread, waiting at most ports.CLOSE_TIMEOUT_S
        self.own = own
        for destination in sorted(self.saved | {self.monitor_port}):
            if not self.graph.connect(own, destination):
                self.log.warning("could not reconnect MIDI output %r to %r", own, destination)
        return True
