"""Smoothed n-gram baselines (orders 1..5) over token ids: the bar a neural model has to clear.

Smoothing: interpolated Kneser-Ney (Chen & Goodman 1998, section 3.6) with one absolute discount
per order, ``D = n1 / (n1 + 2 n2)`` from that order's count-of-counts (clipped to [0.05, 0.95]):

    P_n(w | h) = (max(c(h w) - D_n, 0) + D_n * N1+(h .) * P_{n-1}(w | h')) / c(h)   if c(h) > 0
               = P_{n-1}(w | h')                                                     otherwise
    P_0(w) = 1 / V      (uniform over the vocabulary, so every token has a probability > 0)

where h' is h without its oldest token. The highest order counts n-grams (c = raw counts); lower
orders use continuation counts (c(h w) = the number of distinct tokens seen before h w), as KN
does. An order-1 model is therefore the absolute-discounted unigram interpolated with uniform.

Context conventions match the neural evaluation: each piece is scored from its start, its first
token (BOS, or the first grid token) is given and never predicted, and every later token is
predicted from the tokens before it in the same piece. Before a piece's first token the context
holds a start symbol (id V, never predicted), so "the start of a piece" is a context of its own.

Counting uses numpy: an n-gram is one int64 key in base V + 1 (the target is the lowest digit),
counted with `np.unique` and looked up with `np.searchsorted`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from training.metrics import Metrics

MAX_ORDER = 5


@dataclass(frozen=True)
class _Level:
    """The counts of one order n: n-gram keys (sorted) and their counts, per-context sums."""

    keys: np.ndarray  # (G,) int64, sorted
    counts: np.ndarray  # (G,) float64: raw (highest order) or continuation counts
    ctx_keys: np.ndarray  # (H,) int64, sorted
    ctx_total: np.ndarray  # (H,) float64: sum of counts per context
    ctx_types: np.ndarray  # (H,) float64: distinct next tokens per context
    discount: float


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query in `sorted_keys` (clipped) and whether it is really there."""
    idx = np.searchsorted(sorted_keys, queries)
    idx = np.minimum(idx, len(sorted_keys) - 1)
    return idx, sorted_keys[idx] == queries


