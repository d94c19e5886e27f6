"""The JSB chorales 16th-note benchmark (Hands-On ML's `jsb_chorales.tgz`) with its own split.

Each CSV row is one 16th-note step of 4 MIDI pitches, soprano first, 0 = silence. With
`JSB_TOKEN_CONFIG` and `improv.tokens.grid_to_ids` that is exactly the 47-class encoding of the
book: 0 = silence, 1..46 = MIDI 36..81. The tarball is read in place with `tarfile`; an extracted
folder with ``train/ valid/ test/`` of ``chorale_*.csv`` works the same. The benchmark's
229/76/77 split is kept as published, so results compare with the literature.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np

from improv.errors import DataError
from improv.tokens import TokenConfig, Vocabulary, encode_notes, grid_to_ids, grid_to_notes
from training.corpus import key_shift_of, notes_array

JSB_TOKEN_CONFIG = TokenConfig(scheme="grid", pitch_min=36, pitch_max=81, grid_voices=4, grid_steps_per_beat=4)
SPLITS = ("train", "valid", "test")
STEPS_PER_BEAT = 4  # one CSV row is a 16th note
_MEMBER = re.compile(r"(?:^|/)(train|valid|test)/(chorale_\d+)\.csv$")

Chorales = dict[str, list[tuple[str, np.ndarray]]]  # split -> [(name, (T, 4) int64 frames)]


def is_jsb(path: Path) -> bool:
    """True for the benchmark tarball, or a folder holding its train/valid/test CSVs."""
    path = Path(path)
    if path.is_dir():
        return all(any((path / split).glob("chorale_*.csv")) for split in SPLITS)
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
        try:
            with tarfile.open(path, "r:gz") as tar:
                return any(_MEMBER.search(name) for name in tar.getnames())
        except (tarfile.TarError, OSError, EOFError):
            return False
    return False


def read_jsb(path: Path) -> Chorales:
    """Every chorale of the benchmark, per split, sorted by chorale number."""
    path = Path(path)
    found: Chorales = {split: [] for split in SPLITS}
    for split, name, text in _csv_texts(path):
        found[split].append((name, _frames(text, f"{path}:{split}/{name}")))
    for split in SPLITS:
        found[split].sort(key=lambda item: item[0])
        if not found[split]:
            raise DataError(f"{path}: no {split}/chorale_*.csv; pass jsb_chorales.tgz or its extracted folder")
    return found


def _csv_texts(path: Path):
    if path.is_dir():
        for csv in sorted(path.glob("*/chorale_*.csv")):
            if csv.parent.name in SPLITS:
                yield csv.parent.name, csv.stem, csv.read_text()
        return
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            match = _MEMBER.search(member.name)
            if match and member.isfile():
                yield match[1], match[2], tar.extractfile(member).read().decode()


def _frames(text: str, where: str) -> np.ndarray:
    try:
        frames = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise DataError(f"{where}: not a JSB chorale CSV ({err}); re-extract jsb_chorales.tgz") from err
    if frames.shape[1] != 4:
        raise DataError(f"{where}: expected 4 voices per row, found {frames.shape[1]}; re-extract jsb_chorales.tgz")
    return frames


def frames_to_notes(frames: np.ndarray) -> np.ndarray:
    """(T, 4) frames -> (N, 5) notes array (voice 0 = soprano); held and repeated notes merge."""
    rows = []
    for voice in range(frames.shape[1]):
        column = np.zeros_like(frames)
        column[:, voice] = frames[:, voice]
        rows += [(n.onset_beats, n.duration_beats, n.pitch, n.velocity, voice)
                 for n in grid_to_notes(column, STEPS_PER_BEAT)]
    return notes_array(rows)


def key_shift(frames: np.ndarray, pitch_min: int, pitch_max: int) -> int:
    """Semitones that move a chorale to C major / A minor (`training.corpus.key_shift_of`).

    An octave is added or dropped when the shift would leave pitch_min..pitch_max; 0 if none fits.
    """
    sounding = frames[frames > 0]
    if not len(sounding):
        return 0
    shift = key_shift_of(frames_to_notes(frames))
    for candidate in (shift, shift + 12, shift - 12):
        if pitch_min <= sounding.min() + candidate and sounding.max() + candidate <= pitch_max:
            return candidate
    return 0


def transpose(frames: np.ndarray, shift: int) -> np.ndarray:
    """Frames with every sounding pitch moved by `shift` semitones (silence stays 0)."""
    moved = frames.copy()
    moved[moved > 0] += shift
    return moved


def encode_frames(frames: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Grid ids for a grid vocabulary (the benchmark), else event ids of the chorale's notes."""
    if vocab.config.scheme == "grid":
        if vocab.config.grid_voices != frames.shape[1]:
            raise DataError(f"JSB chorales have 4 voices; the token config has grid_voices={vocab.config.grid_voices}")
        return grid_to_ids(frames, vocab)
    return encode_notes(grid_to_notes(frames, STEPS_PER_BEAT), vocab)
