"""A candidate for following tempo ramps, measured beside the two followers of follower_phase: the
lower envelope, blended towards a short-memory estimate while the tempo moves (docs/TIMING.md,
"Following MIDI clock", what was tried). Not in improv: it does not yet beat the latest-tick
follower on every ramp, and it slows the lock after a tempo jump (its state is not restarted
with the window; restarting it there costs the ramps more, since the window restarts on slowing
ramps too: 3.78 / 11.1 ms for 110 / 60 bpm at 64 frames).

The short-memory estimate: the tempo's slope at about 12 ticks back (the median of the slopes
across 12 ticks, as the latest-tick follower had it), its change over 12 ticks (the curvature a,
smoothed), the slope carried to the newest tick, and the phase at the lowest of the newest 6 ticks
projected along that curve. Its weight: the curvature against the lateness seen (a slow average,
so it opens late), or the newest 6 ticks all off the line on the side the curvature says (quick).

    python -m benchmarks.profiles.follower_ramps [--period 64 --period 256] [--runs 10]
"""

from __future__ import annotations

import argparse
from collections import deque

from benchmarks.profiles.follower_phase import FOLLOWERS, beats_to_lock, ramp_p99s_ms, steady, tick_cost_us
from benchmarks.profiles.lower_envelope import LowerEnvelopeFollower
from improv.clock import PPQN

LAG = 12  # ticks between the two slopes the curvature comes from
NEWEST = 6  # ticks the phase and the residual check look at
SMOOTH, SLOW = 0.2, 0.05  # per tick: the curvature used, and the one that opens the blend
CURVE_OPEN = (1e-3, 2e-3)  # |slow curvature| / lateness (1/tick^2): blend from 0 at the first to 1 at the second
LATE_OPEN = (0.5, 0.8)  # the newest ticks' lowest residual / lateness, later than the line
EARLY_OPEN = (0.1, 0.3)  # ... or earlier than it


def _ramp(x: float, lo_hi: tuple[float, float]) -> float:
    return min(1.0, max(0.0, (x - lo_hi[0]) / (lo_hi[1] - lo_hi[0])))


class RampBlendFollower(LowerEnvelopeFollower):
    """LowerEnvelopeFollower, its grid blended towards the short-memory estimate (steady ticks only)."""

    def __init__(self, bpm: float = 120.0, t0_s: float = 0.0) -> None:
        super().__init__(bpm, t0_s)
        self._recent: deque[tuple[int, float]] = deque(maxlen=2 * LAG + 1)
        self._slopes: deque[float] = deque(maxlen=LAG + 1)
        self._offs: deque[float] = deque(maxlen=NEWEST)
        self._curve = self._curve_slow = self._lateness = 0.0

    def _follow(self, k: int, t_s: float) -> None:
        if self._line.count >= 12:
            self._offs.append(t_s - self._line.at(k))
        super()._follow(k, t_s)
        self._recent.append((k, t_s))
        if len(self._recent) == self._recent.maxlen:
            self._blend(k)

    def _blend(self, k: int) -> None:
        ks, ts = zip(*self._recent)
        slopes = sorted((ts[i + LAG] - ts[i]) / (ks[i + LAG] - ks[i]) for i in range(LAG + 1))
        self._slopes.append(slopes[LAG // 2])
        if len(self._slopes) <= LAG:
            return
        raw = (self._slopes[-1] - self._slopes[0]) / LAG
        self._curve += SMOOTH * (raw - self._curve)
        self._curve_slow += SLOW * (raw - self._curve_slow)
        a = self._curve
        period = self._slopes[-1] + a * LAG  # carried to the newest tick
        on_curve = [ts[-j] + (j - 1) * period - a * (j - 1) ** 2 / 2 for j in range(1, 2 * LAG + 1)]
        spread = max(on_curve) - min(on_curve)
        self._lateness = spread if not self._lateness else max(self._lateness * 0.99, min(spread, self._lateness + 0.00025))
        w = _ramp(abs(self._curve_slow) / self._lateness, CURVE_OPEN)
        if len(self._offs) == NEWEST:
            low = min(self._offs) / self._lateness
            w = max(w, _ramp(low, LATE_OPEN), _ramp(-low, EARLY_OPEN))
        if w > 0.0:
            line_period = 60.0 / (self._bpm * PPQN)
            self._anchor_s = (1 - w) * self._anchor_s + w * min(on_curve[:NEWEST])
            self._bpm = 60.0 / (((1 - w) * line_period + w * period) * PPQN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--period", type=int, action="append", help="JACK period in frames at 48 kHz (repeatable)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print("120 bpm, ticks late by 0..a period (ms): 100 ms ahead p99 at a steady tempo, beats to lock after "
          "120 -> 90 bpm, ramp p99 (follower_phase's RAMPS)")
    for period in args.period or [64, 256]:
        for name, make in {**FOLLOWERS, "ramp blend (candidate)": RampBlendFollower}.items():
            f = steady(make, 120.0, period, 16, args.runs)
            lock = beats_to_lock(make, 120.0, 90.0, period, args.runs, f["max"])
            ramps = "  ".join(f"{p99:.2f}" for p99 in ramp_p99s_ms(make, 120.0, period, args.runs))
            print(f"{period:4d} frames  {name:23s} steady p99 {f['p99']:.3f}  locked after {lock:.2f} beats  "
                  f"ramps {ramps}  ({tick_cost_us(make, 120.0):.0f} us per tick)")


if __name__ == "__main__":
    main()
