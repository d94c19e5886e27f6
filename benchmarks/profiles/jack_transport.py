"""JACK's share alone: a player client straight into the C recorder, no improv in between.

    python -m benchmarks.profiles.jack_transport [--period 32] [--notes 400] [--realtime]

On a private jackd like `improv bench`'s, single notes 30-60 ms apart; prints p50 / p99 / max of
send -> arrival (ms): one hop of what the bench's duet reaction crosses twice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period", type=int, default=32, help="JACK period in frames (48 kHz)")
    parser.add_argument("--notes", type=int, default=400)
    parser.add_argument("--realtime", action="store_true", help="run jackd with realtime scheduling")
    args = parser.parse_args(argv)

    from benchmarks.harness.clients import Player, Recorder, sleep_until
    from benchmarks.harness.notes import note_ons
    from benchmarks.midi import jack_server

    with tempfile.TemporaryDirectory(prefix="improv-transport-") as tmp, \
            jack_server(args.period, 48000, Path(tmp), realtime=args.realtime) as server:
        player, recorder = Player("transport-player"), Recorder("transport-rec")
        try:
            server.connect(player.port, recorder.port)
            time.sleep(0.5)
            rng = np.random.default_rng(0)
            sends, t = [], time.perf_counter() + 0.2
            for i in range(args.notes):
                pitch = 40 + i % 40
                sleep_until(t)
                sends.append((player.send([0x90, pitch, 90]), pitch))
                sleep_until(t + 0.02)
                player.send([0x80, pitch, 0])
                t += float(rng.uniform(0.03, 0.06))
            time.sleep(0.3)
            arrivals = [(t_s, m[1]) for t_s, m in note_ons(recorder.received)]
        finally:
            player.close()
            recorder.close()
    latencies = []
    for t_send, pitch in sends:
        hit = next((t_s for t_s, p in arrivals if p == pitch and 0 < t_s - t_send < 0.05), None)
        if hit is not None:
            latencies.append(hit - t_send)
    ms = np.asarray(latencies) * 1000.0
    print(f"JACK dummy, {args.period} frames, {'realtime' if args.realtime else 'not realtime'}: "
          f"{len(ms)} of {len(sends)} notes arrived; send -> arrival p50 {np.median(ms):.2f} / "
          f"p99 {np.percentile(ms, 99):.2f} / max {ms.max():.2f} ms")


if __name__ == "__main__":
    main()
