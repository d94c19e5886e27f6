"""improv's MIDI clock follower with its phase anchored at the earliest of the last M ticks instead
of the latest (issue 16; docs/TIMING.md, "Following MIDI clock"),
measured beside improv's follower on follower_phase's steady tempo, jump and ramps. Not in improv
as it stands (improv.tick_anchor uses it only while the tempo holds still): it removes most of the
half-period lateness at a steady tempo, but on slowing ramps that lateness was what cancelled the
tempo estimate's lag, so they get worse; correcting the lag with the
tempo's trend gets the 60-bpm ramp under the bar but not 110 bpm at 32 frames, and its noise
costs the steady gain.

`EarliestAnchorFollower`: tempo as improv's (median of half-window slopes); each tick, the last
`m` ticks projected to the newest's position with that period (t_i + (k - i) * period), and the
earliest that is no more than B before the newest arrival is the anchor. B is `factor` times the
lateness spread seen (a decaying maximum of |interval - period|, growing by at most 0.25 ms a
tick, 0.5 to 6 ms). The set restarts on Start/Continue, a lost clock, a gap, and a tick off the
grid by more than 3 B (a tempo jump). `TrendAnchorFollower` adds the tempo's trend: the period
estimate's change over `hist` ticks (smoothed by `alpha`), carried `lag` ticks to the newest tick,
used where it stands out of `gate` times the spread's scatter.

    python -m benchmarks.profiles.follower_anchor [--period 32 --period 64 --period 256] [--runs 10]
"""

from __future__ import annotations

import argparse

from benchmarks.profiles.follower_phase import beats_to_lock, ramp_p99s_ms, steady, tick_cost_us
from improv.clock import PPQN, MidiClockFollower

B_MIN_S, B_MAX_S = 0.0005, 0.006  # the bound's floor and cap
SPREAD_DECAY, SPREAD_GROWTH_S = 0.99, 0.00025  # per tick
JUMP_BOUNDS = 3.0  # a tick this many bounds off the grid: a tempo jump, the set restarts


class EarliestAnchorFollower(MidiClockFollower):
    """improv's follower, its phase at the earliest of the last `m` ticks projected forward."""

    def __init__(self, bpm: float = 120.0, t0_s: float = 0.0, m: int = 12, factor: float = 1.0) -> None:
        super().__init__(bpm, t0_s)
        self._m, self._factor = m, factor
        self._ks, self._ts = [0] * m, [0.0] * m  # ring of (song position, arrival)
        self._n = self._i = 0
        self._spread_s = 0.0
        self._restart = True

    def _arm(self, position_ticks: int, t_s: float | None) -> None:
        super()._arm(position_ticks, t_s)
        self._restart = True

    def check(self, now_s: float) -> bool:
        lost = super().check(now_s)
        self._restart = self._restart or lost
        return lost

    def _count_lost_ticks(self, t_s: float) -> None:
        open_before = self._gap is not None
        super()._count_lost_ticks(t_s)
        self._restart = self._restart or open_before or self._gap is not None

    def on_tick(self, t_s: float) -> None:
        k, predicted = self._next_tick, self.time_at(self._next_tick / PPQN)
        super().on_tick(t_s)
        if self._next_tick == k:
            return  # ignored (no Start)
        k = self._next_tick - 1
        period = self._period()
        bound = min(B_MAX_S, max(B_MIN_S, self._factor * self._spread_s))
        if self._restart or abs(t_s - predicted) > JUMP_BOUNDS * bound:
            self._n = self._i = 0
            self._restart = False
        m, ks, ts = self._m, self._ks, self._ts
        if self._n and ks[(self._i - 1) % m] == k - 1:
            dev = abs(t_s - ts[(self._i - 1) % m] - period)
            self._spread_s = max(self._spread_s * SPREAD_DECAY, min(dev, self._spread_s + SPREAD_GROWTH_S))
        ks[self._i], ts[self._i] = k, t_s
        self._i, self._n = (self._i + 1) % m, min(self._n + 1, m)
        self._anchor_s = self._earliest(k, t_s, bound)

    def _period(self) -> float:
        """The period the older ticks are projected with (s per tick)."""
        return self.period_s

    def _projected(self, d: int, period: float) -> float:
        """How far (s) d ticks carry a tick forward."""
        return d * period

    def _earliest(self, k: int, t_s: float, bound: float) -> float:
        best, low, period = t_s, t_s - bound, self._period()
        for j in range(self._n):
            p = self._ts[j] + self._projected(k - self._ks[j], period)
            if low <= p < best:
                best = p
        return best


