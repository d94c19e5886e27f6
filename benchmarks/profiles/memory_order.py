"""The session memory's order against `adapt_gain`: second halves of held-out pieces scored by each
model with and without the memory (`training.evaluate.adaptive_metrics`, as `improv bench --only
music` scores them), for each `listen.order` asked. Away from a model's home it shows how much a
longer context buys; at home, what it costs. The figures in the closing notes of issue 14 come from

    IMPROV_CACHE=~/cache .venv/bin/python -m benchmarks.profiles.memory_order \
        --case folk-lstm:oneills --case bach-lstm:bach --case general-lstm:oneills --order 4 --order 6 --order 8
"""

from __future__ import annotations

import argparse
import os

from benchmarks.music import held_out_pieces
from improv.model_step import StepModel
from improv.settings import ListenSettings
from improv.tokens import encode_notes
from training.evaluate import adaptive_metrics


def case_arguments(description: str) -> argparse.ArgumentParser:
    """The command line of the memory's profiles: --case MODEL:CORPUS (repeated) and --pieces."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--case", action="append", required=True, help="MODEL:CORPUS, e.g. folk-lstm:oneills")
    parser.add_argument("--pieces", type=int, default=15)
    return parser


def cases(args):
    """(model name, corpus, model, the corpus' held-out pieces as its tokens) for each --case."""
    cache = os.environ.get("IMPROV_CACHE")
    for case in args.case:
        name, corpus = case.split(":")
        model = StepModel.load(name)
        yield name, corpus, model, [encode_notes(notes, model.vocab)
                                    for notes in held_out_pieces(corpus, args.pieces, cache)]


def main(argv: list[str] | None = None) -> None:
    parser = case_arguments(__doc__.splitlines()[0])
    parser.add_argument("--order", action="append", type=int, default=None, help="listen.order (1..8); repeat")
    args = parser.parse_args(argv)
    for name, corpus, model, pieces in cases(args):
        for order in args.order or [ListenSettings().order]:
            m = adaptive_metrics(model, pieces, ListenSettings(order=order))
            alone, mixed = m["nll_second_half"].nll, m["adapt_second_half"].nll
            print(f"{name} on {corpus}, order {order}: {alone:.3f} -> {mixed:.3f} nats/token, "
                  f"adapt_gain {1 - mixed / alone:.3f}", flush=True)


if __name__ == "__main__":
    main()
