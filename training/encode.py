"""Pieces -> token id arrays, and the on-disk cache that makes a second run parse nothing.

A file is parsed and encoded once (in a worker, see `training.pool`) with the FULL vocabulary of
the token config; pruning and augmentation work on those ids later, in the parent, with lookup
tables (`remap_table`, `transpose_table`). That keeps each cache entry independent of the split,
of ``min_count`` and of augmentation, so changing those never re-parses anything.

Cache entry: ``<cache_dir>/pieces-v1/<ab>/<sha256>.npz`` (no pickle), named by the hash of the
file's bytes plus every setting that changes its result (`EncodeSettings.fingerprint`). Written to
a temporary file and `os.replace`d, so an interrupted run never leaves half an entry; an entry that
fails to load is a miss. The temporary file is named after the host and process writing it, so the
next run removes what a killed run left (`sweep_temps`) without touching a live writer's file. A
cache that cannot be written (disk full, read-only) costs the caching, never the run.

A piece that would encode to more than `MAX_PIECE_TOKENS` tokens is skipped before any token is
built: a 45-byte MIDI file can claim 10^8 beats of silence, i.e. 10^8 SHIFT tokens and gigabytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from improv.tokens import ENCODING_VERSION, TokenConfig, Vocabulary, encode_notes, grid_to_ids, split_name
from training.corpus import PARSER_VERSION, PARSERS, Piece, Skip, Source, describe_error
from training.pool import Outcome, default_workers, run_jobs

CACHE_FORMAT = "pieces-v1"
DEFAULT_CACHE_DIR = Path(".cache") / "improv"
MAX_PIECE_TOKENS = 4_000_000  # ~100x a long piano piece; more is a broken or hostile file
TEMP_PREFIX = ".tmp-"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeSettings:
    """Everything that changes what a file encodes to (and so is part of its cache key)."""

    token_config: TokenConfig = field(default_factory=TokenConfig)
    normalize_key: bool = False

    def fingerprint(self, suffix: str) -> str:
        """The settings as JSON; `suffix` picks the parser (a swapped-in test parser keeps the key).
        A token setting at its default is left out, so entries cached before it existed stay valid."""
        token_config = dataclasses.asdict(self.token_config)
        if token_config["chord_order"] == "up":
            del token_config["chord_order"]
        return json.dumps({
            "format": CACHE_FORMAT, "suffix": suffix.lower(),
            "parser_version": PARSER_VERSION, "libraries": _library_versions(),
            "token_config": token_config, "normalize_key": self.normalize_key,
        }, sort_keys=True)


@cache
def _library_versions() -> dict[str, str]:
    versions = {}
    for name in ("music21", "mido"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


@dataclass(frozen=True, eq=False)
class EncodedPiece:
    """A parsed piece (original key) and its token ids in the full vocabulary (key shift applied)."""

    piece: Piece
    ids: np.ndarray  # (T,) int32


@dataclass(frozen=True)
class FileResult:
    """Everything one file gave; ``cacheable`` is False for failures that may not repeat, ``stale``
    True for a cached parse whose ids were encoded anew (an older ENCODING_VERSION)."""

    pieces: list[EncodedPiece]
    skipped: list[Skip]
    cacheable: bool = True
    stale: bool = False


# --------------------------------------------------------------------------- encoding


def encode_piece(piece: Piece, vocab: Vocabulary) -> np.ndarray:
    """One piece -> int32 ids: events (starting with BOS) or a 16th-note grid, in the piece's C key."""
    check_size(piece.notes, vocab.config)
    if vocab.config.scheme == "event":
        return encode_notes(piece.to_notes(piece.key_shift), vocab)
    frames = notes_to_grid(piece.notes, vocab.config)
    frames[frames > 0] += piece.key_shift
    return grid_to_ids(frames, vocab)


def check_size(notes: np.ndarray, config: TokenConfig) -> None:
    """ValueError if the notes would encode to more than MAX_PIECE_TOKENS tokens (cheap estimate)."""
    if not len(notes):
        return
    span_beats = float(np.max(notes[:, 0] + notes[:, 1]))
    if config.scheme == "event":  # SHIFTs for the time, at most ON + OFF (+ VEL) per note
        estimate = span_beats * config.ticks_per_beat / config.max_shift_ticks + 3 * len(notes)
    else:
        estimate = span_beats * config.grid_steps_per_beat * config.grid_voices
    if not estimate <= MAX_PIECE_TOKENS:  # (also NaN)
        raise ValueError(f"would encode to about {estimate:,.0f} tokens ({span_beats:,.0f} beats long); "
                         f"pieces are capped at {MAX_PIECE_TOKENS:,}")


