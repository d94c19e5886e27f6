"""Where the MIDI clock follower puts the next beat when each tick arrives up to a JACK period
late (uniformly, at random): the scatter and mean of its error against the sender's true grid,
next to the scatter of the tick arrivals themselves (improv.clock.MidiClockFollower).

    python -m benchmarks.profiles.follower_phase [--bpm 120] [--period 64] [--beats 8] [--runs 10]
"""

from __future__ import annotations

import argparse

import numpy as np

from improv.clock import PPQN, MidiClockFollower


def errors_ms(bpm: float, period_frames: int, beats: int, seed: int) -> tuple[float, float, float]:
    """(std, mean) ms of the follower's next beat against the true one, and the arrivals' std."""
    rng = np.random.default_rng(seed)
    follower = MidiClockFollower(bpm=bpm)
    follower.on_start(0.0)
    true = 0.01 + np.arange(beats * PPQN) * 60.0 / (bpm * PPQN)
    arrivals = true + rng.uniform(0.0, period_frames / 48000, len(true))
    errors = []
    for k, t in enumerate(arrivals):
        follower.on_tick(float(t))
        if k >= PPQN:  # locked after a beat
            beat = k // PPQN + 1
            errors.append(follower.time_at(beat) - (0.01 + beat * 60.0 / bpm))
    return float(np.std(errors)) * 1e3, float(np.mean(errors)) * 1e3, float(np.std(arrivals - true)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--period", type=int, default=64, help="JACK period in frames at 48 kHz")
    parser.add_argument("--beats", type=int, default=8)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    got = np.array([errors_ms(args.bpm, args.period, args.beats, seed) for seed in range(args.runs)])
    std, mean, arrivals = got.mean(axis=0)
    print(f"next beat vs the true grid: std {std:.3f} ms, mean {mean:+.3f} ms; tick arrivals' std {arrivals:.3f} ms "
          f"({args.runs} runs of {args.beats} beats at {args.bpm:g} bpm, {args.period}-frame period)")


if __name__ == "__main__":
    main()
