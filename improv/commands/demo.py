from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    model: Annotated[Optional[str], typer.Option(help="A model folder, its model.json, or a name under models/. Defaults to the shipped default model.", envvar="IMPROV_MODEL")] = None,
    call: Annotated[Optional[Path], typer.Option(help="A MIDI file whose notes are the call to answer (its first track with notes, or --track); without it, a built-in phrase.")] = None,
    track: Annotated[Optional[int], typer.Option(help="Which track of the --call file: 0 is its first track with notes.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The MIDI file to write: the call and the answer as two tracks.")] = Path("demo.mid"),
    png: Annotated[Optional[Path], typer.Option(help="Also draw the call and the answer as a piano-roll PNG here.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same answer.")] = 0,
    bpm: Annotated[Optional[float], typer.Option(help="Tempo of the simulated session, in beats per minute (default: the --call file's, else 100).")] = None,
    mode: Annotated[str, typer.Option(help="call: answer the phrase once it ends; duet: play along with it.")] = "call",
    config: Annotated[Optional[Path], typer.Option(help="A TOML settings file (see improv/settings.py); --bpm, --seed and --mode override it.", envvar="IMPROV_CONFIG")] = None,
) -> None:
    """Hear improv answer a phrase (built in, or --call FILE.mid): the real engine on a simulated clock, no MIDI system needed; prints a piano roll and writes demo.mid."""
    from improv.demo import DemoOptions, run_demo

    run_demo(model, DemoOptions(out=out, png=png, seed=seed, bpm=bpm, mode=mode, config=config, call=call,
                                track=track))
