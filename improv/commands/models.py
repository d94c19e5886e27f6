"""`improv models`: the installed models as a table (or JSON); the work is in `improv.catalog`.

Exit code 0 when at least one model loads; 2 (`ModelError`) when the folder holds no model or
every model in it is broken, after the list has been printed, so the reasons are on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def command(
    folder: Annotated[Path | None, Opt("--dir", help="List the models in this folder. Default: the shipped models folder ($IMPROV_MODELS, else the repository's models/).")] = None,
    timing: Annotated[bool, Opt("--time/--no-time", help="Time a few hundred cached steps of each model (one onnxruntime thread, well under a second each); --no-time skips it.")] = True,
    json_out: Annotated[bool, Opt("--json", help="Print the list as JSON (one object per model folder, broken ones with their problem) instead of a table.")] = False,
) -> None:
    """The installed models: name, style, kind, size, test NLL beside the best n-gram's, step time and description; a broken model folder is listed with what is wrong."""
    import json

    from rich.console import Console

    from improv.catalog import TIMED_STEPS, list_models
    from improv.errors import ConfigError, ModelError
    from improv.model_step import models_dir

    folder = Path(folder) if folder is not None else models_dir()
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder (--dir); give a folder of model folders (each with model.json and model.onnx)")
    entries = list_models(folder, timed_steps=TIMED_STEPS if timing else 0)
    if json_out:
        print(json.dumps({"folder": str(folder), "models": [e.as_dict() for e in entries]}, indent=2))
    elif entries:
        Console().print(models_table(folder, entries, timing))
    if not entries:
        raise ModelError(f"no models in {folder} (no folder there holds a model.json); train and export one with "
                         f"`improv train` and `improv export --out {folder / 'NAME'}`")
    if not any(e.ok for e in entries):
        raise ModelError(f"no usable model in {folder}: all {len(entries)} are broken (reasons above); "
                         "re-export them with `improv export`")


def models_table(folder: Path, entries, timed: bool):
    """The rich Table of `improv models`."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    caption = ("writes: chords, or lines (a melody model: its answers to chords get chords voiced under them); "
               "NLL: test NLL (nats/token); n-gram: the best n-gram's on the same held-out split"
               + ("; step ms: p50 / p99 of cached steps, 1 onnxruntime thread, measured now" if timed else ""))
    table = Table(title=f"models in {folder}", caption=caption, title_justify="left", caption_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("model", "style", "kind", "writes"):
        table.add_column(column, no_wrap=True)
    for column in ("MB", "NLL", "n-gram", "step ms"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("description", overflow="fold", min_width=10)

    def number(value, digits: int) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    for e in entries:
        if not e.ok:
            table.add_row(f"[red]{escape(e.name)}[/]", "", "", "", "", "", "", "", f"[red]broken: {escape(e.problem.replace(e.folder + '/', ''))}[/]")
            continue
        step = "—" if e.step_p50_ms is None else f"{e.step_p50_ms:.3f} / {e.step_p99_ms:.3f}"
        kind = e.kind if e.live else f"{e.kind} (grid: not live)"
        table.add_row(escape(e.name), escape(e.style), kind, e.writes, number(e.size_mb, 1), number(e.test_nll, 3),
                      number(e.ngram_nll, 3), step, escape(e.description))
    return table
