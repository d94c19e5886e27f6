"""JACK's own timeline against the process callbacks: where a cycle's frame 0 really is.

    python -m benchmarks.profiles.jack_timeline [--period 32] [--seconds 30] [--realtime]

On a private jackd like `improv bench`'s, a C client (benchmarks/harness/jack_timeline.c) notes in
every cycle how long after JACK's cycle start (jack_get_cycle_times, its delay-locked loop) its
callback began; prints the quantiles and the share of cycles outside [-0.5, +2] ms. Why improv's
clients take frame 0's time from the callback instead (improv/native/jack_frames.h, docs/TIMING.md).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period", type=int, default=32, help="JACK period in frames (48 kHz)")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--realtime", action="store_true", help="run jackd with realtime scheduling")
    args = parser.parse_args(argv)

    from benchmarks.harness.clients import build_c_client
    from benchmarks.midi import jack_server

    binary, why = build_c_client("jack_timeline.c")
    if binary is None:
        raise SystemExit(f"cannot build jack_timeline.c: {why}")
    with tempfile.TemporaryDirectory(prefix="improv-timeline-") as tmp, \
            jack_server(args.period, 48000, Path(tmp), realtime=args.realtime) as server:
        out = subprocess.run([str(binary), str(args.seconds)], env=server.env, capture_output=True, text=True,
                             check=True).stdout
    late = np.array([float(x) for x in out.split()])
    q = np.percentile(late, [0, 1, 50, 99, 100])
    outside = float(np.mean((late < -0.5) | (late > 2.0)))
    print(f"{len(late)} cycles at {args.period} frames{' (realtime jackd)' if args.realtime else ''}: callback - "
          f"JACK's cycle start min / p1 / p50 / p99 / max {' / '.join(f'{x:.3f}' for x in q)} ms; "
          f"outside [-0.5, +2] ms: {100 * outside:.1f} % of cycles")


if __name__ == "__main__":
    main()
