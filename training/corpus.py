"""Music files and music21 corpora -> `Piece` (notes in beats, with the part each note came from).

Every parser here is a plain module-level function ``parse(path, normalize_key) -> list[Piece | Skip]``
so that `training.pool` can run it in a worker process it is allowed to kill. A parser raises on a
file it cannot read; the caller turns that into a one-line skip reason.

Time is in beats: ``quarterLength`` for music21 scores, ``ticks / ticks_per_beat`` for MIDI (tempo
changes are ignored on purpose: the token scheme is tempo-free). Key analysis, when asked for, is
music21's ``score.analyze('key')`` for scores and `improv.keys.detect_key` (Krumhansl-Schmuckler)
over a duration-weighted pitch-class histogram for MIDI files and JSB grids (`key_shift_of`), where
building a music21 stream just to analyse it would cost more than the parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from improv.errors import ConfigError, DataError
from improv.keys import detect_key
from improv.tokens import DEFAULT_VELOCITY, Note

PARSER_VERSION = 2  # bump when a parser's output changes: it is part of every cache key
NOTE_COLUMNS = ("onset_beats", "duration_beats", "pitch", "velocity", "voice")


@dataclass(frozen=True, eq=False)
class Piece:
    """One piece: `notes` is (N, 5) float64 with `NOTE_COLUMNS`, sorted by onset then pitch.

    ``voice`` is the part index (0 = the first part of a score, which in chorales is the soprano);
    the event scheme ignores it, the grid scheme needs it. ``key_shift`` is the transposition in
    semitones (-6..+5) that moves the piece to C major / A minor; 0 unless key analysis ran.
    """

    name: str
    notes: np.ndarray
    key_shift: int = 0

    def to_notes(self, transpose: int = 0) -> list[Note]:
        """The notes as `improv.tokens.Note`, transposed by `transpose` semitones."""
        return [Note(float(on), float(dur), int(p) + transpose, int(vel))
                for on, dur, p, vel, _ in self.notes]


@dataclass(frozen=True)
class Skip:
    """A piece or file that yielded nothing usable, and why (one line)."""

    name: str
    reason: str


def notes_array(rows: Iterable[tuple[float, float, int, int, int]]) -> np.ndarray:
    """Rows of (onset, duration, pitch, velocity, voice) -> sorted (N, 5) float64 array."""
    arr = np.array(list(rows), dtype=np.float64).reshape(-1, len(NOTE_COLUMNS))
    arr[:, 1] = np.maximum(arr[:, 1], 0.0)
    return arr[np.lexsort((arr[:, 4], arr[:, 2], arr[:, 0]))]


def _piece(name: str, rows: list, normalize_key: bool, key_of: Callable[[], int] | None = None) -> Piece | Skip:
    if not rows:
        return Skip(name, "no notes")
    notes = notes_array(rows)
    if not normalize_key:
        return Piece(name, notes)
    return Piece(name, notes, key_of() if key_of else key_shift_of(notes))


# --------------------------------------------------------------------------- key analysis


def key_shift_of(notes: np.ndarray) -> int:
    """`shift_to_c` of the key `improv.keys.detect_key` finds in (N, 5) notes (weight: duration,
    at least 1e-3 beat); 0 when the notes show no key (fewer than two pitch classes)."""
    weights = np.maximum(notes[:, 1], 1e-3)
    key = detect_key(np.bincount(notes[:, 2].astype(np.int64) % 12, weights=weights, minlength=12))
    return 0 if key is None else shift_to_c(key.tonic, key.mode)


def shift_to_c(tonic_pc: int, mode: str) -> int:
    """Semitones (-6..+5) that move a key to C major (or A minor for a minor key)."""
    shift = ((0 if mode != "minor" else 9) - tonic_pc) % 12
    return shift - 12 if shift > 5 else shift


# --------------------------------------------------------------------------- MIDI (mido)


def parse_midi(path: Path, normalize_key: bool = False) -> list[Piece | Skip]:
    """A .mid file with mido: beats = ticks / ticks_per_beat, velocities kept, channel 10 dropped.

    A re-struck pitch (same channel) ends the sounding note; notes left open end with their track.
    Voices are the tracks of a type-1 file (channels otherwise), renumbered from 0 in order.
    """
    import mido

    from improv.midifile import track_sounded

    midi = mido.MidiFile(str(path))
    if midi.ticks_per_beat <= 0:
        raise ValueError(f"unsupported time division {midi.ticks_per_beat} (SMPTE)")
    rows: list[tuple[float, float, int, int, int]] = []
    for index, track in enumerate(midi.tracks):
        for n in track_sounded(track):
            voice = index if midi.type == 1 else n.channel
            rows.append((n.start / midi.ticks_per_beat, (n.end - n.start) / midi.ticks_per_beat, n.pitch, n.velocity, voice))
    voices = {v: i for i, v in enumerate(sorted({r[4] for r in rows}))}
    rows = [(*r[:4], voices[r[4]]) for r in rows]
    return [_piece("", rows, normalize_key)]


# --------------------------------------------------------------------------- scores (music21)


def parse_score(path: Path, normalize_key: bool = False) -> list[Piece | Skip]:
    """A **kern or MusicXML file with music21; an Opus gives one piece per score."""
    from music21 import converter, stream

    parsed = converter.parse(path, forceSource=True, storePickle=False)
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    names = [""] if len(scores) == 1 else [f"#{i + 1}" for i in range(len(scores))]
    return [score_piece(name, s, normalize_key) for name, s in zip(names, scores)]


def score_piece(name: str, score, normalize_key: bool = False) -> Piece | Skip:
    """A music21 score -> Piece: ties merged, rests/grace notes/unpitched skipped, chords expanded."""
    from music21 import chord, note, percussion

    rows = []
    score.stripTies(inPlace=True)  # in place: a copy would cost 4x the parse, and the score is ours
    parts = list(score.parts) or [score]
    for voice, part in enumerate(parts):
        for el in part.flatten().notes:
            if el.duration.isGrace or not isinstance(el, (note.Note, chord.Chord)):
                continue
            if isinstance(el, percussion.PercussionChord):
                continue
            velocity = el.volume.velocity or DEFAULT_VELOCITY
            rows += [(float(el.offset), float(el.quarterLength), int(round(p.ps)), velocity, voice)
                     for p in el.pitches]
    return _piece(name, rows, normalize_key, lambda: _music21_key_shift(score))


def _music21_key_shift(score) -> int:
    key = score.analyze("key")
    return shift_to_c(key.tonic.pitchClass, key.mode)


def parse_abc(path: Path, normalize_key: bool = False) -> list[Piece | Skip]:
    """An ABC file, one piece per tune (``X:`` block), so one bad tune does not lose the others.

    Lines before the first ``X:`` are the file header and are prepended to every tune.
    """
    from music21 import converter, stream

    text = Path(path).read_text(encoding="utf-8", errors="replace")
    header, *tunes = re.split(r"(?m)^(?=X:)", text)
    if not tunes:
        raise ValueError("no ABC tune (no X: line)")
    results: list[Piece | Skip] = []
    for i, tune in enumerate(tunes):
        name = "" if len(tunes) == 1 else f"#{i + 1}"
        try:
            parsed = converter.parseData(header + tune, format="abc")
            score = parsed.scores[0] if isinstance(parsed, stream.Opus) else parsed
            results.append(score_piece(name, score, normalize_key))
        except Exception as err:  # noqa: BLE001 - a tune that music21 rejects is skipped, not fatal
            results.append(Skip(name, describe_error(err)))
    return results


def describe_error(err: BaseException) -> str:
    """An exception as one short line for the skip summary."""
    text = " ".join(str(err).split())
    line = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return line if len(line) <= 160 else line[:157] + "..."


# Extension -> parser. Resolved in the parent process, so tests can register a parser for a fake
# extension with monkeypatch and the worker receives the function itself.
PARSERS: dict[str, Callable[[Path, bool], list[Piece | Skip]]] = {
    ".mid": parse_midi, ".midi": parse_midi, ".krn": parse_score, ".musicxml": parse_score,
    ".mxl": parse_score, ".xml": parse_score, ".abc": parse_abc,
}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Source:
    """One file to parse and the name its pieces get (a tune number is appended for opus files)."""

    path: Path
    name: str


def expand_data(paths: Sequence[Path]) -> list[Source]:
    """Files as given; folders recursively in sorted order, keeping only known music extensions."""
    sources: list[Source] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PARSERS)
            sources += [Source(f, f.as_posix()) for f in files]
        elif path.is_file():
            sources.append(Source(path, path.as_posix()))
        else:
            raise DataError(f"{path}: no such file or folder; pass .mid/.krn/.musicxml/.abc files or folders")
    return sources


def _corpus_dir() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def _bach_chorales() -> list[Source]:
    """The chorales of music21's Bach corpus, in Riemenschneider order, duplicates dropped."""
    from music21 import corpus

    root, seen, sources = _corpus_dir(), set(), []
    for work in corpus.chorales.Iterator(returnType="filename"):  # 'bach/bwv269'
        if work in seen:
            continue
        seen.add(work)
        path = next((root / f"{work}{ext}" for ext in (".mxl", ".xml", ".krn") if (root / f"{work}{ext}").is_file()), None)
        if path is not None:
            sources.append(Source(path, f"{work}{path.suffix}"))
    return sources


