"""Where the MIDI clock follower puts the next beat when each tick arrives up to a JACK period late
(uniformly, at random), against the sender's true grid: improv's follower (improv.clock.
MidiClockFollower: tempo from half-window slopes, phase at the earliest recent tick while the
tempo holds, improv.tick_anchor) beside `LatestTickFollower`, a frozen copy of the grid improv
had before (phase at the latest tick; steady ticks only), the bar on tempo ramps, and the lower
envelope that did not ship (benchmarks.profiles.lower_envelope). Per
period, in steady tempo: the error's std and mean for the next beat (0 to 24 ticks ahead) and for
the tick 100 ms ahead (improv.parts.LOOKAHEAD_S: when plans are timed), and the p99 of |error|
100 ms ahead; after a jump from --bpm to --jump-bpm, the beats until every later estimate 100 ms
ahead is back within the worst error that follower makes at a steady tempo; on `RAMPS` (tempo
automation: 2 beats at --bpm, a ramp linear in beats, 4 beats at the new tempo), the p99 of |error|
100 ms ahead from the ramp's first tick on; the time one tick costs (CPython, this machine).

    python -m benchmarks.profiles.follower_phase [--bpm 120] [--jump-bpm 90] [--period 32 --period 64 --period 256] [--beats 16] [--runs 10]
"""

from __future__ import annotations

import argparse
import time
from collections import deque

import numpy as np

from benchmarks.profiles.lower_envelope import LowerEnvelopeFollower
from improv.clock import PPQN, MidiClockFollower
from improv.parts import LOOKAHEAD_S

RATE = 48000  # JACK sample rate (frames per second)
FIRST_S = 0.01  # the true grid's first tick
RAMPS = ((140.0, 8), (110.0, 8), (60.0, 16))  # (to bpm, over beats) from --bpm
TAIL_BEATS = 4  # at the new tempo after a ramp (its end bends the grid as much as its start)