def _level(keys: np.ndarray, counts: np.ndarray, base: int) -> _Level:
    counts = counts.astype(np.float64)
    ctx_keys, inverse = np.unique(keys // base, return_inverse=True)
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    discount = n1 / (n1 + 2 * n2) if n1 and n2 else 0.5
    return _Level(
        keys=keys,
        counts=counts,
        ctx_keys=ctx_keys,
        ctx_total=np.bincount(inverse, weights=counts, minlength=len(ctx_keys)),
        ctx_types=np.bincount(inverse, minlength=len(ctx_keys)).astype(np.float64),
        discount=float(np.clip(discount, 0.05, 0.95)),
    )


def _padded(pieces: Iterable[Sequence[int] | np.ndarray], pad: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """All pieces, each after `context` start symbols, in one int64 array, and the positions of
    the tokens to predict (all but each piece's first)."""
    chunks, targets, offset = [], [], 0
    for piece in pieces:
        piece = np.asarray(piece, dtype=np.int64)
        chunks += [np.full(context, pad, dtype=np.int64), piece]
        targets.append(offset + context + np.arange(1, len(piece)))
        offset += context + len(piece)
    if not chunks:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(chunks), np.concatenate(targets).astype(np.int64)


class NGramModel:
    """An interpolated Kneser-Ney model of one order over ids 0..vocab_size-1 (module docstring)."""

    def __init__(self, order: int, vocab_size: int, levels: list[_Level]) -> None:
        self.order = order
        self.vocab_size = vocab_size
        self.base = vocab_size + 1  # digit vocab_size is the start-of-piece symbol
        self.levels = levels  # levels[n - 1] is order n

    @property
    def discounts(self) -> list[float]:
        return [level.discount for level in self.levels]

    def _probs(self, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """P(target | context) for (M, order-1) contexts (oldest first, start symbols allowed)."""
        p = np.full(len(targets), 1.0 / self.vocab_size)
        ctx = np.zeros(len(targets), dtype=np.int64)  # key of the last n-1 context tokens
        for n, level in enumerate(self.levels, start=1):
            if n > 1:
                ctx = ctx + contexts[:, -(n - 1)] * self.base ** (n - 2)
            ci, seen = _lookup(level.ctx_keys, ctx)
            gi, found = _lookup(level.keys, ctx * self.base + targets)
            count = np.where(found, level.counts[gi], 0.0)
            d = level.discount
            mixed = (np.maximum(count - d, 0.0) + d * level.ctx_types[ci] * p) / level.ctx_total[ci]
            p = np.where(seen, mixed, p)
        return p

    def _contexts(self, seq: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(M, order-1) context tokens before each target position, oldest first."""
        k = self.order - 1
        return np.stack([seq[targets - k + j] for j in range(k)], axis=1) if k else np.zeros((len(targets), 0), np.int64)

    def log_probs(self, piece: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(piece) - 1,) natural-log probabilities of piece[1:], each given what precedes it."""
        seq, targets = _padded([piece], self.vocab_size, self.order - 1)
        return np.log(self._probs(self._contexts(seq, targets), seq[targets]))

    def prob_dist(self, context: Sequence[int] = ()) -> np.ndarray:
        """(V,) P(w | context) for every w; `context` = the piece so far (at least its first token)."""
        start = [self.vocab_size] * (self.order - 1)
        ctx = np.asarray((start + [int(t) for t in context])[len(context) :] if self.order > 1 else [], dtype=np.int64)
        contexts = np.broadcast_to(ctx, (self.vocab_size, self.order - 1))
        return self._probs(contexts, np.arange(self.vocab_size, dtype=np.int64))

    def metrics(self, pieces: Sequence[np.ndarray], *, chunk: int = 4096) -> Metrics:
        """`Metrics` pooled over every predicted token of every piece."""
        seq, targets = _padded(pieces, self.vocab_size, self.order - 1)
        if not len(targets):
            return Metrics.pooled(0.0, 0, 0)
        contexts, truth = self._contexts(seq, targets), seq[targets]
        nll = -float(np.log(self._probs(contexts, truth)).sum())
        correct = sum(int((self._argmax(contexts[i : i + chunk]) == truth[i : i + chunk]).sum())
                      for i in range(0, len(truth), chunk))
        return Metrics.pooled(nll, correct, len(truth))

    def _argmax(self, contexts: np.ndarray) -> np.ndarray:
        m, vocab = len(contexts), np.arange(self.vocab_size, dtype=np.int64)
        probs = self._probs(np.repeat(contexts, self.vocab_size, axis=0), np.tile(vocab, m))
        return probs.reshape(m, self.vocab_size).argmax(axis=1)


def fit_ngrams(
    pieces: Sequence[Sequence[int] | np.ndarray], vocab_size: int, orders: Iterable[int] = range(1, MAX_ORDER + 1)
) -> dict[int, NGramModel]:
    """Fit one model per order on `pieces` (token id arrays, e.g. the train split); counts are
    shared between orders."""
    orders = sorted(set(int(n) for n in orders))
    if not orders or orders[0] < 1:
        raise ValueError(f"n-gram orders must be >= 1, got {orders}")
    top, base = orders[-1], vocab_size + 1
    if base**top >= 2**62:
        raise ValueError(f"order {top} over {vocab_size} tokens does not fit int64 keys; use a lower order")
    pieces = [np.asarray(p) for p in pieces]
    if any(len(p) and (p.min() < 0 or p.max() >= vocab_size) for p in pieces):
        raise ValueError(f"token ids must lie in 0..{vocab_size - 1}")
    seq, targets = _padded(pieces, vocab_size, top - 1)
    if not len(targets):
        raise ValueError("no n-grams to count: every piece has fewer than two tokens")
    raw = []  # raw[n - 1] = (unique n-gram keys, counts)
    key = np.zeros(len(targets), dtype=np.int64)
    for n in range(1, top + 1):
        key = key + seq[targets - (n - 1)] * base ** (n - 1)
        raw.append(np.unique(key, return_counts=True))
    return {order: _model(order, vocab_size, raw) for order in orders}


def _model(order: int, vocab_size: int, raw: list[tuple[np.ndarray, np.ndarray]]) -> NGramModel:
    base, levels = vocab_size + 1, []
    for n in range(1, order + 1):
        if n == order:
            keys, counts = raw[n - 1]
        else:  # continuation counts: distinct left extensions of each n-gram
            keys, counts = np.unique(raw[n][0] % base**n, return_counts=True)
        levels.append(_level(keys, counts, base))
    return NGramModel(order, vocab_size, levels)


def fit_ngram(pieces: Sequence[Sequence[int] | np.ndarray], vocab_size: int, order: int) -> NGramModel:
    """One model of one order."""
    return fit_ngrams(pieces, vocab_size, [order])[order]
