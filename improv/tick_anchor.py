"""Where the MIDI clock follower anchors its phase: the earliest of the recent ticks, while the tempo holds.

A clock tick reaches improv late by anything from nothing to a MIDI-server period, never early, so
the newest arrival alone puts the grid late by half a period on average and scatters it by the
rest. Projected forward to the newest tick's position with the current period, the earliest of the
last `ANCHOR_TICKS` arrivals is nearly on time. Two things may not pull it early:

* a projection more than B before the newest arrival is a tempo change, not jitter (B: the
  lateness spread seen, a decaying maximum of |interval - period|, 0.5..6 ms);
* while the tempo estimate moves (a ramp, a jump: it changed by more than its own noise over the
  last `TEMPO_SPAN` ticks), the lagging period would carry old ticks too early, so the newest
  tick is the anchor, as a plain follower's, and the set starts again.

Measured against the newest-tick anchor in docs/TIMING.md (`benchmarks.profiles.follower_phase`).
"""

from __future__ import annotations

ANCHOR_TICKS = 12  # arrivals the anchor looks back over: half a beat
TEMPO_SPAN = 12  # ticks over which a tempo estimate that moves is a tempo change
TEMPO_STILL = 0.002  # ... by more than this share of the tempo (or its noise, if larger)
B_MIN_S, B_MAX_S = 0.0005, 0.006  # the bound on how far back jitter may reach
SPREAD_DECAY, SPREAD_GROWTH_S = 0.99, 0.00025  # the spread estimate, per tick
JUMP_BOUNDS = 3.0  # a tick this many bounds off the grid: the set starts again


class TickAnchor:
    """The follower's phase from its recent ticks; allocates nothing per tick."""

    def __init__(self) -> None:
        self._ks = [0] * ANCHOR_TICKS  # ring of (song position, arrival)
        self._ts = [0.0] * ANCHOR_TICKS
        self._n = self._i = 0
        self._spread_s = 0.0
        self._bpms = [0.0] * TEMPO_SPAN  # the tempo estimate at each of the last TEMPO_SPAN ticks
        self._b = self._seen = 0

    def restart(self, tempo_too: bool = True) -> None:
        """Forget the ticks (Start, Continue, a lost clock, lost bytes), and the tempo's history."""
        self._n = self._i = 0
        if tempo_too:
            self._seen = 0

    def anchor(self, k: int, t_s: float, predicted_s: float, period_s: float, bpm: float) -> float:
        """Tick `k` arrived at `t_s` (the grid expected it at `predicted_s`): where tick k is."""
        bound = min(B_MAX_S, max(B_MIN_S, self._spread_s))
        if abs(t_s - predicted_s) > JUMP_BOUNDS * bound:
            self.restart(tempo_too=False)
        ks, ts, m = self._ks, self._ts, ANCHOR_TICKS
        last = (self._i - 1) % m
        if self._n and ks[last] == k - 1:
            dev = abs(t_s - ts[last] - period_s)
            self._spread_s = max(self._spread_s * SPREAD_DECAY, min(dev, self._spread_s + SPREAD_GROWTH_S))
        ks[self._i], ts[self._i] = k, t_s
        self._i, self._n = (self._i + 1) % m, min(self._n + 1, m)
        if self._tempo_moves(bpm, period_s):
            self.restart(tempo_too=False)
            return t_s
        best, low = t_s, t_s - bound
        for j in range(self._n):
            p = ts[j] + (k - ks[j]) * period_s
            if low <= p < best:
                best = p
        return best

    def _tempo_moves(self, bpm: float, period_s: float) -> bool:
        old = self._bpms[self._b]
        self._bpms[self._b] = bpm
        self._b = (self._b + 1) % TEMPO_SPAN
        self._seen += 1
        if self._seen <= TEMPO_SPAN:
            return True  # too young to tell
        still = max(TEMPO_STILL, self._spread_s / (TEMPO_SPAN * period_s))
        return abs(bpm - old) > still * bpm
