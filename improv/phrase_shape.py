"""What a phrase is like, as a musician hears it: texture, register, density, rhythm, dynamics.

Measured the same way for the player's call (so the answer can follow it) and for the answer (so
tests and `improv bench` can say how closely it did): notes per onset (1.0: a single line),
the median pitch and the range, notes per beat, and the velocity level with its accents by
position in the beat and the bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from improv.tokens import Note

ONSET_TOLERANCE_BEATS = 1 / 24  # notes starting this close together are one onset (a chord)
POSITIONS_PER_BEAT = 4  # accents are learned per 16th of the bar


@dataclass(frozen=True)
class PhraseShape:
    notes: int
    notes_per_onset: float  # 1.0: a single line
    max_chord: int  # the most notes starting together
    median_pitch: float
    low: int
    high: int
    notes_per_beat: float
    velocity: float  # mean
    accents: dict[int, float]  # position in the bar (16ths) -> mean velocity there minus `velocity`

    @classmethod
    def of(cls, notes: Sequence[Note], beats_per_bar: int = 4, span_beats: float | None = None) -> PhraseShape | None:
        """The shape of `notes` (None if there are none); `span_beats`: the phrase's length, else
        from its first onset to its last note's end."""
        if not notes:
            return None
        onsets = _onsets(notes)
        pitches = np.array([n.pitch for n in notes])
        first = min(n.onset_beats for n in notes)
        end = max(n.onset_beats + n.duration_beats for n in notes)
        span = span_beats if span_beats is not None else max(end - first, 1.0)
        velocities = np.array([n.velocity for n in notes], dtype=float)
        return cls(len(notes), len(notes) / len(onsets), max(onsets), float(np.median(pitches)),
                   int(pitches.min()), int(pitches.max()), len(notes) / max(span, 1e-9), float(velocities.mean()),
                   _accents(notes, float(velocities.mean()), beats_per_bar))

    @property
    def single_line(self) -> bool:
        return self.notes_per_onset < 1.25

    def velocity_at(self, beats: float, beats_per_bar: int = 4) -> int:
        """The velocity the phrase had at this position of the bar (its level where it had no note)."""
        accent = self.accents.get(_position(beats, beats_per_bar), 0.0)
        return max(1, min(127, round(self.velocity + accent)))


def _onsets(notes: Sequence[Note]) -> list[int]:
    """Notes per onset, in time order."""
    sizes, last = [], -math.inf
    for onset in sorted(n.onset_beats for n in notes):
        if onset - last > ONSET_TOLERANCE_BEATS:
            sizes.append(0)
            last = onset
        sizes[-1] += 1
    return sizes


def _position(beats: float, beats_per_bar: int) -> int:
    return int(round(beats * POSITIONS_PER_BEAT)) % (beats_per_bar * POSITIONS_PER_BEAT)


def _accents(notes: Sequence[Note], mean: float, beats_per_bar: int) -> dict[int, float]:
    by_position: dict[int, list[int]] = {}
    for n in notes:
        by_position.setdefault(_position(n.onset_beats, beats_per_bar), []).append(n.velocity)
    return {pos: float(np.mean(v)) - mean for pos, v in by_position.items()}
