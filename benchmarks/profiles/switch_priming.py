"""What priming a switched-in model costs: `improv.switch.prime` on a full note history (the last
`HISTORY_EVENTS` note events, a synthetic line of half-beat notes), per shipped model. The figures
in docs/LIVE.md ("Switching models live") come from

    .venv/bin/python -m benchmarks.profiles.switch_priming [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from improv.model_step import StepModel
from improv.note_history import HISTORY_EVENTS, HeardNote, NoteHistory
from improv.settings import ListenSettings
from improv.switch import make_slots, prime


def full_history(seed: int = 0) -> NoteHistory:
    history, rng, beats = NoteHistory(), np.random.default_rng(seed), 0.0
    while history.count < HISTORY_EVENTS:
        pitch = int(rng.integers(55, 80))
        history.add(HeardNote(beats, "on", pitch, 90))
        history.add(HeardNote(beats + 0.4, "off", pitch))
        beats += 0.5
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="a model (repeatable); default: the shipped two")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    models = [StepModel.load(m) for m in (args.model or ["bach-lstm", "bach-wavenet"])]
    notes = list(full_history().events)
    for slot in make_slots(models, ListenSettings(), None):
        times_ms = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            _, heard = prime(slot, notes, own_weight=0.3)
            times_ms.append((time.perf_counter() - t0) * 1e3)
        print(f"{slot.name}: {len(heard)} tokens from {len(notes)} note events: median "
              f"{statistics.median(times_ms):.1f} ms, min {min(times_ms):.1f} ms ({args.runs} runs)")


if __name__ == "__main__":
    main()
