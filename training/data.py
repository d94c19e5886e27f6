"""The one entry point from music to training data: `load_dataset` (and `load_pieces` for seeds).

Pipeline: inputs -> `training.corpus` sources -> `training.encode.load_sources` (cache, worker
processes with a per-file time limit) -> first `max_pieces` pieces -> split by piece -> augment the
train split -> vocabulary counted on train and pruned -> ids remapped -> `EncodedCorpus`.
`max_pieces` counts per input group (the --data files together, each corpus on its own).
The JSB 16th-note benchmark (`training.jsb`) keeps its published split and joins at the split step.

Splits are by piece, so no window of a valid/test piece is ever trained on: piece names are sorted,
then shuffled by a numpy Generator seeded with `split_seed` (80/10/10, each split non-empty from
3 pieces on). Same inputs + seed -> same split, whatever order the files were parsed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from improv.errors import ConfigError, DataError
from improv.tokens import Note, TokenConfig, Vocabulary
from training import jsb
from training.corpus import CORPORA, Piece, Source, corpus_sources, expand_data
from training.encode import (EncodedPiece, EncodeSettings, load_sources, remap_table, resolve_cache_dir,
                             transpose_ids, transpose_table)

if TYPE_CHECKING:
    from rich.console import Console

KEY_MODES = ("none", "normalize", "augment")
AUGMENT_SHIFTS = tuple(s for s in range(-6, 6) if s != 0)  # with the original: all 12 keys
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
MAX_LISTED_SKIPS = 30
NO_DATA_FIX = "pass a folder of .mid/.krn/.musicxml/.abc files or --corpus bach"

Named = list[tuple[str, np.ndarray]]  # (piece id, int32 ids)


@dataclass
class EncodedCorpus:
    """Token arrays per split, ready for `training.dataset` windows."""

    vocab: Vocabulary
    splits: dict[str, list[np.ndarray]]  # "train"/"valid"/"test" -> one int32 array per piece
    names: dict[str, list[str]]  # piece ids, parallel to splits (augmented copies end in "@+3")
    data_hash: str  # "sha256:<hex>" over vocab + names + arrays
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    description: str = ""


def load_dataset(*, data: Sequence[Path] = (), corpus: Sequence[str] = (), token_config: TokenConfig | None = None,
                 max_pieces: int | None = None, key: str = "none", min_count: int = 0, split_seed: int = 0,
                 cache_dir: Path | None = None, workers: int | None = None, file_timeout_s: float = 60.0,
                 console: Console | None = None, show_progress: bool = True) -> EncodedCorpus:
    """Parse (or read from the cache), encode and split music files and/or music21 corpora.

    `key`: ``none``; ``normalize`` (every piece to C major / A minor); ``augment`` (train pieces
    also in the 11 other keys, -6..+5 semitones, a shift skipped where it leaves the pitch range).
    `min_count > 0` prunes tokens seen fewer times in train (the vocabulary's fallback takes over).
    Unreadable files are skipped and listed; DataError if nothing usable remains.
    """
    _check_options(key, min_count, max_pieces)
    console = console or _stderr_console()
    paths = [Path(p) for p in data]
    if any(jsb.is_jsb(p) for p in paths):
        if len(paths) > 1 or corpus:
            raise ConfigError("the JSB benchmark has its own split; pass jsb_chorales.tgz alone, without other data")
        named, vocab, description = _jsb_splits(paths[0], token_config, key, max_pieces)
        return _finish(named, vocab, key, min_count, [], description)
    vocab = Vocabulary(token_config or TokenConfig())
    pieces, skipped, description = _encoded_pieces(
        paths, corpus, EncodeSettings(vocab.config, key == "normalize"), max_pieces,
        cache_dir=cache_dir, workers=workers, timeout_s=file_timeout_s, console=console, show_progress=show_progress)
    assignment = split_names([name for name, _ in pieces], split_seed)
    named = {s: [(name, p.ids) for name, p in pieces if assignment[name] == s] for s in SPLITS}
    result = _finish(named, vocab, key, min_count, skipped, description)
    if show_progress:
        counts = "/".join(str(len(result.splits[s])) for s in SPLITS)
        console.print(f"{description}: train/valid/test {counts} pieces, vocabulary {len(result.vocab)}")
    return result


def load_pieces(*, data: Sequence[Path] = (), corpus: Sequence[str] = (), max_pieces: int | None = None,
                key: str = "none", cache_dir: Path | None = None, workers: int | None = None,
                file_timeout_s: float = 60.0, console: Console | None = None,
                show_progress: bool = False) -> list[tuple[str, Piece]]:
    """(piece id, Piece) in input order, through the same cache as `load_dataset` (default tokens).

    ``piece.to_notes()`` gives the notes in their own key, ``piece.to_notes(piece.key_shift)`` in
    C major / A minor (the shift is non-zero only with ``key="normalize"``). JSB pieces come in
    split order (train, valid, test) and are named ``train/chorale_000``.
    """
    _check_options(key, 0, max_pieces)
    paths = [Path(p) for p in data]
    if len(paths) == 1 and not corpus and jsb.is_jsb(paths[0]):
        return _jsb_pieces(paths[0], key == "normalize", max_pieces)
    pieces, skipped, _ = _encoded_pieces(
        paths, corpus, EncodeSettings(TokenConfig(), key == "normalize"), max_pieces, cache_dir=cache_dir,
        workers=workers, timeout_s=file_timeout_s, console=console or _stderr_console(), show_progress=show_progress)
    return [(name, p.piece) for name, p in pieces]


def piece_notes(corpus: str, piece: int = 0, *, key: str = "none", cache_dir: Path | None = None) -> list[Note]:
    """The notes of the `piece`-th piece (from 0) of a corpus name (``bach``) or a file/folder path,
    e.g. the opening bars of a chorale as a seed for ``improv generate --seed-corpus bach``."""
    if piece < 0:
        raise ConfigError(f"piece index {piece} is negative; use 0 for the first piece")
    source = {"corpus": [corpus]} if corpus in CORPORA else {"data": [Path(corpus)]}
    pieces = load_pieces(**source, max_pieces=piece + 1, key=key, cache_dir=cache_dir)
    if len(pieces) <= piece:
        raise DataError(f"{corpus} has only {len(pieces)} usable pieces; pick a piece index below {len(pieces)}")
    found = pieces[piece][1]
    return found.to_notes(found.key_shift)


# --------------------------------------------------------------------------- steps


def _check_options(key: str, min_count: int, max_pieces: int | None) -> None:
    if key not in KEY_MODES:
        raise ConfigError(f"key={key!r} is not a key option; use one of {', '.join(KEY_MODES)}")
    if min_count < 0:
        raise ConfigError(f"min_count={min_count} is negative; use 0 to keep every token")
    if max_pieces is not None and max_pieces < 1:
        raise ConfigError(f"max_pieces={max_pieces} must be at least 1 (or None for all)")


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _sources(paths: list[Path], corpus: Sequence[str]) -> list[tuple[str, list[Source]]]:
    """(label, files) per input group: the --data paths together, then each corpus; every file once
    (the first group that names it keeps it)."""
    groups = [(", ".join(p.as_posix() for p in paths), expand_data(paths))] if paths else []
    groups += [(f"music21 corpus {name}", corpus_sources(name)) for name in corpus]
    seen, out = set(), []
    for label, group in groups:
        kept = [s for s in group if s.path.resolve() not in seen]
        seen.update(s.path.resolve() for s in kept)
        out.append((label, kept))
    return out


def _encoded_pieces(paths, corpus, settings, max_pieces, *, cache_dir, workers, timeout_s, console, show_progress):
    """([(piece id, EncodedPiece)] in input order, at most `max_pieces` from each input group (so
    several corpora in one run each give their share); skipped; description)."""
    if not paths and not corpus:
        raise DataError(f"no inputs; {NO_DATA_FIX}")
    groups = _sources(paths, corpus)
    description = " + ".join(label for label, _ in groups)
    pieces: list[tuple[str, EncodedPiece]] = []
    skipped: list[tuple[str, str]] = []
    with _progress(console, show_progress) as progress:
        for _, sources in groups:
            results = load_sources(sources, settings, cache_dir=resolve_cache_dir(cache_dir), max_pieces=max_pieces,
                                   workers=workers, timeout_s=timeout_s, progress=progress)
            found = [(source.name + p.piece.name, p) for source, result in zip(sources, results) for p in result.pieces]
            pieces += found[:max_pieces]
            skipped += [(source.name + s.name, s.reason) for source, result in zip(sources, results) for s in result.skipped]
    unit = "files/tunes" if any("#" in name for name, _ in pieces + skipped) else "files"
    print_skipped(console, skipped, len(pieces) + len(skipped), unit)
    if not pieces:
        raise DataError(f"no usable music in {description} ({len(skipped)} files skipped); {NO_DATA_FIX}")
    return pieces, skipped, f"{description}, {len(pieces)} pieces"


def _progress(console, show: bool):
    if not show:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


def print_skipped(console, skipped: list[tuple[str, str]], total: int, unit: str = "files") -> None:
    """The end-of-run summary: ``skipped K of N files:`` then one ``path: reason`` line each."""
    if not skipped:
        return
    from rich.markup import escape

    console.print(f"[yellow]skipped {len(skipped)} of {total} {unit}:[/]")
    for name, reason in skipped[:MAX_LISTED_SKIPS]:
        console.print(f"  {escape(name)}: {escape(reason)}", highlight=False)
    if len(skipped) > MAX_LISTED_SKIPS:
        console.print(f"  ... and {len(skipped) - MAX_LISTED_SKIPS} more")


def split_names(names: Sequence[str], seed: int = 0) -> dict[str, str]:
    """Piece id -> "train" | "valid" | "test": sorted, then a seeded shuffle, 80/10/10."""
    ordered = sorted(set(names))
    n = len(ordered)
    n_valid = max(1, round(n * SPLIT_FRACTIONS[1])) if n >= 2 else 0
    n_test = max(1, round(n * SPLIT_FRACTIONS[2])) if n >= 3 else 0
    order = np.random.default_rng(seed).permutation(n)
    labels = ["valid"] * n_valid + ["test"] * n_test + ["train"] * (n - n_valid - n_test)
    return {ordered[i]: label for i, label in zip(order, labels)}


def augment(items: Named, vocab: Vocabulary) -> Named:
    """Each piece followed by its transpositions -6..+5 that stay inside the vocabulary."""
    tables = {s: transpose_table(vocab, s) for s in AUGMENT_SHIFTS}
    out: Named = []
    for name, ids in items:
        out.append((name, ids))
        for shift, table in tables.items():
            moved = transpose_ids(ids, table)
            if moved is not None:
                out.append((f"{name}@{shift:+d}", moved))
    return out


def _finish(named: dict[str, Named], vocab: Vocabulary, key: str, min_count: int,
            skipped: list[tuple[str, str]], description: str) -> EncodedCorpus:
    """Augment train, count and prune the vocabulary on train, remap every split, hash."""
    if key == "augment":
        named = {**named, "train": augment(named["train"], vocab)}
    final = vocab
    if min_count > 0:
        train = [ids for _, ids in named["train"]]
        counts = np.bincount(np.concatenate(train), minlength=len(vocab)) if train else np.zeros(len(vocab), int)
        final = vocab.pruned(dict(zip(vocab.names, counts.tolist())), min_count)
    table = remap_table(vocab, final)
    splits = {s: [table[ids] for _, ids in named[s]] for s in SPLITS}
    names = {s: [name for name, _ in named[s]] for s in SPLITS}
    return EncodedCorpus(final, splits, names, data_hash(final, splits, names), list(skipped), description)


def data_hash(vocab: Vocabulary, splits: dict[str, list[np.ndarray]], names: dict[str, list[str]]) -> str:
    """sha256 over the vocabulary and every (name, ids) of every split, in order; stable across runs."""
    digest = hashlib.sha256(vocab.to_json().encode())
    for split in SPLITS:
        for name, ids in zip(names[split], splits[split]):
            digest.update(f"{split}\0{name}\0{len(ids)}\0".encode())
            digest.update(np.asarray(ids, dtype="<i4").tobytes())
    return f"sha256:{digest.hexdigest()}"


# --------------------------------------------------------------------------- JSB


def _jsb_splits(path: Path, token_config: TokenConfig | None, key: str, max_pieces: int | None):
    """The benchmark's own split, encoded; `max_pieces` caps each split (the split is fixed)."""
    vocab = Vocabulary(token_config or jsb.JSB_TOKEN_CONFIG)
    cfg = vocab.config
    named: dict[str, Named] = {}
    for split, chorales in jsb.read_jsb(path).items():
        frames = [(n, jsb.transpose(f, jsb.key_shift(f, cfg.pitch_min, cfg.pitch_max)) if key == "normalize" else f)
                  for n, f in chorales[:max_pieces]]
        named[split] = [(f"{split}/{n}", jsb.encode_frames(f, vocab)) for n, f in frames]
    sizes = "/".join(str(len(named[s])) for s in SPLITS)
    return named, vocab, f"JSB 16th-note CSVs ({path.name}), {sizes} chorales"


def _jsb_pieces(path: Path, normalize: bool, max_pieces: int | None) -> list[tuple[str, Piece]]:
    """Chorales as pieces in split order (train, valid, test), the first `max_pieces` of them."""
    chorales = [(f"{split}/{name}", frames) for split, items in jsb.read_jsb(path).items() for name, frames in items]
    return [(name, Piece(name, jsb.frames_to_notes(frames), jsb.key_shift(frames, 0, 127) if normalize else 0))
            for name, frames in chorales[:max_pieces]]
