"""What the session memory adds to a player's token, its C path (improv/native/memory_mix.c) beside
its Python path, in one run: the bench's cached ONNX step and its step with the memory
(`benchmarks.step._MemoryStep`), the latter twice, once per path, timed in the same round-robin
blocks (`benchmarks.step.interleave`) so the machine's mood hits all three alike. The figures in
docs/LISTENING.md come from

    flock /tmp/improv-bench.lock .venv/bin/python -m benchmarks.profiles.memory_native --model general-lstm --model irish-lstm
"""

from __future__ import annotations

import argparse

import numpy as np

import improv.blend
import improv.memory
from benchmarks.step import StepOptions, _cached_fn, _MemoryStep, interleave, summary
from improv.model_step import StepModel


class _Path:
    """A `_MemoryStep` run with the memory's C path (`native`: the extension) or its Python (None)."""

    def __init__(self, step: _MemoryStep, native) -> None:
        self.step, self.native = step, native

    def _use(self) -> None:
        improv.memory.native = improv.blend.native = self.native

    def __call__(self, i: int) -> None:
        self._use()
        self.step(i)

    def after(self, i: int) -> None:
        self._use()
        self.step.after(i)


def run(name: str, options: StepOptions) -> dict[str, dict[str, float]]:
    model = StepModel.load(name, threads=1)
    tokens = np.random.default_rng(options.seed).integers(0, len(model.vocab), size=4 * options.steps + 4096)
    native = improv.memory.native
    variants = {"onnx": (_cached_fn(model, tokens), options.steps, options.warmup),
                "python": (_Path(_MemoryStep(model, tokens), None), options.steps, options.warmup)}
    if native is not None:
        variants["native"] = (_Path(_MemoryStep(model, tokens), native), options.steps, options.warmup)
    try:
        return {tag: summary(ms) for tag, ms in interleave(variants, options.rounds).items()}
    finally:
        improv.memory.native = improv.blend.native = native


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--steps", type=int, default=StepOptions.steps)
    args = parser.parse_args(argv)
    if improv.memory.native is None:
        print("improv._memory_mix is not built (python setup.py build_ext --inplace): the Python path only")
    for name in args.model or ["general-lstm"]:
        s = run(name, StepOptions(steps=args.steps))
        onnx = s["onnx"]
        print(f"{name}: onnx p50 {onnx['p50']:.4f} p99 {onnx['p99']:.4f} ms", flush=True)
        for tag in ("python", "native"):
            if tag in s:
                print(f"  memory, {tag:6s} p50 {s[tag]['p50']:.4f} p99 {s[tag]['p99']:.4f} ms;"
                      f" added p50 {s[tag]['p50'] - onnx['p50']:.4f} p99 {s[tag]['p99'] - onnx['p99']:.4f} ms", flush=True)


if __name__ == "__main__":
    main()
