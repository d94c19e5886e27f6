"""`improv export`: thin; calls `training.export.export_checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `improv train` (best.pt or last.pt), or its run folder.")],
    out: Annotated[Path, typer.Option(help="The model folder to write, e.g. models/bach-lstm; replaced only if the new export verifies.")],
    name: Annotated[Optional[str], typer.Option(help="The model's name in model.json [default: the folder name].")] = None,
    check_tokens: Annotated[int, typer.Option(help="Tokens streamed through the ONNX graph and compared with PyTorch (at least 500).")] = 512,
) -> None:
    """Export a checkpoint to an ONNX step model plus its model.json sidecar, and verify it token by token."""
    from rich.console import Console

    from improv.errors import ConfigError
    from training.export import SIZE_LIMIT_BYTES, TOLERANCE, export_checkpoint

    if check_tokens < 500:
        raise ConfigError(f"--check-tokens {check_tokens} is too few; use at least 500")
    console = Console(stderr=True)
    report = export_checkpoint(checkpoint, out, name=name, check_tokens=check_tokens)
    console.print(f"streaming check: max abs logit diff {report.max_abs_diff:.3g} (limit {TOLERANCE:g}) "
                  f"over {report.tokens} {report.source} tokens")
    size_mb = report.onnx_bytes / 2**20
    warn = " [yellow](over the 20 MB limit for shipped models)[/]" if report.onnx_bytes > SIZE_LIMIT_BYTES else ""
    console.print(f"wrote {report.folder / 'model.onnx'} ({size_mb:.2f} MB){warn} and {report.folder / 'model.json'}")
