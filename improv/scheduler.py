"""Planned events -> the output port at their due time. The only thing that touches the port.

A heap of `Planned` ordered by (due time, order added), so a note's on precedes its off even at
the same instant; one exception: a note-on yields to a note-off due within a microsecond that
ends a note sounding now, so a voice ending as another starts never makes one too many sound.
The thread waits on a `threading.Condition` until `spin_s` before the next due time (`add` wakes
it only for an earlier one: a woken thread takes the GIL) and spins only that last fraction;
deadlines are absolute seconds on the injected clock, so nothing drifts. A plan already due when added (a duet reaction, a thru echo)
is sent by `add` itself, on the adding thread. Every send happens under the lock, so a cancel
never races a note-on into a stuck note (why these choices, measured: docs/LIVE.md).

Every send is recorded as a `SendRecord` (planned, actual, message, source), bounded, and handed
to `on_record` if set (`--record`). Late policy: note-offs and clock always go out however late;
a note-on more than `max_late_s` late is dropped and counted. Per source ("response", "duet",
"thru", "metronome", "clock") the scheduler knows which notes it started, so `cancel(source)`
drops what is unsent and releases what sounds; what `panic` sends carries "panic".

Latency compensation (`lead_s`, time.latency_ms): a plan is sent `lead_s` before its due time
(negative: after), but never before the moment it was added: a plan already due when added (a
reaction, a thru echo) keeps its time, since nothing can be sent before the note that caused it.
The send time is monotone in the due time and the time added, so a note-off never goes before
its note-on; due times (cancel cutoffs, holds) stay on the grid, send records carry the send time.

A sample-accurate port (improv's JACK client: `MidiOut.lead_s()` > 0) gets each plan that much
before its send time, with the send time, and writes it at that frame (docs/TIMING.md); what it
holds can no longer be dropped, so a cancel releases such a note with a note-off that the port
keeps after its note-on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import mido

from improv.clock import Clock
from improv.midi_out import MidiOut

log = logging.getLogger(__name__)

_REALTIME = ("clock", "start", "stop", "continue")
ALL = "*"  # the source of a cancel that means every source


@dataclass(frozen=True, slots=True)
class Planned:
    """One thing for the scheduler to do at `due_s`.

    kind: "on" | "off" (notes); "clock" | "start" | "stop" | "continue" (real-time); "cancel":
    acts when added: drop the unsent plans of `source` (or every source for "*") due at or after
    `due_s` and release that source's notes that started at or after `due_s` (-inf: all of them).
    """

    due_s: float
    kind: str
    pitch: int = 0
    velocity: int = 0
    channel: int = 0
    source: str = "response"  # "response" | "duet" | "thru" | "metronome" | "clock"


class SendRecord(NamedTuple):
    planned_s: float
    actual_s: float
    message: mido.Message
    source: str  # "response" | "duet" | "thru" | "metronome" | "clock" | "panic"


@dataclass(frozen=True, slots=True)
class TimingStats:
    count: int
    late: int  # sent more than `late_ms` after due
    dropped: int  # note-ons dropped as too late
    p50_ms: float
    p99_ms: float
    max_ms: float


def timing_stats(records: list[SendRecord], dropped: int, late_ms: float) -> TimingStats:
    """Lateness of the sends `records` (ms, none counted early) and how many came `late_ms` late."""
    lateness = sorted(max(0.0, (r.actual_s - r.planned_s) * 1000) for r in records)
    if not lateness:
        return TimingStats(0, 0, dropped, 0.0, 0.0, 0.0)
    pick = lambda q: lateness[min(len(lateness) - 1, int(q * len(lateness)))]  # noqa: E731
    late = sum(1 for x in lateness if x > late_ms)
    return TimingStats(len(lateness), late, dropped, pick(0.5), pick(0.99), lateness[-1])


SAME_INSTANT_S = 1e-6  # plans this close are simultaneous (float rounding of beats -> seconds)


class Scheduler:
    def __init__(self, out: MidiOut, clock: Clock, spin_s: float = 0.0003, max_late_s: float = 0.1,
                 history: int = 4096, lead_s: float = 0.0) -> None:  # history: ~2 min of a busy duet
        self.out = out
        self.lead_s = lead_s  # plans go out this long before they are due (time.latency_ms)
        self.clock = clock
        self.spin_s = spin_s
        self.max_late_s = max_late_s
        self.records: deque[SendRecord] = deque(maxlen=history)
        self.on_record: Callable[[SendRecord], None] | None = None  # called under the lock, per send
        self.dropped = 0  # note-ons dropped as too late
        self.notes_sent = 0  # note-ons sent
        self._heap: list[tuple[float, int, Planned]] = []
        self._seq = itertools.count()
        self._holds: dict[str, list[tuple[float, int, int]]] = {}  # source -> [(on due_s, channel, pitch)]
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._running = False
        self._asleep_until = -math.inf  # the loop waits until then (-inf: it is not waiting)

    # ------------------------------------------------------------------ planning side

    def add(self, planned: Iterable[Planned]) -> None:
        """Queue plans; a ``cancel`` plan acts at once (see `cancel`: its due_s is the cutoff,
        source "*" means every source). While the thread runs, plans already due are sent here
        and now (see the module docstring)."""
        with self._cond:
            now = self.clock.now()
            for p in planned:
                if p.kind == "cancel":
                    self._cancel(None if p.source == "*" else p.source, now, p.due_s)
                else:
                    heapq.heappush(self._heap, (self.send_s(p.due_s, now), next(self._seq), p))
            lead = self.out.lead_s()
            if self._thread is not None and self._heap and self._heap[0][0] <= self.clock.now() + lead:
                self._send_due_guarded(lead)
            if self._heap and self._heap[0][0] - lead < self._asleep_until:
                self._cond.notify()  # only for an earlier wake-up: a thread woken for nothing takes the GIL

    def send_s(self, due_s: float, added_s: float) -> float:
        """When a plan due at `due_s`, added at `added_s`, goes out (see the module docstring)."""
        return max(due_s - self.lead_s, min(due_s, added_s))

    def cancel(self, source: str | None = None, now_s: float | None = None,
               after_s: float = -math.inf) -> list[mido.Message]:
        """Drop unsent plans (of `source`, or all) due at/after `after_s`, and release the notes
        of that source that started at/after `after_s` (by default: everything, at once).

        With a cutoff, notes that started before it keep their planned note-off, so every
        note-on still gets exactly one note-off."""
        with self._cond:
            now = self.clock.now() if now_s is None else now_s
            sent = self._cancel(source, now, after_s)
            self._cond.notify()
            return sent

    def panic(self, now_s: float | None = None) -> list[mido.Message]:
        """Drop every plan and silence everything: tracked notes, All Notes Off, sustain off."""
        with self._cond:
            now = self.clock.now() if now_s is None else now_s
            self._heap.clear()
            self._holds.clear()
            sent = self.out.panic()
            self._record(now, now, sent, "panic")
            self._cond.notify()
            return sent

    def next_due_s(self) -> float | None:
        """When the next plan goes to the port: its send time less the port's own lead."""
        with self._cond:
            return self._heap[0][0] - self.out.lead_s() if self._heap else None

    def pending(self, source: str | None = None) -> int:
        with self._cond:
            return sum(1 for *_, p in self._heap if source is None or p.source == source)

    def sent_elsewhere(self, planned: Iterable[Planned], at_s: float) -> None:
        """Plans another sender sent at `at_s` (the duet's reflex, `improv.reflex`): held,
        tracked and recorded as if sent here."""
        with self._cond:
            for p in planned:
                self._record(at_s, at_s, self._send_one(p, at_s, send=False), p.source)

    # ------------------------------------------------------------------ sending side

    def run_pending(self, now_s: float | None = None) -> list[mido.Message]:
        """Send everything due by `now_s`, the port's lead ahead (tests and the demo drive this by hand)."""
        with self._cond:
            return self._send_due(self.clock.now() if now_s is None else now_s, now_s is None, self.out.lead_s())

    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="improv-scheduler", daemon=True)
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The sending thread's id for the OS (--realtime), None while it does not run."""
        return None if self._thread is None else self._thread.native_id

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the thread (plans stay queued; call `panic` to silence)."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._running = False
            self._cond.notify()
        thread.join(timeout_s)
        self._thread = None

    def stats(self, late_ms: float = 1.0) -> TimingStats:
        return timing_stats(list(self.records), self.dropped, late_ms)

    def _loop(self) -> None:
        with self._cond:
            while self._running:
                lead = self.out.lead_s()
                due = self._heap[0][0] - lead if self._heap else None
                wait = None if due is None else due - self.clock.now()
                if wait is None or wait > self.spin_s:
                    self._asleep_until = math.inf if due is None else due - self.spin_s
                    self._cond.wait(None if wait is None else wait - self.spin_s)
                    self._asleep_until = -math.inf
                else:
                    while self.clock.now() < due:  # the last fraction of a millisecond
                        pass
                    self._send_due_guarded(lead)

    def _send_due_guarded(self, lead: float) -> None:
        try:
            self._send_due(self.clock.now(), True, lead)
        except Exception:  # noqa: BLE001 - keep sending; a bug here must not leave notes on
            log.exception("scheduler send failed")

    def _send_due(self, now: float, stamp: bool, lead: float) -> list[mido.Message]:
        """Send what is due by `now`, the port's lead ahead; a sample-accurate port's record
        says when it goes out (its send time, or now if late)."""
        sent: list[mido.Message] = []
        while self._heap and self._heap[0][0] <= now + lead:
            send_s, p = self._pop_next()
            actual = self.clock.now() if stamp else now
            if p.kind == "on" and actual - send_s > self.max_late_s:
                self.dropped += 1
                log.warning("dropped a %s note-on %.0f ms late", p.source, (actual - send_s) * 1000)
                continue
            msgs = self._send_one(p, send_s)
            self._record(send_s, max(actual, send_s) if lead else actual, msgs, p.source)
            sent += msgs
        return sent

    def _pop_next(self) -> tuple[float, Planned]:
        """The next plan to send, with its send time. A note-on yields to a note-off due at the same instant (within
        `SAME_INSTANT_S`: beats turned into seconds round apart) that ends a note sounding now,
        so a voice that ends as another starts never makes one note too many sound. (An off
        that would end nothing yet keeps its place: it may be this very note-on's.)"""
        entry = heapq.heappop(self._heap)
        if entry[2].kind == "on":
            limit = entry[0] + SAME_INSTANT_S
            off = min((e for e in self._heap if e[0] <= limit and e[2].kind == "off" and self._holding(e[2])),
                      default=None)
            if off is not None:
                self._heap.remove(off)
                self._heap.append(entry)
                heapq.heapify(self._heap)
                entry = off
        return entry[0], entry[2]

    def _record(self, planned_s: float, actual_s: float, msgs: list[mido.Message], source: str) -> None:
        for m in msgs:
            rec = SendRecord(planned_s, actual_s, m, source)
            self.records.append(rec)
            if self.on_record is not None:
                try:
                    self.on_record(rec)
                except Exception:  # noqa: BLE001 - a tap must never stop the sending
                    log.exception("send record hook failed; no longer calling it")
                    self.on_record = None

    def _send_one(self, p: Planned, send_s: float, send: bool = True) -> list[mido.Message]:
        if p.kind == "on":
            self._holds.setdefault(p.source, []).append((p.due_s, p.channel, p.pitch))
            self.notes_sent += 1
            return self.out.note_on(p.pitch, p.velocity, p.channel, at_s=send_s, send=send)
        if p.kind == "off":
            if not self._unhold(p.source, p.channel, p.pitch):
                return []  # this source does not hold it (its note-on was dropped or cancelled)
            return self.out.note_off(p.pitch, p.channel, at_s=send_s, send=send)
        if p.kind in _REALTIME:
            return self.out.realtime(p.kind, at_s=send_s)
        log.warning("unknown plan kind %r ignored", p.kind)
        return []

    def _holding(self, p: Planned) -> bool:
        return any(ch == p.channel and pitch == p.pitch for _, ch, pitch in self._holds.get(p.source, []))

    def _unhold(self, source: str, channel: int, pitch: int) -> bool:
        holds = self._holds.get(source, [])
        for i, (_, ch, pitch_) in enumerate(holds):
            if ch == channel and pitch_ == pitch:
                del holds[i]
                return True
        return False

    def _cancel(self, source: str | None, now: float, after_s: float) -> list[mido.Message]:
        sent: list[mido.Message] = []
        for src in [source] if source is not None else list(self._holds):
            holds = self._holds.get(src, [])
            for on_due, ch, pitch in [h for h in holds if h[0] >= after_s]:
                holds.remove((on_due, ch, pitch))
                msgs = self.out.note_off(pitch, ch)
                self._record(now, now, msgs, src)
                sent += msgs
        hit = lambda e: (source is None or e[2].source == source) and e[2].due_s >= after_s  # noqa: E731
        dropped = sorted(e for e in self._heap if hit(e))
        if dropped:
            self._heap = [e for e in self._heap if not hit(e)] + self._offs_still_needed(dropped, after_s)
            heapq.heapify(self._heap)
        return sent

    def _offs_still_needed(self, dropped: list, after_s: float) -> list:
        """Of the dropped plans, the note-offs that end notes started before the cutoff (sent, or
        still queued before it): those notes keep their planned end, so every on keeps its off."""
        if after_s == -math.inf:
            return []
        open_: Counter[tuple[str, int, int]] = Counter()
        for src, holds in self._holds.items():
            open_.update((src, ch, pitch) for _, ch, pitch in holds)
        for *_, p in self._heap:
            if p.due_s < after_s and p.kind in ("on", "off"):
                open_[(p.source, p.channel, p.pitch)] += 1 if p.kind == "on" else -1
        kept = []
        for entry in dropped:  # sorted by due time: the earliest offs pair first
            p = entry[2]
            key = (p.source, p.channel, p.pitch)
            if p.kind == "off" and open_[key] > 0:
                open_[key] -= 1
                kept.append(entry)
        return kept

    @property
    def holds(self) -> dict[str, Counter[tuple[int, int]]]:
        """Per source, the (channel, pitch) it holds (a snapshot, for tests and the view)."""
        with self._cond:
            return {src: Counter((ch, p) for _, ch, p in h) for src, h in self._holds.items() if h}
