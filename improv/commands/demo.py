from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    model: Annotated[Optional[str], typer.Option(help="A model folder, its model.json, or a name under models/. Defaults to the shipped default model.", envvar="IMPROV_MODEL")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The MIDI file to write: the call and the answer as two tracks.")] = Path("demo.mid"),
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same answer.")] = 0,
    bpm: Annotated[float, typer.Option(help="Tempo of the simulated session, in beats per minute.")] = 100.0,
    mode: Annotated[str, typer.Option(help="call: answer the phrase once it ends; duet: play along with it.")] = "call",
    config: Annotated[Optional[Path], typer.Option(help="A TOML settings file (see improv/settings.py); --bpm, --seed and --mode override it.", envvar="IMPROV_CONFIG")] = None,
) -> None:
    """Hear improv answer a built-in phrase: the real engine on a simulated clock, no MIDI system needed; prints a piano roll and writes demo.mid."""
    from improv.demo import run_demo

    run_demo(model=model, out=out, seed=seed, bpm=bpm, mode=mode, config=config)
