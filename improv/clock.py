"""Time. One injected clock in seconds, and beat clocks that map seconds <-> beats.

* `MonotonicClock` is `time.perf_counter` (never `time.time`: it jumps with NTP).
* `ManualClock` is for tests and the demo: time moves only when told to.
* `BeatClock` is the internal tempo: a straight line (origin, bpm) that `set_bpm` re-anchors,
  so a tempo change never makes the beat position jump.
* `MidiClockFollower` follows an external 24-ppqn MIDI clock (a DAW or drum machine) and offers
  the same `beats_at / time_at / bpm / running` interface, so the improviser works with either;
  it makes up clock bytes that never arrived and notices a clock that went away.
* `ClockSender` gives the absolute deadlines for sending 24-ppqn clock as master
  (``start + n * period``: no accumulated drift).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Protocol

from improv.tick_anchor import TickAnchor

PPQN = 24  # MIDI clock ticks per quarter note (beat)
GAP_RATIO = 1.5  # an interval this many expected tick periods long has lost ticks in it
LOST_AFTER_S = 0.5  # no tick for this long (or 2 beats, if shorter): the clock is lost
WINDOW_TICKS = 24  # tick intervals the tempo estimate looks at: one beat


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic timeline (arbitrary origin)."""
        ...


class BeatTimeline(Protocol):
    """What the improviser needs from whichever clock is in charge."""

    @property
    def bpm(self) -> float: ...

    @property
    def running(self) -> bool: ...

    def beats_at(self, t_s: float) -> float: ...

    def time_at(self, beats: float) -> float: ...


class MonotonicClock:
    """The real clock: `time.perf_counter` seconds."""

    def now(self) -> float:
        return time.perf_counter()