def notes_to_grid(notes: np.ndarray, config: TokenConfig) -> np.ndarray:
    """(N, 5) notes with voices -> (T, grid_voices) MIDI pitches, 0 = silence, voice 0 first.

    A chord inside one voice keeps its highest pitch. Raises ValueError when the number of voices
    is not ``grid_voices`` (the grid scheme is for four-part chorales and the like).
    """
    voices = np.unique(notes[:, 4]).astype(int)
    if len(voices) != config.grid_voices:
        raise ValueError(f"has {len(voices)} parts; the grid scheme needs {config.grid_voices}")
    steps = config.grid_steps_per_beat
    start = np.round(notes[:, 0] * steps).astype(int)
    end = np.maximum(start + 1, np.round((notes[:, 0] + notes[:, 1]) * steps).astype(int))
    frames = np.zeros((int(end.max()), config.grid_voices), dtype=np.int64)
    column = {v: i for i, v in enumerate(voices)}
    for i in np.argsort(notes[:, 2], kind="stable"):  # ascending pitch: the highest is written last
        frames[start[i]:end[i], column[int(notes[i, 4])]] = int(notes[i, 2])
    return frames


def encode_file(parser, path: Path, settings: EncodeSettings) -> FileResult:
    """Parse one file and encode its pieces (runs in a worker process). Failures become skips."""
    vocab = Vocabulary(settings.token_config)
    try:
        parsed = parser(Path(path), settings.normalize_key)
    except MemoryError as err:
        return FileResult([], [Skip("", describe_error(err))], cacheable=False)
    except Exception as err:  # noqa: BLE001 - a bad file is skipped with its reason
        return FileResult([], [Skip("", describe_error(err))])
    pieces, skipped = [], []
    for item in parsed:
        if isinstance(item, Skip):
            skipped.append(item)
            continue
        try:
            pieces.append(EncodedPiece(item, encode_piece(item, vocab)))
        except ValueError as err:
            skipped.append(Skip(item.name, str(err)))
    return FileResult(pieces, skipped)


# --------------------------------------------------------------------------- id tables


def remap_table(source: Vocabulary, target: Vocabulary) -> np.ndarray:
    """(len(source),) int32: id in `source` -> id in `target` (with the target's fallback)."""
    return np.array([target.id(name) for name in source.names], dtype=np.int32)


def transpose_table(vocab: Vocabulary, semitones: int) -> np.ndarray:
    """(len(vocab),) int32: id -> id of the same token moved by `semitones`; -1 where out of range.

    Exact for the event scheme: transposing keeps the canonical within-tick order (pitches ascend).
    """
    table = np.arange(len(vocab), dtype=np.int32)
    for i, name in enumerate(vocab.names):
        kind, value = split_name(name)
        if kind in ("ON", "OFF", "P") and value is not None:
            moved = f"{kind}_{value + semitones}"
            table[i] = vocab.id(moved) if moved in vocab else -1
    return table


def transpose_ids(ids: np.ndarray, table: np.ndarray) -> np.ndarray | None:
    """`ids` through a `transpose_table`, or None when a pitch would leave the vocabulary."""
    moved = table[ids]
    return None if (moved < 0).any() else moved


# --------------------------------------------------------------------------- cache


def resolve_cache_dir(cache_dir: Path | None) -> Path:
    """The argument, else $IMPROV_CACHE, else .cache/improv under the current directory."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ["IMPROV_CACHE"]) if os.environ.get("IMPROV_CACHE") else Path.cwd() / DEFAULT_CACHE_DIR


def cache_path(cache_dir: Path, path: Path, settings: EncodeSettings) -> Path:
    """Where the entry for this file's bytes under these settings lives."""
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(settings.fingerprint(Path(path).suffix).encode())
    hex_ = digest.hexdigest()
    return cache_dir / CACHE_FORMAT / hex_[:2] / f"{hex_}.npz"


