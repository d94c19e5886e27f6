"""The cyclic garbage collector's pauses in a process like the daemon's, with and without
`--realtime`'s gc.freeze() of the start-up's objects.

    .venv/bin/python -m benchmarks.profiles.gc_pauses [--model bach-lstm] [--calls 40]

Loads the model and the modules `improv run` imports, then (in a child process per variant, so
neither sees the other's heap) plays duets along the built-in call on the demo's simulated clock,
timing every collection (gc.callbacks), and ends with one explicit full collection: what an
automatic full pass costs when it comes. Findings: docs/TIMING.md, "Realtime".
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bach-lstm", help="a model name under models/ or a model folder")
    parser.add_argument("--calls", type=int, default=40, help="duets along the built-in call")
    parser.add_argument("--variant", choices=("plain", "frozen"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant is None:
        for variant in ("plain", "frozen"):
            subprocess.run([sys.executable, "-m", "benchmarks.profiles.gc_pauses", "--model", args.model,
                            "--calls", str(args.calls), "--variant", variant], check=True)
        return
    print(measure(args.model, args.calls, frozen=args.variant == "frozen"))


def measure(model_name: str, calls: int, frozen: bool) -> str:
    import improv.daemon  # noqa: F401 - the modules `improv run` holds
    import improv.record  # noqa: F401
    import improv.serve  # noqa: F401
    import improv.view  # noqa: F401
    from improv.demo import answer_call, built_in_call
    from improv.model_step import StepModel
    from improv.realtime import freeze_heap
    from improv.settings import load_settings

    model = StepModel.load(model_name)
    if frozen:
        freeze_heap()
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], (time.perf_counter() - started[0]) * 1000))

    gc.callbacks.append(timed)
    settings = load_settings(None, {"mode.mode": "duet", "sampling.seed": 1})
    for _ in range(calls):
        answer_call(model, settings, built_in_call())
    t0 = time.perf_counter()
    gc.collect()
    full_ms = (time.perf_counter() - t0) * 1000
    gc.callbacks.remove(timed)
    young = sorted(ms for g, ms in pauses if g < 2)
    return (f"{'frozen' if frozen else 'plain '}: {len(pauses)} collections while playing, the young ones p50 "
            f"{young[len(young) // 2]:.3f} / max {young[-1]:.3f} ms; a full pass {full_ms:.2f} ms; objects the "
            f"collector tracks {len(gc.get_objects())} (frozen {gc.get_freeze_count()})")


if __name__ == "__main__":
    main()
