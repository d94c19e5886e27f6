"""A MIDI clock follower whose grid is a line along the lower envelope of the last 48 ticks
(docs/TIMING.md, "Following MIDI clock"). Kept for the profiles:
steady it is 3-4x closer to the sender's grid than improv's follower (the latest tick), on tempo
ramps far worse (the line bends away from the curve), so it does not ship.

`TickLine` fits the line: the line under every tick of the window that passes highest at the
window's mean position (the edge of the ticks' lower convex hull over that point, Andrew's
monotone chain, O(window) per fit in buffers allocated once). `LowerEnvelopeFollower` is improv's
`MidiClockFollower` with that grid: one tick off the line is held out, a run of `JUMP_RUN` on one
side restarts the window, a slowing tempo's newest ticks are fitted alone.
"""

from __future__ import annotations

from improv.clock import GAP_RATIO, PPQN, MidiClockFollower

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


class TickLine:
    """A window of (song position, arrival time) ticks and the line along their lower envelope:
    tick k is due at `at(k)` = origin_s + (k - origin_k) * period_s."""

    def __init__(self, capacity: int) -> None:
        self._k = [0] * capacity  # song positions (ticks), increasing
        self._t = [0.0] * capacity  # arrival times (s)
        self._hull = [0] * capacity  # window offsets of the lower hull's vertices
        self._start = 0  # ring offset of the oldest tick
        self.count = 0
        self.origin_k, self.origin_s, self.period_s = 0, 0.0, 0.0
        self.spread_s = 0.0  # the latest tick above the line in the window (how late ticks come)

    def at(self, k: float) -> float:
        """When tick k is due on the line (s)."""
        return self.origin_s + (k - self.origin_k) * self.period_s

    def lowest_of_last(self, n: int) -> float:
        """The earliest of the newest `n` ticks relative to the line (s; 0 when one is on it)."""
        cap, low = len(self._k), 1e300
        for j in range(self.count - min(n, self.count), self.count):
            i = (self._start + j) % cap
            low = min(low, self._t[i] - self.at(self._k[i]))
        return low

    def clear(self) -> None:
        self._start = self.count = 0

    def keep_last(self, n: int) -> None:
        """Forget all but the newest `n` ticks (a tempo change: the older ones lie on another line)."""
        drop = max(0, self.count - n)
        self._start = (self._start + drop) % len(self._k)
        self.count -= drop

    def add(self, k: int, t_s: float) -> None:
        """Tick k arrived at t_s (k above every tick in the window); the oldest goes when full."""
        cap = len(self._k)
        if self.count == cap:
            self._start = (self._start + 1) % cap
            self.count -= 1
        i = (self._start + self.count) % cap
        self._k[i], self._t[i] = k, t_s
        self.count += 1

    def fit(self, prior_period_s: float) -> None:
        """Fit the line to the window. Under 3 ticks the slope is `prior_period_s` and the line
        passes through the earliest tick relative to it."""
        n = self.count
        if n == 0:
            return
        cap, start = len(self._k), self._start
        last = (start + n - 1) % cap
        self.origin_k, t0 = self._k[last], self._t[last]
        period = self._hull_slope(n, cap, start, t0) if n >= 3 else prior_period_s
        if not period > 0.0:
            period = prior_period_s
        ks, ts, k0 = self._k, self._t, self.origin_k
        low, high = 0.0, -1e300  # lowest and highest arrival relative to the slope, from t0
        for j in range(n):
            i = (start + j) % cap
            y = ts[i] - t0 - (ks[i] - k0) * period
            low, high = min(low, y), max(high, y)
        self.origin_s, self.period_s, self.spread_s = t0 + low, period, high - low

    def _hull_slope(self, n: int, cap: int, start: int, t0: float) -> float:
        """The slope of the lower hull's edge over the window's mean position (s per tick)."""
        ks, ts, hull, k0 = self._k, self._t, self._hull, self.origin_k
        top, mean_x = 0, 0.0
        for j in range(n):  # Andrew's monotone chain, lower half, x = k - k0 and y = t - t0
            i = (start + j) % cap
            x, y = ks[i] - k0, ts[i] - t0
            mean_x += x
            while top >= 2:
                a, b = hull[top - 2], hull[top - 1]
                ax, ay, bx, by = ks[a] - k0, ts[a] - t0, ks[b] - k0, ts[b] - t0
                if (bx - ax) * (y - ay) - (by - ay) * (x - ax) > 0.0:  # a left turn: b stays
                    break
                top -= 1
            hull[top] = i
            top += 1
        mean_x /= n
        for h in range(top - 1):
            a, b = hull[h], hull[h + 1]
            if ks[b] - k0 >= mean_x:
                return (ts[b] - ts[a]) / (ks[b] - ks[a])
        return 0.0


class LowerEnvelopeFollower(MidiClockFollower):
    """improv's MidiClockFollower with its grid along the lower envelope of the last
    `WINDOW_TICKS` ticks (`TickLine`); transport, lost ticks and lost clock as improv's."""

    def __init__(self, bpm: float = 120.0, t0_s: float = 0.0) -> None:
        super().__init__(bpm, t0_s)
        self._line = TickLine(WINDOW_TICKS)
        self._last_s: float | None = None  # arrival of the latest tick while running
        self._run = 0  # ticks in a row off the line: + late, - early
        self._held_k, self._held_t = [0] * (JUMP_RUN - 1), [0.0] * (JUMP_RUN - 1)  # those ticks
        self._spread_s = 0.0  # how late ticks come (decaying maximum of the window's spread)

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
