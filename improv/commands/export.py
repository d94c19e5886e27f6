"""`improv export`: thin; calls `training.export.export_checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `improv train` (best.pt or last.pt), or its run folder.")],
    out: Annotated[Path, typer.Option(help="The model folder to write, e.g. models/bach-lstm; replaced only if the new export verifies.")],
    name: Annotated[Optional[str], typer.Option(help="The model's name in model.json [default: the folder name].")] = None,
    style: Annotated[Optional[str], typer.Option(help="The model's style in one word, e.g. bach, folk, irish, general, as `improv models` lists it [default: the corpora it was trained on].")] = None,
    description: Annotated[str, typer.Option(help="One line saying what the model plays and what it was trained on, as `improv models` lists it.")] = "",
    check_tokens: Annotated[int, typer.Option(help="Tokens streamed through the ONNX graph and compared with PyTorch (at least 500).")] = 512,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also fit n-grams (orders 1-5) on the model's training split and record the best one's test NLL in model.json; the data is read from the encoded-corpus cache when it is there, else parsed again.")] = True,
) -> None:
    """Export a checkpoint to an ONNX step model plus its model.json sidecar, and verify it token by token."""
    from rich.console import Console
    from rich.markup import escape

    from improv.errors import ConfigError
    from training.export import SIZE_LIMIT_BYTES, TOLERANCE, SidecarText, export_checkpoint

    if check_tokens < 500:
        raise ConfigError(f"--check-tokens {check_tokens} is too few; use at least 500")
    console = Console(stderr=True)
    text = SidecarText(name=name, style=style, description=description)
    report = export_checkpoint(checkpoint, out, text=text, check_tokens=check_tokens, baseline=baseline)
    console.print(f"streaming check: max abs logit diff {report.max_abs_diff:.3g} (limit {TOLERANCE:g}) "
                  f"over {report.tokens} {report.source} tokens")
    if report.baseline is not None:
        b = report.baseline
        console.print(f"best n-gram ({b['best_ngram_order']}-gram) test NLL {b['best_ngram_test_nll']:.4f} nats/token "
                      f"over {b['best_ngram_test_tokens']} tokens, recorded in model.json")
    else:
        console.print(f"[yellow]n-gram baseline not recorded:[/] {escape(report.baseline_why)}", highlight=False)
    size_mb = report.onnx_bytes / 2**20
    warn = " [yellow](over the 20 MB limit for shipped models)[/]" if report.onnx_bytes > SIZE_LIMIT_BYTES else ""
    console.print(f"wrote {report.folder / 'model.onnx'} ({size_mb:.2f} MB){warn} and {report.folder / 'model.json'}")
