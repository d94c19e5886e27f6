"""Keys: Krumhansl-Schmuckler detection from what the player played, and parsing a given key.

`detect_key` correlates a duration-weighted pitch-class histogram with the 24 rotated
Krumhansl-Kessler profiles and returns the best (tonic, mode) with its correlation as the
confidence (-1..1; above ~0.6 is a clear key, short or chromatic phrases score lower).

`scale_pitch_classes` is what the key lock allows (`improv.sampling.key_mask`): the major scale,
or for minor the natural minor plus the raised 7th. Natural minor alone would forbid the leading
tone that minor-key music (Bach chorales above all) uses at every cadence; harmonic minor alone
would forbid the flat 7th of a descending line. `NOTE_NAMES` spells pitch classes for all of improv.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from improv.errors import ConfigError

MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor + leading tone
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY_RE = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]*)\s*(.*?)\s*$")
_MODES = {"": "major", "maj": "major", "major": "major", "m": "minor", "min": "minor", "minor": "minor"}


@dataclass(frozen=True, slots=True)
class Key:
    tonic: int  # pitch class 0..11, C = 0
    mode: str  # "major" | "minor"
    confidence: float = 1.0  # correlation for a detected key; 1.0 for a given one

    @property
    def pitch_classes(self) -> frozenset[int]:
        return scale_pitch_classes(self.tonic, self.mode)

    @property
    def name(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"


def scale_pitch_classes(tonic: int, mode: str) -> frozenset[int]:
    """Pitch classes (0 = C) the key lock allows in `mode` ("major" | "minor") on `tonic`."""
    steps = MINOR_STEPS if mode == "minor" else MAJOR_STEPS
    return frozenset((tonic + s) % 12 for s in steps)


def pitch_class_histogram(notes: Iterable[tuple[int, float]]) -> np.ndarray:
    """(pitch, weight) pairs, e.g. weight = duration in beats -> (12,) weights."""
    hist = np.zeros(12)
    for pitch, weight in notes:
        hist[int(pitch) % 12] += max(0.0, float(weight))
    return hist


def detect_key(notes: Iterable[tuple[int, float]] | np.ndarray) -> Key | None:
    """Best key for (pitch, weight) pairs (or a (12,) histogram); None if there is nothing to go on.
    Pearson correlation with the 24 rotated profiles as one matrix product (the engine thread
    calls this between events)."""
    hist = np.asarray(notes, dtype=float) if _is_histogram(notes) else pitch_class_histogram(notes)
    if hist.sum() <= 0 or np.count_nonzero(hist) < 2:
        return None
    centred = hist - hist.mean()
    spread = float(centred @ centred)
    if spread <= 1e-12:  # every pitch class alike: no key to tell
        return None
    r = _PROFILES_Z @ centred / np.sqrt(spread)  # (24,): 12 major tonics, then 12 minor
    best = int(np.argmax(r))  # the first maximum: major before minor, lower tonic first
    return Key(best % 12, "major" if best < 12 else "minor", float(r[best]))


def _standardised_rows(profile: np.ndarray) -> np.ndarray:
    rows = np.stack([np.roll(profile, tonic) for tonic in range(12)]).astype(float)  # (12, 12)
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


_PROFILES_Z = np.concatenate([_standardised_rows(np.asarray(MAJOR_PROFILE, dtype=float)),
                              _standardised_rows(np.asarray(MINOR_PROFILE, dtype=float))])  # (24, 12)


def _is_histogram(notes: object) -> bool:
    return isinstance(notes, np.ndarray) and notes.shape == (12,)


def parse_key(text: str) -> Key:
    """'C', 'A minor', 'F#m', 'Bb major', 'eb min' -> Key; ConfigError naming the fix otherwise."""
    match = _KEY_RE.match(text or "")
    mode = _MODES.get(match.group(3).lower()) if match else None
    if match is None or mode is None or len(match.group(2)) > 1:
        raise ConfigError(f"key {text!r} is not a key; write e.g. 'C', 'A minor', 'F#m' or 'Bb major'")
    tonic = _LETTERS[match.group(1).upper()] + {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}[match.group(2)]
    return Key(tonic % 12, mode, 1.0)
