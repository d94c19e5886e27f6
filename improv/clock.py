"""Time. One injected clock in seconds, and beat clocks that map seconds <-> beats.

* `MonotonicClock` is `time.perf_counter` (never `time.time`: it jumps with NTP).
* `ManualClock` is for tests and the demo: time moves only when told to.
* `BeatClock` is the internal tempo: a straight line (origin, bpm) that `set_bpm` re-anchors,
  so a tempo change never makes the beat position jump.
* `MidiClockFollower` follows an external 24-ppqn MIDI clock (a DAW or drum machine), its grid a
  line along the lower envelope of the ticks (`improv.tick_fit`), and offers
  the same `beats_at / time_at / bpm / running` interface, so the improviser works with either;
  it makes up clock bytes that never arrived and notices a clock that went away.
* `ClockSender` gives the absolute deadlines for sending 24-ppqn clock as master
  (``start + n * period``: no accumulated drift).
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from improv.tick_fit import TickLine

PPQN = 24  # MIDI clock ticks per quarter note (beat)
GAP_RATIO = 1.5  # an interval this many expected tick periods long has lost ticks in it
LOST_AFTER_S = 0.5  # no tick for this long (or 2 beats, if shorter): the clock is lost
WINDOW_TICKS = 48  # ticks the grid is fitted to: two beats
JUMP_RUN = 3  # ticks in a row this far off the grid, on one side: the tempo changed
JUMP_MIN_S = 0.001  # later than the grid by more than this ...
JUMP_SPREADS = 2.0  # ... and by more than this many times the lateness seen
EARLY_MIN_S = 0.0005  # earlier than the grid (never just jitter) by more than this ...
EARLY_SPREADS = 0.5  # ... and by more than this many times the lateness seen
JUMP_MIN_TICKS = 12  # a window this full before a run counts
DRIFT_TICKS = 12  # the newest ticks all later than the grid ...
DRIFT_SPREADS = 0.5  # ... by this many times the lateness seen: the tempo slows; fit those alone
SPREAD_DECAY = 0.99  # per tick: the lateness seen halves in about 3 beats without a late tick
SPREAD_GROWTH_S = 0.00025  # and grows by at most this per tick, so a tempo's drift cannot feed it


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

    The grid is a line along the lower envelope of the last `WINDOW_TICKS` ticks' arrivals
    (`improv.tick_fit.TickLine`): ticks come late by up to a MIDI-system period, never early, so
    the earliest mark the sender's grid. A run of `JUMP_RUN` ticks off that line, all on one side,
    by more than the lateness seen (a tempo change) restarts the window from the run. Ticks that
    never arrived are counted from the tick after a long interval. After Start the first tick is
    beat 0; after Continue, the song position. Stopped, or lost (no tick for `lost_after_s`, see
    `check`), it free-runs at the last tempo with `running` False and resumes from where it was
    when ticks come again. Why and how well: docs/TIMING.md.
    """

    def __init__(self, bpm: float = 120.0, t0_s: float = 0.0) -> None:
        self._bpm = _check_bpm(bpm)
        self._line = TickLine(WINDOW_TICKS)
        self._last_s: float | None = None  # arrival of the latest tick while running
        self._anchor_s = float(t0_s)  # where the line puts the latest tick (or the free-run origin)
        self._anchor_beats = 0.0
        self._next_tick = 0  # song position of the next tick, in ticks
        self._running = False
        self._armed = False  # Start/Continue seen, waiting for the first tick
        self._lost = False  # ticks stopped while running (no Stop): the next tick resumes
        self._gap: tuple[float, float] | None = None  # (tick before, tick after) a long interval
        self._run = 0  # ticks in a row off the line: + late, - early
        self._held_k, self._held_t = [0] * (JUMP_RUN - 1), [0.0] * (JUMP_RUN - 1)  # those ticks
        self._spread_s = 0.0  # how late ticks come (decaying maximum of the window's spread)

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
        if not self._running or self._last_s is None:
            return None
        return self._last_s + self.lost_after_s

    def check(self, now_s: float) -> bool:
        """Mark the clock lost if no tick came for `lost_after_s`; True when this call lost it."""
        deadline = self.lost_deadline_s()
        if deadline is None or now_s < deadline:
            return False
        self._running, self._lost = False, True  # free-runs on from the last tick
        self._forget()
        return True

    def on_tick(self, t_s: float) -> None:
        if self._running and not self.check(t_s):  # (a gap this long: lost, and resumed now)
            if self._gap is not None:
                self._close_gap(t_s)
            elif self._run <= 0 and self._last_s is not None and t_s - self._last_s >= GAP_RATIO * self.period_s:
                self._gap = (self._last_s, t_s)  # late, or after lost ticks (not in a run of late
                # ticks: that is a slower tempo): the next tick says
                self._last_s = t_s
                self._next_tick += 1
                return
        elif self._armed or self._lost:
            self._running, self._armed, self._lost = True, False, False
        else:
            return  # clock without Start: ignore until the transport starts
        self._follow(self._next_tick, t_s)
        self._last_s = t_s
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
        self._forget()  # a gap in the clock is not a tempo
        if t_s is not None:  # until the first tick: expect it one tick from now
            self._anchor_s = t_s + 60.0 / (self._bpm * PPQN)
            self._anchor_beats = position_ticks / PPQN

    def _forget(self) -> None:
        self._line.clear()
        self._last_s, self._gap, self._run = None, None, 0

    def _follow(self, k: int, t_s: float) -> None:
        """Tick k arrived at t_s. One off the grid is held out of the fit; `JUMP_RUN` in a row on
        one side are a new tempo: the window restarts from the tick before them."""
        line = self._line
        if line.count >= JUMP_MIN_TICKS:
            off = t_s - line.at(k)
            side = 1 if off > max(JUMP_MIN_S, JUMP_SPREADS * self._spread_s) else 0
            side = -1 if off < -max(EARLY_MIN_S, EARLY_SPREADS * self._spread_s) else side
            if side:
                self._run = self._run + side if self._run * side > 0 else side
                if abs(self._run) < JUMP_RUN:
                    self._held_k[abs(self._run) - 1], self._held_t[abs(self._run) - 1] = k, t_s
                    self._anchor_s, self._anchor_beats = line.at(k), k / PPQN
                    return
                line.keep_last(1)
                for i in range(JUMP_RUN - 1):
                    line.add(self._held_k[i], self._held_t[i])
            self._run = 0
        line.add(k, t_s)
        line.fit(self.period_s)
        if line.count > DRIFT_TICKS and line.lowest_of_last(DRIFT_TICKS) > DRIFT_SPREADS * self._spread_s:
            line.keep_last(DRIFT_TICKS)
            line.fit(self.period_s)
        self._spread_s = max(self._spread_s * SPREAD_DECAY, min(line.spread_s, self._spread_s + SPREAD_GROWTH_S))
        self._bpm = min(999.0, max(1.0, 60.0 / (line.period_s * PPQN)))
        self._anchor_s, self._anchor_beats = line.at(k), k / PPQN

    def _close_gap(self, t_s: float) -> None:
        """After a long interval (`GAP_RATIO` periods or more), at the tick after it: count the
        ticks lost as the number that best fits both arrivals, or, if this interval is long too,
        take it as a slower tempo; the tick after the gap joins the window at its position."""
        (before, after), self._gap, period = self._gap, None, self.period_s
        if t_s - after >= GAP_RATIO * period:  # long again: a slower tempo, not lost bytes
            self._bpm = min(999.0, max(1.0, 60.0 / ((t_s - after) * PPQN)))
            self._line.clear()
            self._run = 0
        else:  # `after` is tick k + 1 + m and this one k + 2 + m, `before` tick k: the best m for both
            m = round(((after - before) / period - 1 + (t_s - before) / period - 2) / 2)
            self._next_tick += max(0, min(m, int(self.lost_after_s / period)))
        self._follow(self._next_tick - 1, after)


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