class TrendAnchorFollower(EarliestAnchorFollower):
    """EarliestAnchorFollower with the period carried along the tempo's trend to the newest tick."""

    def __init__(self, bpm: float = 120.0, t0_s: float = 0.0, m: int = 12, factor: float = 1.0,
                 lag: float = 12.0, gate: float = 0.0, alpha: float = 0.3, hist: int = 6) -> None:
        self._lag, self._gate, self._alpha, self._hist = lag, gate, alpha, hist
        self._periods, self._seen, self._trend = [0.0] * (hist + 1), 0, 0.0
        super().__init__(bpm, t0_s, m, factor)

    def _estimate_bpm(self) -> None:
        super()._estimate_bpm()
        if len(self._ticks) <= PPQN or self._gap is not None:
            return
        base, h = 60.0 / (self._bpm * PPQN), self._hist
        self._periods[self._seen % (h + 1)] = base
        self._seen += 1
        if self._seen > h:
            raw = (base - self._periods[(self._seen - 1 - h) % (h + 1)]) / h
            self._trend += self._alpha * (raw - self._trend)
        a = self._used_trend()
        self._bpm = min(999.0, max(1.0, 60.0 / ((base + self._lag * a) * PPQN)))

    def _used_trend(self) -> float:
        scatter = self._spread_s / 144  # (the spread over 12 x 12 ticks)
        return self._trend if abs(self._trend) > self._gate * scatter else 0.0

    def _projected(self, d: int, period: float) -> float:
        return d * (period - self._used_trend() * d / 2)

    def _arm(self, position_ticks: int, t_s: float | None) -> None:
        super()._arm(position_ticks, t_s)
        self._seen, self._trend = 0, 0.0


def variants() -> dict[str, object]:
    """The variants the docs quote, by name."""
    out: dict[str, object] = {"latest tick (improv)": MidiClockFollower}
    for m in (6, 12, 24):
        for factor in (0.5, 1.0, 1.5):
            out[f"earliest of {m}, B {factor:g} x spread"] = (
                lambda bpm, m=m, factor=factor: EarliestAnchorFollower(bpm, m=m, factor=factor))
    out["trend, gate 0"] = lambda bpm: TrendAnchorFollower(bpm, m=8, factor=1.0, gate=0.0)
    out["trend, gate 1"] = lambda bpm: TrendAnchorFollower(bpm, m=16, factor=1.0, gate=1.0, alpha=0.2, hist=8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--period", type=int, action="append", help="JACK period in frames at 48 kHz (repeatable)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print("120 bpm, ticks late by 0..a period (ms): 100 ms ahead p99 / mean at a steady tempo, beats to lock after "
          "120 -> 90 bpm (within improv's steady max), ramp p99 (follower_phase's RAMPS)")
    for period in args.period or [32, 64, 256]:
        bound = steady(MidiClockFollower, 120.0, period, 16, args.runs)["max"]
        for name, make in variants().items():
            f = steady(make, 120.0, period, 16, args.runs)
            lock = beats_to_lock(make, 120.0, 90.0, period, args.runs, bound)
            ramps = "  ".join(f"{p99:.2f}" for p99 in ramp_p99s_ms(make, 120.0, period, args.runs))
            print(f"{period:4d} frames  {name:31s} steady {f['p99']:.3f} / {f['mean']:+.3f}  locked after {lock:.2f}  "
                  f"ramps {ramps}  ({tick_cost_us(make, 120.0):.0f} us per tick)", flush=True)


if __name__ == "__main__":
    main()