class LatestTickFollower:
    """improv's follower's grid (steady ticks only: no gaps, no transport): tempo the median of
    the slopes across half of the last 24 intervals, phase at the latest tick."""

    def __init__(self, bpm: float) -> None:
        self.bpm, self._ticks, self._anchor_s, self._anchor_beats = bpm, deque(maxlen=PPQN + 1), 0.0, 0.0

    def on_start(self, t_s: float) -> None:
        self._ticks.clear()

    def on_tick(self, t_s: float) -> None:
        self._ticks.append(t_s)
        n = len(self._ticks)
        if n >= 3:
            half = (n - 1) // 2
            slopes = sorted((self._ticks[i + half] - self._ticks[i]) / half for i in range(n - half))
            self.bpm = 60.0 / (slopes[len(slopes) // 2] * PPQN)
        self._anchor_s, self._anchor_beats = t_s, self._anchor_beats + (1.0 / PPQN if n > 1 else 0.0)

    def time_at(self, beats: float) -> float:
        return self._anchor_s + (beats - self._anchor_beats) * 60.0 / self.bpm


FOLLOWERS = {"improv": MidiClockFollower, "latest tick (before)": LatestTickFollower,
             "lower envelope": LowerEnvelopeFollower}


def true_ticks(tempos: list[tuple[float, int]]) -> np.ndarray:
    """Tick times (s) of the sender's grid: `beats` beats at each (bpm, beats) in turn."""
    periods = np.concatenate([np.full(beats * PPQN, 60.0 / (bpm * PPQN)) for bpm, beats in tempos])
    return FIRST_S + np.concatenate([[0.0], np.cumsum(periods)[:-1]])


def estimate_errors(make, true: np.ndarray, period_frames: int, seed: int, ahead: int | None) -> np.ndarray:
    """Per tick after the first beat, the follower's time for the tick `ahead` ticks on (None: the
    next beat) minus the true one (s)."""
    rng = np.random.default_rng(seed)
    arrivals = true + rng.uniform(0.0, period_frames / RATE, len(true))
    follower = make(true_bpm(true))
    follower.on_start(0.0)
    errors = np.full(len(true) - PPQN, np.nan)
    for k, t in enumerate(arrivals[: len(true) - PPQN]):
        follower.on_tick(float(t))
        target = (k // PPQN + 1) * PPQN if ahead is None else k + ahead
        errors[k] = follower.time_at(target / PPQN) - true[target]
    return errors[PPQN:]


def ramp_ticks(bpm: float, to_bpm: float, ramp_beats: int) -> np.ndarray:
    """Tick times (s): 2 beats at `bpm`, a ramp linear in beats to `to_bpm` over `ramp_beats`
    beats, then `TAIL_BEATS` at `to_bpm`."""
    k = np.arange((2 + ramp_beats + TAIL_BEATS) * PPQN)
    bpms = bpm + (to_bpm - bpm) * np.clip((k - 2 * PPQN) / (ramp_beats * PPQN), 0.0, 1.0)
    return FIRST_S + np.concatenate([[0.0], np.cumsum(60.0 / (bpms * PPQN))[:-1]])


def ramp_errors(make, bpm: float, to_bpm: float, ramp_beats: int, period: int, runs: int) -> np.ndarray:
    """|error| (s) 100 ms ahead from the ramp's first tick to the end (runs pooled)."""
    true = ramp_ticks(bpm, to_bpm, ramp_beats)
    got = [estimate_errors(make, true, period, seed, ticks_ahead(bpm))[PPQN:] for seed in range(runs)]
    return np.abs(np.concatenate(got))


def ramp_p99s_ms(make, bpm: float, period: int, runs: int) -> list[float]:
    """The p99 of `ramp_errors` (ms) on each of `RAMPS`, in order."""
    return [float(np.percentile(ramp_errors(make, bpm, to, n, period, runs), 99)) * 1e3 for to, n in RAMPS]


def tick_cost_us(make, bpm: float, beats: int = 64) -> float:
    """Mean time (us) one tick costs the follower, ticks late by 0..64 frames."""
    true = true_ticks([(bpm, beats)])
    arrivals = true + np.random.default_rng(0).uniform(0.0, 64 / RATE, len(true))
    follower = make(bpm)
    follower.on_start(0.0)
    ticks = [float(t) for t in arrivals]
    start = time.perf_counter()
    for t in ticks:
        follower.on_tick(t)
    return (time.perf_counter() - start) / len(ticks) * 1e6


def true_bpm(true: np.ndarray) -> float:
    return 60.0 / ((true[1] - true[0]) * PPQN)


def ticks_ahead(bpm: float) -> int:
    return round(LOOKAHEAD_S * bpm * PPQN / 60.0)


def steady(make, bpm: float, period: int, beats: int, runs: int) -> dict[str, float]:
    """Error figures (ms) at a steady tempo over `runs` seeds: std and mean (next beat, 100 ms
    ahead, each averaged over runs), p99 and max of |error| 100 ms ahead (all runs pooled)."""
    true = true_ticks([(bpm, beats)])
    beat = [estimate_errors(make, true, period, seed, None) * 1e3 for seed in range(runs)]
    near = [estimate_errors(make, true, period, seed, ticks_ahead(bpm)) * 1e3 for seed in range(runs)]
    pooled = np.abs(np.concatenate(near))
    return {"beat_std": float(np.mean([np.std(e) for e in beat])), "beat_mean": float(np.mean([np.mean(e) for e in beat])),
            "std": float(np.mean([np.std(e) for e in near])), "mean": float(np.mean([np.mean(e) for e in near])),
            "p99": float(np.percentile(pooled, 99)), "max": float(pooled.max())}


def beats_to_lock(make, bpm: float, jump_bpm: float, period: int, runs: int, bound_ms: float) -> float:
    """Median over runs of the beats from the jump until every later estimate 100 ms ahead is
    within `bound_ms` of the truth (4 beats before the jump, 4 after)."""
    true = true_ticks([(bpm, 4), (jump_bpm, 4)])
    jump = 3 * PPQN  # (errors start a beat in) the first tick at the new tempo
    out = []
    for seed in range(runs):
        errors = estimate_errors(make, true, period, seed, ticks_ahead(jump_bpm))[jump - ticks_ahead(jump_bpm):]
        bad = np.flatnonzero(np.abs(errors) * 1e3 > bound_ms)
        out.append((bad[-1] + 1) / PPQN if len(bad) else 0.0)
    return float(np.median(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--jump-bpm", type=float, default=90.0)
    parser.add_argument("--period", type=int, action="append", help="JACK period in frames at 48 kHz (repeatable)")
    parser.add_argument("--beats", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.runs} runs of {args.beats} beats at {args.bpm:g} bpm, ticks late by 0..a period (ms): the next "
          f"beat's error std/mean; 100 ms ahead std/mean, p99/max |error|; after {args.bpm:g} -> {args.jump_bpm:g} "
          "bpm, beats until every estimate is within that follower's steady max")
    for period in args.period or [32, 64, 256]:
        for name, make in FOLLOWERS.items():
            f = steady(make, args.bpm, period, args.beats, args.runs)
            lock = beats_to_lock(make, args.bpm, args.jump_bpm, period, args.runs, f["max"])
            ramps = "  ".join(f"to {to:g} in {n}: {p99:.2f}"
                              for (to, n), p99 in zip(RAMPS, ramp_p99s_ms(make, args.bpm, period, args.runs)))
            print(f"{period:4d} frames  {name:21s} next beat {f['beat_std']:.3f} / {f['beat_mean']:+.3f}   100 ms "
                  f"ahead {f['std']:.3f} / {f['mean']:+.3f}, {f['p99']:.3f} / {f['max']:.3f}   locked after {lock:.2f} "
                  f"beats   ramp p99 {ramps}")
    for name, make in FOLLOWERS.items():
        print(f"{name}: {tick_cost_us(make, args.bpm):.1f} us per tick")


if __name__ == "__main__":
    main()
