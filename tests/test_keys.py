"""Key detection over all 24 keys, the key lock's scales, and key names that parse back."""

from __future__ import annotations

import numpy as np
import pytest

from improv.errors import ConfigError
from improv.keys import NOTE_NAMES, Key, detect_key, parse_key, scale_pitch_classes

# Scale up an octave (one beat a note), then a cadence I-IV-V-I (i-iv-V-i), the last chord held.
MAJOR_PASSAGE = [(p, 1.0) for p in (0, 2, 4, 5, 7, 9, 11, 12)] + [
    (p, 1.0) for p in (0, 4, 7, 5, 9, 12, 7, 11, 14)] + [(p, 2.0) for p in (0, 4, 7)]
MINOR_PASSAGE = [(p, 1.0) for p in (0, 2, 3, 5, 7, 8, 11, 12)] + [
    (p, 1.0) for p in (0, 3, 7, 5, 8, 12, 7, 11, 14)] + [(p, 2.0) for p in (0, 3, 7)]
ALL_KEYS = [(tonic, mode) for mode in ("major", "minor") for tonic in range(12)]


def passage(tonic: int, mode: str) -> list[tuple[int, float]]:
    """(MIDI pitch, beats) of the scale and cadence of one key, from the tonic above middle C."""
    return [(60 + tonic + p, beats) for p, beats in (MAJOR_PASSAGE if mode == "major" else MINOR_PASSAGE)]


@pytest.mark.parametrize(("tonic", "mode"), ALL_KEYS, ids=[f"{NOTE_NAMES[t]}-{m}" for t, m in ALL_KEYS])
def test_every_key_is_detected(tonic, mode):
    key = detect_key(passage(tonic, mode))
    assert (key.tonic, key.mode) == (tonic, mode), f"{NOTE_NAMES[tonic]} {mode} read as {key.name}"
    assert key.confidence > 0.6


def test_a_histogram_gives_the_same_key_as_its_notes():
    notes = passage(2, "minor")
    hist = np.zeros(12)
    for pitch, beats in notes:
        hist[pitch % 12] += beats
    assert detect_key(hist) == detect_key(notes)


def test_no_key_without_at_least_two_pitch_classes():
    assert detect_key([]) is None and detect_key([(60, 1.0), (72, 3.0)]) is None
    assert detect_key(np.ones(12)) is None  # every pitch class alike


def test_the_minor_key_lock_allows_both_sevenths():
    assert scale_pitch_classes(9, "minor") == frozenset({9, 11, 0, 2, 4, 5, 7, 8})  # A minor: G and G#
    assert scale_pitch_classes(2, "major") == frozenset({2, 4, 6, 7, 9, 11, 1})


@pytest.mark.parametrize(("tonic", "mode"), ALL_KEYS)
def test_key_names_parse_back(tonic, mode):
    assert parse_key(Key(tonic, mode).name) == Key(tonic, mode)


def test_key_spellings():
    assert parse_key("F#m") == Key(6, "minor") and parse_key("eb min") == Key(3, "minor")
    assert parse_key("Bb major") == parse_key("A#") == Key(10, "major")
    with pytest.raises(ConfigError, match="not a key"):
        parse_key("H")