def _corpus_folder(folder: str, label: str, extensions: tuple[str, ...] = (".abc",)) -> Callable[[], list[Source]]:
    """The files of one folder of music21's corpus with these extensions, sorted, named label/file."""
    def find() -> list[Source]:
        root = _corpus_dir() / folder
        paths = sorted(p for p in root.glob("*") if p.is_file() and p.suffix.lower() in extensions)
        return [Source(p, f"{label}/{p.name}") for p in paths]

    return find


# Name -> the files of a corpus shipped inside music21 (nothing is downloaded). What each holds (tunes
# or files in music21 10): bach 349 chorales (4 voices); essen 8,514 German and Chinese folk songs; oneills
# 2,009 Irish tunes; ryans 1,059 tunes of Ryan's Mammoth Collection; airds 1,180 Scottish airs;
# miscfolk 185 American fife and Northumbrian tunes; nottingham the 2 reels music21 keeps of the
# Nottingham dataset; palestrina 1,318 mass movements (4-6 voices, **kern); monteverdi 49 madrigals
# (5 voices); trecento 103 Italian 14th-century songs (2-3 voices). Not here: the corpus's single
# works of other composers, and josquin (each voice an ABC tune of its own).
CORPORA: dict[str, Callable[[], list[Source]]] = {
    "bach": _bach_chorales,
    "essen": _corpus_folder("essenFolksong", "essen"),
    "oneills": _corpus_folder("oneills1850", "oneills"),
    "ryans": _corpus_folder("ryansMammoth", "ryans"),
    "airds": _corpus_folder("airdsAirs", "airds"),
    "miscfolk": _corpus_folder("miscFolk", "miscfolk"),
    "nottingham": _corpus_folder("nottingham-dataset", "nottingham"),
    "palestrina": _corpus_folder("palestrina", "palestrina", (".krn",)),
    "monteverdi": _corpus_folder("monteverdi", "monteverdi", (".mxl",)),
    "trecento": _corpus_folder("trecento", "trecento", (".xml", ".mxl")),
}


def corpus_sources(name: str) -> list[Source]:
    """The files of one corpus shipped inside music21 (nothing is downloaded)."""
    if name not in CORPORA:
        raise ConfigError(f"unknown corpus {name!r}; use one of {', '.join(CORPORA)}")
    return CORPORA[name]()
