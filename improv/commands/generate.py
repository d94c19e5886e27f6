"""`improv generate`: continue a seed (a MIDI file, a corpus piece, or nothing) with a step model and
write the seed and the continuation as two MIDI tracks, optionally with a piano-roll PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="The MIDI file to write: the seed and the continuation as two tracks.")],
    model: Annotated[str | None, typer.Option(
        help="A model folder, its model.json, or a name under models/. Defaults to the shipped default model.",
        envvar="IMPROV_MODEL")] = None,
    seed_midi: Annotated[Path | None, typer.Option(
        help="Continue this MIDI file (all of it, or its first --seed-beats beats).")] = None,
    seed_corpus: Annotated[str | None, typer.Option(
        help="Continue the opening of a corpus piece: a music21 corpus name such as bach (needs music21), "
        "or a data file or folder such as jsb_chorales.tgz.")] = None,
    seed_piece: Annotated[int, typer.Option(help="Which piece of --seed-corpus, counting from 0.")] = 0,
    seed_beats: Annotated[float | None, typer.Option(
        help="How much of the seed to use, in beats. Default: 8 for a corpus piece, all of a MIDI file.")] = None,
    beats: Annotated[float, typer.Option(help="How many beats to generate after the seed.")] = 16.0,
    temperature: Annotated[float, typer.Option(
        help="Sampling temperature; 0 always takes the most likely token.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample only among the k most likely tokens; 0 turns this off.")] = 0,
    top_p: Annotated[float, typer.Option(
        help="Sample only among the most likely tokens that together hold this much probability; 1 turns this off.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Random seed, so that a run can be repeated exactly.")] = None,
    max_polyphony: Annotated[int, typer.Option(
        help="Never start a note while this many sound (event models); 0 means no limit.")] = 0,
    bpm: Annotated[float, typer.Option(help="Tempo written into the MIDI file, in beats per minute.")] = 120.0,
    png: Annotated[Path | None, typer.Option(
        help="Also draw a piano-roll PNG here (seed and continuation in two colours).")] = None,
    adapt: Annotated[bool, typer.Option(
        help="Let a session memory listen to the seed and the continuation as they stream, mixed in "
        "as `improv run` does, so the continuation takes up the seed's figures.")] = False,
) -> None:
    """Continue a seed (a MIDI file, a corpus piece, or nothing) with a model and write MIDI."""
    from improv.generate import GenerateOptions, generate, summary

    result = generate(model, GenerateOptions(
        out=out, seed_midi=seed_midi, seed_corpus=seed_corpus, seed_piece=seed_piece,
        seed_beats=seed_beats, beats=beats, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        max_polyphony=max_polyphony, png=png, bpm=bpm, adapt=adapt,
    ))
    typer.echo(summary(result, out, png))
