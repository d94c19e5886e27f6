"""Does the session memory's interval table earn its place? Second halves of held-out pieces
scored by a step model mixed (improv.blend) with the memory's absolute table alone, its interval
table alone, and both (what improv uses). The table in docs/LISTENING.md comes from

    .venv/bin/python -m benchmarks.profiles.memory_tables --corpus oneills --corpus essen --corpus bach
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.music import held_out_pieces
from improv.blend import Blend
from improv.memory import SessionMemory
from improv.model_step import StepModel
from improv.tokens import encode_notes

VARIANTS = ("alone", "absolute", "intervals", "both")


def _predict(memory: SessionMemory, variant: str) -> tuple[np.ndarray, int]:
    c = memory.cursor
    if variant == "absolute":
        return memory.absolute.predict(c.tokens)
    if variant == "intervals":
        p, depth = memory.relative.predict(c.relative)
        p = p[memory._relative_ids(c.ref_pitch)]
        return p / p.sum(), depth
    return memory.predict()


def second_half_nll(model, pieces, variant: str) -> float:
    total, count = 0.0, 0
    for notes in pieces:
        ids = encode_notes(notes, model.vocab)
        state, memory, blend = model.new_state(), SessionMemory(model.vocab.names), Blend(4)
        logits = model.step(int(ids[0]), state)
        for i in range(1, len(ids)):
            x = int(ids[i])
            p, depth = _predict(memory, variant)
            mixed = logits.astype(np.float64) if variant == "alone" else blend.mix(logits, p, depth)
            if i >= len(ids) // 2:
                top = mixed.max()
                total -= float(mixed[x] - top - np.log(np.exp(mixed - top).sum()))
                count += 1
            blend.learn(logits, x, float(p[x]), depth)
            memory.observe(x)
            logits = model.step(x, state)
    return total / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bach-lstm")
    parser.add_argument("--corpus", action="append", default=None)
    parser.add_argument("--pieces", type=int, default=15)
    args = parser.parse_args(argv)
    model = StepModel.load(args.model)
    for corpus in args.corpus or ["oneills"]:
        pieces = held_out_pieces(corpus, args.pieces)
        scores = {v: second_half_nll(model, pieces, v) for v in VARIANTS}
        print(corpus, "  ".join(f"{v} {scores[v]:.3f} ({1 - scores[v] / scores['alone']:+.1%})" for v in VARIANTS),
              flush=True)


if __name__ == "__main__":
    main()
