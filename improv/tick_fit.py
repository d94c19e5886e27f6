"""The grid under a MIDI clock's ticks: a line fitted along their lower envelope.

Ticks reach improv late by anything from nothing to a MIDI-system period (a JACK cycle, a USB
frame), never early, so the earliest arrivals relative to a line mark the sender's grid. The fit
is the line under every tick of the window that passes highest at the window's mean position: the
edge of the ticks' lower convex hull over that point, the line that leaves the least lateness in
all. It removes the lateness's mean as well as its scatter, and its error shrinks as 1/window where
a least-squares line's shrinks as 1/sqrt(window). O(window) per fit, in buffers allocated once;
it runs on the engine thread at every tick. Why and how well: docs/TIMING.md.
"""

from __future__ import annotations


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
