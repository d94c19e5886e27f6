"""`improv eval`: test-set NLL, perplexity and accuracy of an exported model, stepped through ONNX as
the daemon runs it, beside n-gram baselines fitted on the same train split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_DEFAULT = "Default: the model's training setting."


def command(
    model: Annotated[str | None, typer.Option(
        help="A model folder, its model.json, or a name under models/. Defaults to the shipped default model.",
        envvar="IMPROV_MODEL")] = None,
    data: Annotated[list[Path] | None, typer.Option(
        help="Evaluate on these files or folders (MIDI, MusicXML, ABC, the JSB .tgz); repeat for more. "
        "Default: the data the model was trained on.")] = None,
    corpus: Annotated[list[str] | None, typer.Option(
        help="Evaluate on a music21 corpus such as bach; repeat for more. Default: the model's training corpus.")] = None,
    max_pieces: Annotated[int | None, typer.Option(
        help=f"Load at most this many pieces of each corpus (and of the --data files together) before splitting, for a quick run. {_DEFAULT}")] = None,
    key: Annotated[str | None, typer.Option(
        help=f"Key handling when encoding: none, normalize or augment, as in training. {_DEFAULT}")] = None,
    min_count: Annotated[int | None, typer.Option(
        help=f"Vocabulary pruning threshold, as in training. {_DEFAULT}")] = None,
    split_seed: Annotated[int | None, typer.Option(
        help=f"Seed of the train/valid/test split, as in training. {_DEFAULT}")] = None,
    limit_tokens: Annotated[int | None, typer.Option(
        help="Score only the first this many test tokens, for a quick run.")] = None,
    max_order: Annotated[int, typer.Option(
        help="Fit n-gram baselines of orders 1 up to this (at most 5).", min=1, max=5)] = 5,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Where encoded data is cached between runs. Default: the data loader's own cache.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")] = None,
    adapt: Annotated[bool, typer.Option(
        help="Also score each test piece with a session memory that listens as it streams (as `improv run` "
        "does): NLL with and without it, over whole pieces and over their second halves.")] = False,
) -> None:
    """Test-set NLL, perplexity and accuracy of a model beside n-gram baselines (orders 1 to 5)."""
    from rich.console import Console

    from training.evaluate import evaluate, report_table, summary

    report = evaluate(
        model=model, data=tuple(data or ()), corpus=tuple(corpus or ()), max_pieces=max_pieces, key=key,
        min_count=min_count, split_seed=split_seed, limit_tokens=limit_tokens, orders=range(1, max_order + 1),
        cache_dir=cache_dir, json_path=json_out, adapt=adapt,
    )
    console = Console()
    console.print(report_table(report))
    console.print(summary(report))
    if json_out is not None:
        console.print(f"wrote {json_out}")
