"""What `--keep-warm` (time.keep_warm_ms) costs while improv idles: the daemon's CPU time over a few
idle seconds, with and without it, per model (the engine thread steps a scratch state each period).

    python -m benchmarks.profiles.keep_warm_cost [--models bach-lstm,irish-lstm,bach-wavenet] [--seconds 5]
"""

from __future__ import annotations

import argparse
import time

from improv.clock import MonotonicClock
from improv.daemon import Daemon
from improv.engine import Engine
from improv.midi_in import MidiInput
from improv.model_step import StepModel
from improv.settings import load_settings


class _Silent:
    """An output port that takes every message and keeps none."""

    def send(self, msg) -> None:
        pass

    def close(self) -> None:
        pass


def idle_share(name: str, keep_warm_ms: float, seconds: float) -> float:
    """Share of one core the daemon's process uses over `seconds` with nothing played."""
    settings = load_settings(None, {"time.keep_warm_ms": keep_warm_ms})
    daemon = Daemon(Engine(StepModel.load(name), settings, MonotonicClock(), _Silent()), MidiInput(None))
    daemon.start()
    try:
        time.sleep(0.5)
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        return (time.process_time() - cpu) / (time.perf_counter() - wall)
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bach-lstm,irish-lstm,bach-wavenet")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    for name in args.models.split(","):
        off, on = (idle_share(name, ms, args.seconds) for ms in (0.0, 1.0))
        print(f"{name}: idle {100 * off:.1f} % of a core, with --keep-warm {100 * on:.1f} %", flush=True)


if __name__ == "__main__":
    main()
