"""Does the order a chord's notes arrive in change the answer? The music section's measures
(benchmarks.music) on held-out calls whose chords are played low to high (as the bench plays
them), high to low, or in a random order within each onset. Since improv.stream_encoder puts
them in the model's own order, the three should agree; before, a model heard them as they came.

    python -m benchmarks.profiles.chord_order [--models bach-lstm,bach-wavenet] [--corpus bach]
        [--calls 8] [--seeds 4] [--orders up,down,shuffled]
"""

from __future__ import annotations

import argparse
import random

from benchmarks.music import answer_measures, held_out_calls
from improv.model_step import StepModel

KEYS = ("in_key", "echo", "copy", "density_log2", "poly_excess", "register_st", "distinct")


def reorder(call, order: str, seed: int = 0) -> list:
    """`call`'s notes, the notes of each onset in `order` (answer_call keeps it within a time)."""
    if order == "up":
        return sorted(call, key=lambda n: (n.onset_beats, n.pitch))
    if order == "down":
        return sorted(call, key=lambda n: (n.onset_beats, -n.pitch))
    rng = random.Random(seed)
    return sorted(call, key=lambda n: (n.onset_beats, rng.random()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bach-lstm,bach-wavenet")
    parser.add_argument("--corpus", default="bach")
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--orders", default="up,down,shuffled")
    args = parser.parse_args()
    calls = held_out_calls(args.corpus, args.calls)
    print("model chord_order corpus " + " ".join(KEYS))
    for name in args.models.split(","):
        model = StepModel.load(name)
        for order in args.orders.split(","):
            ordered = [reorder(call, order, i) for i, call in enumerate(calls)]
            got = answer_measures(model, ordered, list(range(args.seeds)))
            print(model.name, model.vocab.config.chord_order, args.corpus, order,
                  " ".join(f"{got[k]:.3f}" for k in KEYS), flush=True)


if __name__ == "__main__":
    main()