def write_entry(entry: Path, result: FileResult) -> None:
    """Atomically store a FileResult as .npz: temp file in the same folder, then os.replace."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    pieces = result.pieces
    meta = {"names": [p.piece.name for p in pieces], "key_shifts": [p.piece.key_shift for p in pieces],
            "skipped": [[s.name, s.reason] for s in result.skipped], "encoding": ENCODING_VERSION}
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "notes": np.concatenate([p.piece.notes for p in pieces]) if pieces else np.zeros((0, 5)),
        "note_offsets": np.cumsum([0] + [len(p.piece.notes) for p in pieces]),
        "ids": np.concatenate([p.ids for p in pieces]) if pieces else np.zeros(0, np.int32),
        "id_offsets": np.cumsum([0] + [len(p.ids) for p in pieces]),
    }
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=_temp_prefix(), suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _host_prefix() -> str:
    return f"{TEMP_PREFIX}{socket.gethostname().replace('-', '_') or 'host'}-"


def _temp_prefix() -> str:
    return f"{_host_prefix()}{os.getpid()}-"  # .tmp-<host>-<pid>-<random>.npz


def sweep_temps(cache_dir: Path) -> int:
    """Remove temporary files that writers on this host left when they were killed; returns how
    many. A file whose process still runs is left alone (it is being written)."""
    removed = 0
    here = _host_prefix()
    for tmp in Path(cache_dir, CACHE_FORMAT).glob(f"*/{TEMP_PREFIX}*"):
        if not tmp.name.startswith(here):
            continue  # another host's writer (a shared cache): not ours to judge
        pid = tmp.name[len(here):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def read_entry(entry: Path, vocab: Vocabulary) -> FileResult | None:
    """A stored FileResult, or None if missing or unreadable (a corrupt entry is just a miss).
    An entry written under an older ENCODING_VERSION keeps its parse: its ids are encoded anew
    from the stored notes (`FileResult.stale` says the entry is worth rewriting)."""
    try:
        with np.load(entry, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            notes, note_off = z["notes"], z["note_offsets"]
            ids, id_off = z["ids"].astype(np.int32), z["id_offsets"]
        if len(note_off) != len(meta["names"]) + 1 or len(id_off) != len(meta["names"]) + 1:
            return None
        pieces = [Piece(name, notes[note_off[i]:note_off[i + 1]], int(shift))
                  for i, (name, shift) in enumerate(zip(meta["names"], meta["key_shifts"], strict=True))]
        skipped = [Skip(n, r) for n, r in meta["skipped"]]
        if meta.get("encoding") != ENCODING_VERSION:
            return FileResult([EncodedPiece(p, encode_piece(p, vocab)) for p in pieces], skipped, stale=True)
        if len(ids) and not 0 <= ids.min() <= ids.max() < len(vocab):
            return None
        return FileResult([EncodedPiece(p, ids[id_off[i]:id_off[i + 1]]) for i, p in enumerate(pieces)], skipped)
    except Exception:  # noqa: BLE001 - missing, truncated, or from another format: re-parse
        return None


# --------------------------------------------------------------------------- files -> results


def load_sources(sources: Sequence[Source], settings: EncodeSettings, *, cache_dir: Path,
                 max_pieces: int | None = None, workers: int | None = None, timeout_s: float = 60.0,
                 progress=None) -> list[FileResult]:
    """One FileResult per source, in order, from the cache or from worker processes.

    With `max_pieces`, files are taken in batches from the front until the first `max_pieces`
    pieces are known, so a quick run on a large corpus parses only what it uses.
    """
    vocab = Vocabulary(settings.token_config)
    sweep_temps(cache_dir)
    results: list[FileResult] = []
    while len(results) < len(sources):
        have = sum(len(r.pieces) for r in results)
        if max_pieces is not None and have >= max_pieces:
            break
        size = len(sources) if max_pieces is None else max(max_pieces - have, workers or 1)
        batch = sources[len(results):len(results) + size]
        results += _load_batch(batch, settings, cache_dir, vocab, workers, timeout_s, progress)
    return results


def _load_batch(batch, settings, cache_dir, vocab, workers, timeout_s, progress) -> list[FileResult]:
    results: list[FileResult | None] = [None] * len(batch)
    misses: list[tuple[int, Path]] = []  # (index in batch, cache entry)
    for i, source in enumerate(batch):
        results[i], entry = _lookup(source, settings, cache_dir, vocab)
        if results[i] is None:
            misses.append((i, entry))
    if not misses:
        return results  # type: ignore[return-value]
    task = progress.add_task(f"parsing {len(misses)} files", total=len(misses)) if progress else None

    unwritable: list[OSError] = []

    def done(job: int, outcome: Outcome) -> None:
        i, entry = misses[job]
        result = outcome.value if outcome.ok else FileResult([], [Skip("", outcome.error)], cacheable=False)
        if result.cacheable and not unwritable:
            try:
                write_entry(entry, result)
            except OSError as err:  # disk full, read-only: go on without caching
                unwritable.append(err)
                log.warning("cannot write the cache in %s (%s); going on without it", cache_dir, err)
        results[i] = result
        if task is not None:
            progress.advance(task)

    jobs = [(PARSERS[batch[i].path.suffix.lower()], batch[i].path, settings) for i, _ in misses]
    n_workers = default_workers(len(jobs)) if workers is None else workers
    run_jobs(encode_file, jobs, workers=n_workers, timeout_s=timeout_s, on_done=done)
    return results  # type: ignore[return-value]


def _lookup(source: Source, settings, cache_dir: Path, vocab: Vocabulary) -> tuple[FileResult | None, Path | None]:
    """(result, None) when known without parsing (cached, empty, unsupported), else (None, entry)."""
    parser = PARSERS.get(source.path.suffix.lower())
    if parser is None:
        return _failed(f"unsupported file type {source.path.suffix!r}"), None
    try:
        if source.path.stat().st_size == 0:
            return _failed("empty file"), None
        entry = cache_path(cache_dir, source.path, settings)
    except OSError as err:
        return _failed(describe_error(err)), None
    result = read_entry(entry, vocab)
    if result is not None and result.stale:
        with contextlib.suppress(OSError):  # an unwritable cache is still read
            write_entry(entry, result)
    return result, entry


def _failed(reason: str) -> FileResult:
    return FileResult([], [Skip("", reason)], cacheable=False)
