"""Which intervals sound together: the consonances the duet's reaction may make with the keys held.

Unisons and octaves, thirds, fourths, fifths and sixths, in any octave (intervals mod 12); the
seconds, sevenths and the tritone are left out. Tables by pitch class, built once.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

CONSONANT = (0, 3, 4, 5, 7, 8, 9)  # intervals (mod 12) that may sound with a note


def _with(key_class: int) -> np.ndarray:
    classes = np.zeros(12, dtype=bool)
    classes[[(key_class + i) % 12 for i in CONSONANT]] = True
    return classes


CONSONANT_WITH = np.array([_with(c) for c in range(12)])  # (12, 12): row c, the classes consonant with class c


def consonant_classes(keys: Collection[int]) -> np.ndarray:
    """(12,) the pitch classes consonant with every one of `keys` (all of them for none)."""
    classes = np.ones(12, dtype=bool)
    for key in keys:
        classes &= CONSONANT_WITH[key % 12]
    return classes
