"""How the duet's reactions sound with the player's keys: the share consonant with every key held.

    IMPROV_CACHE=~/cache .venv/bin/python -m benchmarks.profiles.reaction_choice [--model general-lstm] [--calls 8] [--seeds 3]

Mode "duet" through `improv.demo.answer_call` (the real engine on a simulated clock, default
settings) over the openings of held-out pieces (`benchmarks.music.held_out_calls`: Bach chorales of
the test split, Essen, O'Neill's). A reaction is a duet note-on planned at the instant of a
player's note-on; for each, the intervals (mod 12) to the keys held then, the struck one included.
Consonant: 0, 3, 4, 5, 7, 8, 9 semitones (`improv.consonance.CONSONANT`). Findings: docs/TIMING.md.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

CONSONANT = (0, 3, 4, 5, 7, 8, 9)  # written out: the script also measures commits before improv.consonance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="general-lstm", help="a model name under models/ or a model folder")
    parser.add_argument("--calls", type=int, default=8, help="calls per corpus")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per call")
    args = parser.parse_args(argv)
    from benchmarks.music import held_out_calls
    from improv.model_step import StepModel

    model = StepModel.load(args.model)
    print(f"{args.model}, duet, {args.calls} calls x {args.seeds} seeds per corpus:")
    for corpus in ("bach", "essen", "oneills"):
        calls = held_out_calls(corpus, args.calls, os.environ.get("IMPROV_CACHE"))
        tally = Counter()
        for call in calls:
            for seed in range(args.seeds):
                tally.update(reactions(model, call, seed))
        n = tally["reactions"]
        print(f"  {corpus:8s} {n:4d} reactions to {tally['note_ons']:4d} note-ons; consonant with every key held "
              f"{tally['with_all'] / max(n, 1):.2f}, with the struck key {tally['with_struck'] / max(n, 1):.2f}")


def reactions(model, call, seed: int) -> Counter:
    """Counts over one call: note_ons, reactions, with_all (consonant with every key held), with_struck."""
    from improv.demo import answer_call, call_events
    from improv.events import NoteOn
    from improv.settings import load_settings

    settings = load_settings(None, {"time.bpm": 100.0, "sampling.seed": seed, "mode.mode": "duet"})
    engine, _ = answer_call(model, settings, call)
    events = call_events(settings.time.bpm, call)
    ons = {}
    for r in engine.scheduler.records:
        if r.source == "duet" and r.message.type == "note_on" and r.message.velocity > 0:
            ons.setdefault(round(r.planned_s, 9), r.message.note)
    tally, held = Counter(), set()
    for ev in events:
        if not isinstance(ev, NoteOn):
            held.discard(ev.pitch)
            continue
        held.add(ev.pitch)
        tally["note_ons"] += 1
        pitch = ons.pop(round(ev.t_s, 9), None)
        if pitch is None:
            continue
        tally["reactions"] += 1
        tally["with_all"] += all((pitch - key) % 12 in CONSONANT for key in held)
        tally["with_struck"] += (pitch - ev.pitch) % 12 in CONSONANT
    return tally


if __name__ == "__main__":
    main()