class ManualClock:
    """A clock that only moves when told to; tests and the demo run instantly and exactly."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError("a clock cannot go back")
        self._t += dt
        return self._t

    def set(self, t: float) -> float:
        if t < self._t:
            raise ValueError("a clock cannot go back")
        self._t = float(t)
        return self._t


def _check_bpm(bpm: float) -> float:
    if not (math.isfinite(bpm) and 1.0 <= bpm <= 999.0):
        raise ValueError(f"tempo {bpm} bpm is out of range; use 1..999")
    return float(bpm)


class BeatClock:
    """Internal tempo: beats = origin_beats + (t - origin_s) * bpm / 60, re-anchored on changes."""

    def __init__(self, bpm: float = 120.0, origin_s: float = 0.0) -> None:
        self._bpm = _check_bpm(bpm)
        self._origin_s = float(origin_s)
        self._origin_beats = 0.0

    @property
    def bpm(self) -> float:
        return self._bpm

    @property
    def running(self) -> bool:
        return True

    def beats_at(self, t_s: float) -> float:
        return self._origin_beats + (t_s - self._origin_s) * self._bpm / 60.0

    def time_at(self, beats: float) -> float:
        return self._origin_s + (beats - self._origin_beats) * 60.0 / self._bpm

    def set_bpm(self, bpm: float, at_s: float) -> None:
        """Change tempo from `at_s` on; the beat position at `at_s` is unchanged."""
        self._origin_beats = self.beats_at(at_s)
        self._origin_s = float(at_s)
        self._bpm = _check_bpm(bpm)

    def anchor_at(self, t_s: float, beats: float) -> None:
        """Move the grid: `t_s` is now beat `beats` (same tempo). Every position shifts by the
        same amount, so whoever keeps beats must shift them too (the improviser does)."""
        self._origin_s, self._origin_beats = float(t_s), float(beats)


def next_grid_beats(beats: float, grid_beats: float) -> float:
    """The first multiple of `grid_beats` at or after `beats` (beat 0 is on every grid)."""
    return math.ceil(beats / grid_beats - 1e-9) * grid_beats  # a rounding error under a point is on it


class MidiClockFollower:
    """Follows external MIDI clock: 24 ticks per beat, Start / Stop / Continue / Song Position.

    Tempo: the median, over the last `WINDOW_TICKS` intervals, of the slopes across half the
    window, so jitter is divided by the span and a late tick is outvoted. Phase: anchored at the
    earliest of the recent ticks while the tempo holds, at the latest while it moves
    (`improv.tick_anchor`). Ticks that never arrived are counted from the tick after a long interval. After
    Start the first tick is beat 0; after Continue, the song position. Stopped, or lost (no tick
    for `lost_after_s`, see `check`), it free-runs at the last tempo with `running` False and
    resumes from where it was when ticks come again. Why and how well: docs/TIMING.md.
    """

    def __init__(self, bpm: float = 120.0, t0_s: float = 0.0) -> None:
        self._bpm = _check_bpm(bpm)
        self._ticks: deque[float] = deque(maxlen=WINDOW_TICKS + 1)
        self._anchor_s = float(t0_s)  # time of the latest tick (or of the free-run origin)
        self._anchor_beats = 0.0
        self._next_tick = 0  # song position of the next tick, in ticks
        self._running = False
        self._armed = False  # Start/Continue seen, waiting for the first tick
        self._lost = False  # ticks stopped while running (no Stop): the next tick resumes
        self._gap: tuple[float, float] | None = None  # (tick before, tick after) a long interval
        self._phase = TickAnchor()

    @property
    def bpm(self) -> float:
        return self._bpm

    @property
    def running(self) -> bool:
        return self._running

    @property
    def position_ticks(self) -> int:
        """Song position of the next tick (24 per beat)."""
        return self._next_tick

    def beats_at(self, t_s: float) -> float:
        return self._anchor_beats + (t_s - self._anchor_s) * self._bpm / 60.0

    def time_at(self, beats: float) -> float:
        return self._anchor_s + (beats - self._anchor_beats) * 60.0 / self._bpm

    @property
    def period_s(self) -> float:
        """Seconds per tick at the current estimate."""
        return 60.0 / (self._bpm * PPQN)

    @property
    def lost_after_s(self) -> float:
        return max(3 * self.period_s, min(LOST_AFTER_S, 2 * PPQN * self.period_s))

    def lost_deadline_s(self) -> float | None:
        """When the clock counts as lost if no tick comes before (None: not running)."""
        if not self._running or not self._ticks:
            return None
        return self._ticks[-1] + self.lost_after_s

    def check(self, now_s: float) -> bool:
        """Mark the clock lost if no tick came for `lost_after_s`; True when this call lost it."""
        deadline = self.lost_deadline_s()
        if deadline is None or now_s < deadline:
            return False
        self._running, self._lost = False, True  # free-runs on from the last tick
        self._ticks.clear()
        self._gap = None
        self._phase.restart()
        return True

    def on_tick(self, t_s: float) -> None:
        predicted_s = self.time_at(self._next_tick / PPQN)
        if self._running and not self.check(t_s):  # (a gap this long: lost, and resumed now)
            gap_before = self._gap is not None
            self._count_lost_ticks(t_s)
            if gap_before or self._gap is not None:  # lost bytes, or a slower tempo: no jitter to read
                self._phase.restart()
        elif self._armed or self._lost:
            self._running, self._armed, self._lost = True, False, False
        else:
            return  # clock without Start: ignore until the transport starts
        self._ticks.append(t_s)
        if self._gap is None:  # (a gap not yet explained is no tempo)
            self._estimate_bpm()
        k = self._next_tick
        self._anchor_s = self._phase.anchor(k, t_s, predicted_s, self.period_s, self._bpm)
        self._anchor_beats = k / PPQN
        self._next_tick += 1

    def on_start(self, t_s: float | None = None) -> None:
        self._arm(0, t_s)

    def on_continue(self, t_s: float | None = None) -> None:
        self._arm(self._next_tick, t_s)

    def on_stop(self, t_s: float | None = None) -> None:
        if t_s is not None and self._running:
            self._anchor_beats, self._anchor_s = min(self.beats_at(t_s), self._next_tick / PPQN), t_s
        self._running = self._armed = self._lost = False

    def on_song_position(self, sixteenths: int, t_s: float | None = None) -> None:
        """Where the next Continue resumes (the MIDI spec only allows this while stopped)."""
        self._next_tick = max(0, int(sixteenths)) * (PPQN // 4)
        if t_s is not None and not self._running:
            self._anchor_s, self._anchor_beats = t_s, self._next_tick / PPQN

    def _arm(self, position_ticks: int, t_s: float | None) -> None:
        self._next_tick = position_ticks
        self._running, self._armed, self._lost = False, True, False
        self._ticks.clear()  # a gap in the clock is not a tempo
        self._gap = None
        self._phase.restart()
        if t_s is not None:  # until the first tick: expect it one tick from now
            self._anchor_s = t_s + 60.0 / (self._bpm * PPQN)
            self._anchor_beats = position_ticks / PPQN

    def _count_lost_ticks(self, t_s: float) -> None:
        """Note a long interval (`GAP_RATIO` periods or more); at the tick after it, count the ticks
        lost as the number that best fits both arrivals, or, if that interval is long too, take it
        as a slower tempo."""
        if not self._ticks:
            return
        period, gap, self._gap = self.period_s, self._gap, None
        if gap is None:
            if t_s - self._ticks[-1] >= GAP_RATIO * period:
                self._gap = (self._ticks[-1], t_s)
            return
        before, after = gap
        if t_s - after >= GAP_RATIO * period:  # long again: a slower tempo, not lost bytes
            self._bpm = min(999.0, max(1.0, 60.0 / ((t_s - after) * PPQN)))
            self._ticks.clear()
            self._ticks.append(after)
            return
        # `after` is tick k + 1 + m and this one k + 2 + m, `before` tick k: the best m for both
        m = round(((after - before) / period - 1 + (t_s - before) / period - 2) / 2)
        m = max(0, min(m, int(self.lost_after_s / period)))
        if m:
            step = (after - before) / (m + 1)
            ticks = list(self._ticks)
            i = ticks.index(after)
            ticks[i:i] = [before + k * step for k in range(1, m + 1)]
            self._ticks.clear()
            self._ticks.extend(ticks)
            self._next_tick += m

    def _estimate_bpm(self) -> None:
        n = len(self._ticks)
        if n < 3:
            return
        ticks, half = self._ticks, (n - 1) // 2
        slopes = sorted((ticks[i + half] - ticks[i]) / half for i in range(n - half))
        period = slopes[len(slopes) // 2]
        if period > 0:
            self._bpm = min(999.0, max(1.0, 60.0 / (period * PPQN)))


class ClockSender:
    """Absolute deadlines for sending 24-ppqn MIDI clock as master: tick n at start + n * period.

    A tempo change re-anchors at the next tick, so the period changes without a phase jump.
    """

    def __init__(self, bpm: float, start_s: float) -> None:
        self._bpm = _check_bpm(bpm)
        self._start_s = float(start_s)
        self._start_n = 0
        self.next_n = 0  # index of the next tick to send

    @property
    def period_s(self) -> float:
        return 60.0 / (self._bpm * PPQN)

    def deadline(self, n: int) -> float:
        return self._start_s + (n - self._start_n) * self.period_s

    def set_bpm(self, bpm: float) -> None:
        self._start_s, self._start_n = self.deadline(self.next_n), self.next_n
        self._bpm = _check_bpm(bpm)

    def take_until(self, t_s: float) -> list[float]:
        """Deadlines of the ticks not yet taken that are due at or before `t_s`."""
        out = []
        while (d := self.deadline(self.next_n)) <= t_s:
            out.append(d)
            self.next_n += 1
        return out
