"""The session memory: a variable-order model of this session's tokens, learned as they are heard.

The Continuator's idea (Pachet 2003) over the step model's own tokens: counts of what followed
each context of 0..order-1 tokens, updated token by token (the player's notes at weight 1,
improv's own at a lower weight), interpolated from the longest context down (Witten-Bell: a
context's weight grows with its count and shrinks with the number of distinct continuations).
Two tables, mixed half and half: one over the tokens as they are, one where every ON and OFF is
an interval from the melody's last note (the top note of the latest onset before), so a figure
heard once is recognised, and offered, at any transposition, in a line or on top of chords (docs/LISTENING.md: the relative table earns its place). Old material fades:
every count halves every `half_life_tokens` tokens (one global scale, renormalised now and then,
when faint contexts are dropped), and at most `max_contexts` contexts are kept per table. An
update is O(order); a prediction O(order x continuations) into reused buffers, computed by
improv/native/memory_mix.c where setup.py built it (the player's every token waits for it), by the
Python here otherwise, the same numbers. `save` / `load`: plain JSON with a format version and the
vocabulary.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from improv.errors import ModelError
from improv.tokens import split_name

try:
    from improv import _memory_mix as native
except ImportError:  # not built (setup.py's extensions are optional): the Python below
    native = None

FORMAT, FORMAT_VERSION = "improv-session-memory", 1
RESCALE_AT = 1e12  # the global scale is folded into the counts when it grows past this
FAINT = 1e-3  # a context whose decayed count falls below this is forgotten at a rescale
PRUNE_AT = 1.1  # a table with this many times max_contexts is cut back to max_contexts (a few ms)
MAX_CONTEXTS = 12_000  # per table: ~6 MB each at the most (a player who never repeats anything)
INTERVAL_MAX = 127
INTERVALS = 2 * INTERVAL_MAX + 1  # ON/OFF intervals -127..127 from the latest note-on


class Counts:
    """One table of decayed counts: context (the last k < order ids) -> what followed it."""

    def __init__(self, size: int, order: int, half_life_tokens: float, max_contexts: int) -> None:
        self.size, self.order, self.max_contexts = size, order, max_contexts
        self._decay = 0.5 ** (1.0 / half_life_tokens) if half_life_tokens > 0 else 1.0
        self._scale = 1.0  # stored counts are true counts x this (grows as true counts decay)
        # the empty context, dense: (size,) counts, their total and how many ids have one
        self.unigram, self.unigram_total, self.unigram_types = np.zeros(size), 0.0, 0
        self.table: dict[int, list] = {}  # longer contexts: key -> [total, {id: count}], both x _scale
        self._p = np.empty(size)  # (size,) prediction buffer, reused

    def observe(self, ctx: Sequence[int], token: int, weight: float) -> None:
        self._scale /= self._decay
        w = weight * self._scale
        if self.unigram[token] == 0.0:
            self.unigram_types += 1
        self.unigram[token] += w
        self.unigram_total += w
        for k in range(1, min(len(ctx), self.order - 1) + 1):
            key = self._key(ctx, k)
            entry = self.table.get(key)
            if entry is None:
                entry = self.table[key] = [0.0, {}]
            entry[0] += w
            entry[1][token] = entry[1].get(token, 0.0) + w
        if self._scale > RESCALE_AT:
            self._rescale()
        elif len(self.table) > PRUNE_AT * self.max_contexts:
            self._prune()

    def predict(self, ctx: Sequence[int]) -> tuple[np.ndarray, int]:
        p = self._p
        if native is not None:
            return p, native.witten_bell(p, self.unigram, self.unigram_total, self.unigram_types, self._scale,
                                         self.table, ctx, self.order)
        if self.unigram_total <= 0.0:
            p.fill(1.0 / self.size)
            return p, 0
        # Witten-Bell, each level p = (counts + escape x the level below) / (total + escape), where
        # escape counts distinct continuations; the levels' factors multiplied out first, so the
        # dense part is written once and each level adds only its own few counts
        levels = list(self._heard(ctx))
        adds, scale = [], 1.0
        for _, total, counts in reversed(levels):
            escape = len(counts) * self._scale
            adds.append((counts, scale / (total + escape)))
            scale *= escape / (total + escape)
        escape = self.unigram_types * self._scale
        norm = scale / (self.unigram_total + escape)
        np.multiply(self.unigram, norm, out=p)
        p += escape * norm / self.size
        for counts, weight in adds:
            for token, count in counts.items():
                p[token] += count * weight
        return p, levels[-1][0] if levels else 1

    def prob(self, ctx: Sequence[int], token: int) -> tuple[float, int]:
        p = 1.0 / self.size
        if self.unigram_total <= 0.0:
            return p, 0
        escape = self.unigram_types * self._scale
        p, depth = (float(self.unigram[token]) + escape * p) / (self.unigram_total + escape), 1
        for depth, total, counts in self._heard(ctx):
            escape = len(counts) * self._scale
            p = (counts.get(token, 0.0) + escape * p) / (total + escape)
        return p, depth

    def _heard(self, ctx: Sequence[int]):
        """(depth, total, counts) of the contexts ending `ctx` that were heard, shortest first,
        up to the first that was not (depth: the context's length + 1)."""
        for k in range(1, min(len(ctx), self.order - 1) + 1):
            entry = self.table.get(self._key(ctx, k))
            if entry is None:
                return
            yield k + 1, entry[0], entry[1]

    def _key(self, ctx: Sequence[int], k: int) -> int:
        """The last `k` ids of `ctx` (and k itself) as one integer."""
        key, base = k, self.size + 1
        for token in ctx[len(ctx) - k:]:
            key = key * base + token + 1
        return key

    def _rescale(self) -> None:
        """Fold the global scale into the counts and forget the faint contexts (rare: every
        ~40 half-lives), then keep the table within its cap."""
        s = self._scale
        self.table = {key: [total / s, {t: c / s for t, c in counts.items() if c / s >= FAINT * 1e-3}]
                      for key, (total, counts) in self.table.items() if total / s >= FAINT}
        self.unigram /= s
        self.unigram[self.unigram < FAINT * 1e-3] = 0.0
        self.unigram_total, self.unigram_types = float(self.unigram.sum()), int(np.count_nonzero(self.unigram))
        self._scale = 1.0
        self._prune()

    def _prune(self) -> None:
        """Keep the strongest `max_contexts` contexts (found in O(n); the counts are not touched)."""
        if len(self.table) <= self.max_contexts:
            return
        keys = list(self.table)
        totals = np.fromiter((entry[0] for entry in self.table.values()), dtype=float, count=len(keys))
        drop = np.argpartition(totals, len(keys) - self.max_contexts)[: len(keys) - self.max_contexts]
        for i in drop:
            del self.table[keys[i]]

    def to_list(self) -> list:
        """[[context key, total, [[id, count], ...]], ...], the empty context (key 0) first."""
        s, ids = self._scale, np.flatnonzero(self.unigram)
        unigram = [0, self.unigram_total / s, [[int(t), float(self.unigram[t]) / s] for t in ids]]
        return [unigram] + [[key, total / s, [[t, c / s] for t, c in counts.items()]]
                            for key, (total, counts) in self.table.items()]

    def load_list(self, rows: list) -> None:
        for key, total, counts in rows:
            table = {int(t): float(c) for t, c in counts}
            if not all(0 <= t < self.size for t in table) or not math.isfinite(float(total)):
                raise ValueError(f"context {key} holds an id outside the vocabulary")
            if int(key) == 0:
                self.unigram[list(table)] = list(table.values())
                self.unigram_total, self.unigram_types = float(total), len(table)
            else:
                self.table[int(key)] = [float(total), table]


@dataclass
class Cursor:
    """Where a stream of tokens stands, as the memory sees it: its last tokens, as they are and
    as intervals, and the latest note-on's pitch. The memory has one; each phrase forks its own."""

    tokens: list[int] = field(default_factory=list)
    relative: list[int] = field(default_factory=list)
    ref_pitch: int = 60  # the top note of the latest onset before this one: the melody's last note
    group_top: int = -1  # the top note started at the current onset so far (-1: none yet)

    def copy(self) -> Cursor:
        return Cursor(list(self.tokens), list(self.relative), self.ref_pitch, self.group_top)

    def copy_into(self, other: Cursor) -> None:
        """`other` made this cursor, into its own lists."""
        other.tokens[:], other.relative[:] = self.tokens, self.relative
        other.ref_pitch, other.group_top = self.ref_pitch, self.group_top


class SessionMemory:
    def __init__(self, vocab_names: Sequence[str], order: int = 4, half_life_tokens: float = 4000.0,
                 max_contexts: int = MAX_CONTEXTS) -> None:
        if order < 1:
            raise ValueError("order must be at least 1")
        self.names = list(vocab_names)
        self.size = len(self.names)
        self.order = order
        self.half_life_tokens = half_life_tokens
        self.max_contexts = max_contexts
        parts = [split_name(n) for n in self.names]
        self._kind = np.array([{"ON": 1, "OFF": 2, "SHIFT": 3}.get(k, 0) if v is not None else 0
                               for k, v in parts])  # (V,)
        shift = self._kind == 3
        self._kind[shift] = 0  # (a shift is its own interval form)
        self._pitch = np.array([v if v is not None else 0 for _, v in parts])  # (V,)
        # the same as Python lists, for the per-token work (a numpy scalar costs ~0.1 us to read)
        self._kinds, self._pitches, self._shifts = self._kind.tolist(), self._pitch.tolist(), shift.tolist()
        self.absolute = Counts(self.size, order, half_life_tokens, max_contexts)
        self.relative = Counts(self.size + 2 * INTERVALS, order, half_life_tokens, max_contexts)
        self.cursor = Cursor()  # what was heard last
        self.tokens_seen = 0
        self._p = np.empty(self.size)  # (V,) the mixed prediction, reused
        self._ids = np.arange(self.size)
        self._by_ref: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ learning

    def observe(self, token: int, weight: float = 1.0) -> None:
        """`token` was heard: count it under every context length of both tables, then move on."""
        self.count(self.cursor, token, weight)
        self.advance(self.cursor, token)

    def count(self, cursor: Cursor, token: int, weight: float = 1.0) -> None:
        """Count `token` as heard after `cursor` (which stays where it is): `observe` without the
        move, for learning put off until after a reaction (`improv.context.ModelContext.learn`)."""
        token = int(token)
        self.absolute.observe(cursor.tokens, token, weight)
        self.relative.observe(cursor.relative, self._relative_id(token, cursor.ref_pitch), weight)
        self.tokens_seen += 1

    def advance(self, cursor: Cursor, token: int) -> None:
        """Move `cursor` past `token` (the memory learns nothing: a phrase's own cursor)."""
        token = int(token)
        for ctx, value in ((cursor.tokens, token), (cursor.relative, self._relative_id(token, cursor.ref_pitch))):
            ctx.append(value)
            if len(ctx) >= self.order:
                del ctx[0]
        if self._kinds[token] == 1:
            cursor.group_top = max(cursor.group_top, self._pitches[token])
        elif self._shifts[token] and cursor.group_top >= 0:  # time moves: that onset's top note is the reference
            cursor.ref_pitch, cursor.group_top = cursor.group_top, -1

    def _relative_id(self, token: int, ref_pitch: int) -> int:
        kind = self._kinds[token]  # (Python ints: a context key may outgrow 64 bits)
        if kind == 0:
            return token
        interval = max(-INTERVAL_MAX, min(INTERVAL_MAX, self._pitches[token] - ref_pitch))
        return self.size + (kind - 1) * INTERVALS + interval + INTERVAL_MAX

    # ------------------------------------------------------------------ predicting

    def predict(self, cursor: Cursor | None = None) -> tuple[np.ndarray, int]:
        """(p, depth): the (V,) next-token distribution after `cursor` (default: what was heard
        last), in a buffer reused by the next call, and the longest context either table knew."""
        c = self.cursor if cursor is None else cursor
        p_abs, d_abs = self.absolute.predict(c.tokens)
        p_rel, d_rel = self.relative.predict(c.relative)
        if native is not None:
            native.intervals(self._p, p_abs, p_rel, self._relative_ids(c.ref_pitch))
            return self._p, max(d_abs, d_rel)
        rel = p_rel[self._relative_ids(c.ref_pitch)]  # (V,) each token's interval form
        rel *= 0.5 / rel.sum()
        np.multiply(p_abs, 0.5, out=self._p)
        self._p += rel
        return self._p, max(d_abs, d_rel)

    def prob(self, token: int, cursor: Cursor | None = None) -> tuple[float, int]:
        """(p(token), depth) after `cursor`, without building the whole distribution."""
        c = self.cursor if cursor is None else cursor
        p_abs, d_abs = self.absolute.prob(c.tokens, int(token))
        # (the interval table's share, not renormalised over the vocabulary's pitches as `predict`
        # does: O(order), and what teaches the blend need not be exact)
        p_rel, d_rel = self.relative.prob(c.relative, self._relative_id(int(token), c.ref_pitch))
        return 0.5 * p_abs + 0.5 * p_rel, max(d_abs, d_rel)

    def _relative_ids(self, ref_pitch: int) -> np.ndarray:
        """(V,) each token's id in the interval table, from `ref_pitch` (kept: 128 at most)."""
        ids = self._by_ref.get(ref_pitch)
        if ids is None:
            interval = np.clip(self._pitch - ref_pitch, -INTERVAL_MAX, INTERVAL_MAX) + INTERVAL_MAX
            ids = self._by_ref[ref_pitch] = np.where(self._kind == 0, self._ids,
                                                     self.size + (self._kind - 1) * INTERVALS + interval)
        return ids

    @property
    def contexts(self) -> int:
        return len(self.absolute.table) + len(self.relative.table)

    @property
    def context(self) -> list[int]:
        return self.cursor.tokens

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        c = self.cursor
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "vocabulary": self.names,
                "order": self.order, "half_life_tokens": self.half_life_tokens,
                "max_contexts": self.max_contexts, "tokens_seen": self.tokens_seen,
                "cursor": {"tokens": c.tokens, "relative": c.relative, "ref_pitch": c.ref_pitch,
                           "group_top": c.group_top},
                "absolute": self.absolute.to_list(), "relative": self.relative.to_list()}

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, vocab_names: Sequence[str]) -> SessionMemory:
        """A memory saved by `save`, for a model with `vocab_names`; every problem is a
        `ModelError` that names the file and the fix."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as err:
            raise ModelError(f"{path}: cannot read the memory file ({err.strerror}); check --memory") from err
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"{path}: not a session memory (corrupt or truncated JSON: {err}); "
                             "delete it or pass another --memory") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelError(f"{path}: not an improv session memory; pass a file written by --memory")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{path}: session memory format {data.get('format_version')!r}, this improv "
                             f"reads {FORMAT_VERSION}; start a new memory file")
        if data.get("vocabulary") != list(vocab_names):
            raise ModelError(f"{path}: the memory was learned with another model's vocabulary; use it with "
                             "that model or start a new memory file")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ModelError(f"{path}: the session memory is malformed ({type(err).__name__}: {err}); "
                             "delete it or pass another --memory") from err

    @classmethod
    def _from_dict(cls, data: dict) -> SessionMemory:
        memory = cls(data["vocabulary"], int(data["order"]), float(data["half_life_tokens"]),
                     int(data["max_contexts"]))
        memory.absolute.load_list(data["absolute"])
        memory.relative.load_list(data["relative"])
        c = data["cursor"]
        keep = memory.order - 1
        cursor = Cursor([int(t) for t in c["tokens"]][-keep:] if keep else [],
                        [int(t) for t in c["relative"]][-keep:] if keep else [], int(c["ref_pitch"]),
                        int(c["group_top"]))
        if not all(0 <= t < memory.size for t in cursor.tokens) or \
                not all(0 <= t < memory.relative.size for t in cursor.relative) or not 0 <= cursor.ref_pitch < 128:
            raise ValueError("the running context holds a token outside the vocabulary")
        memory.cursor = cursor
        memory.tokens_seen = int(data["tokens_seen"])
        return memory


def open_memory(path: str | Path, vocab_names: Sequence[str], order: int, half_life_tokens: float) -> SessionMemory:
    """`--memory FILE`: the memory saved there, or a new one (the file is written at exit)."""
    if Path(path).exists():
        return SessionMemory.load(path, vocab_names)
    return SessionMemory(vocab_names, order, half_life_tokens)

