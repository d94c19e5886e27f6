"""Turn a step model's logits into the next token: temperature, top-k, top-p (nucleus) and masks.

Used on the live path, so a `Sampler` keeps its work buffers between calls (sized on first use) and
draws from one seeded `numpy.random.Generator`: the same seed and the same logits give the same
tokens. The order of operations is the usual one: mask, temperature, top-k, top-p, draw.

Masks are boolean arrays over the vocabulary, True = allowed, combined with ``&``. `TokenMasks`
builds them from the vocabulary's `TokenFacts`, so the live path builds a mask per step without
allocating; the module-level functions are the same rules for offline use:

* `base_mask`: never BOS or UNK (they are inputs, not music);
* `pitch_range_mask`: no ``ON_p`` (event) / ``P_p`` (grid) with p outside [lo, hi];
* `key_mask`: no ``ON_p`` / ``P_p`` whose pitch class is outside a set (`improv.keys.scale_pitch_classes`);
* `polyphony_mask`: no ``ON_`` at all once `max_notes` are sounding.

Masks only ever forbid note starts and specials, so SHIFT, OFF and REST stay allowed and a mask
built from these rules is never empty. If a caller's mask allows nothing all the same, the sampler
ignores it for that call (samples as if unmasked) and counts it in `Sampler.fallbacks`: a live
improviser should keep playing something the model likes rather than stop or raise mid-phrase.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from improv.token_facts import TokenFacts
from improv.tokens import Vocabulary


class Sampler:
    """Draws one token id from logits. ``temperature=0`` is argmax; ``top_k=0`` and ``top_p=1``
    switch those filters off. Pass `rng` (e.g. ``np.random.default_rng(seed)``) to repeat a run."""

    def __init__(
        self,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.fallbacks = 0  # calls whose mask allowed nothing and was ignored
        self._x = np.empty(0)  # (V,) float64 work buffer: logits, then probabilities
        self._cum = np.empty(0)  # (V,) cumulative probabilities
        self._blocked = np.empty(0, dtype=bool)  # (V,) not-mask of the current call
        self._masked = False

    def sample(self, logits: np.ndarray, mask: np.ndarray | None = None) -> int:
        """One token id from (V,) logits; never one where `mask` is False (unless all are)."""
        x = self._load(logits, mask)
        if self.temperature == 0.0:
            best = int(np.argmax(x))
            if x[best] > -np.inf:  # False for NaN too
                return best
            self._to_probabilities(x)  # nothing finite: the first allowed token
            return int(np.argmax(x))
        self._weigh(x)
        np.cumsum(x, out=self._cum)
        u = self.rng.random() * self._cum[-1]
        return int(np.searchsorted(self._cum, u, side="right"))

    def distribution(self, logits: np.ndarray, mask: np.ndarray, out: np.ndarray) -> bool:
        """Into `out` (V,): the weights `sample` would draw from (mask, temperature, top-k,
        top-p; unnormalised); False, and `out` untouched, if `mask` allows nothing: a caller can
        prepare a distribution ahead and narrow it further when the moment comes."""
        if not mask.any():
            return False
        x = self._load(logits, mask)
        if self.temperature == 0.0:
            best = int(np.argmax(x))
            out[:] = 0.0
            out[best] = 1.0
            return True
        self._weigh(x)
        np.copyto(out, x)
        return True

    def _weigh(self, x: np.ndarray) -> None:
        """In place, masked logits into the weights to draw from: top-k, then the temperature's
        probabilities, then the nucleus (temperature > 0)."""
        if 0 < self.top_k < len(x):
            self._keep_top_k(x)
        self._to_probabilities(x)
        if self.top_p < 1.0:
            self._keep_nucleus(x)

    def _load(self, logits: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        size = len(logits)
        if len(self._x) != size:
            self._x, self._cum = np.empty(size), np.empty(size)
            self._blocked = np.empty(size, dtype=bool)
        x = self._x
        np.copyto(x, logits, casting="unsafe")
        self._masked = mask is not None and bool(mask.any())
        if self._masked:
            np.logical_not(mask, out=self._blocked)
            np.copyto(x, -np.inf, where=self._blocked)
        elif mask is not None:
            self.fallbacks += 1
        return x

    def _keep_top_k(self, x: np.ndarray) -> None:
        dropped = np.argpartition(x, -self.top_k)[: -self.top_k]  # all but the k largest
        x[dropped] = -np.inf

    def _to_probabilities(self, x: np.ndarray) -> None:
        """In place: x becomes unnormalised probabilities exp((x - max) / T); -inf becomes 0."""
        top = x.max()
        if np.isnan(top):  # NaN logits: treat as impossible
            np.copyto(x, -np.inf, where=np.isnan(x))
            top = x.max()
        if top == -np.inf:  # nothing finite left: uniform over what the mask allows
            np.copyto(x, 1.0)
            if self._masked:
                np.copyto(x, 0.0, where=self._blocked)
            return
        x -= top
        x /= self.temperature
        np.exp(x, out=x)

    def _keep_nucleus(self, p: np.ndarray) -> None:
        """Keep the smallest set of most probable tokens whose mass reaches top_p of the total."""
        order = np.argsort(-p, kind="stable")
        np.cumsum(p[order], out=self._cum)
        cut = int(np.searchsorted(self._cum, self.top_p * self._cum[-1], side="left"))
        p[order[cut + 1 :]] = 0.0


# --------------------------------------------------------------------------- masks


class TokenMasks:
    """Masks from one vocabulary's token facts (`improv.token_facts`).

    `allowed` writes into a reused buffer by default (no allocation per step; copy the result if
    you keep it past the next call), and keeps the range & key part until those settings change.
    """

    def __init__(self, vocab: Vocabulary | TokenFacts) -> None:
        facts = vocab if isinstance(vocab, TokenFacts) else TokenFacts(vocab)
        self.facts = facts
        self.size = len(facts.kind)
        self.start_pitch = facts.start_pitch
        self.is_start = self.start_pitch >= 0
        self.is_on = facts.is_on
        self.base = facts.base
        self._out = np.empty(self.size, dtype=bool)
        self._tmp = np.empty(self.size, dtype=bool)
        self._static_key: tuple | None = (None, None)
        self._static_mask = self.base

    def allowed(
        self,
        *,
        pitch_range: tuple[int, int] | None = None,
        pitch_classes: Iterable[int] | None = None,
        sounding: int = 0,
        max_polyphony: int = 0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The base mask & range & key & polyphony (each rule only when given; 0 = no limit)."""
        out = self._out if out is None else out
        np.copyto(out, self._static(pitch_range, pitch_classes))
        if max_polyphony and sounding >= max_polyphony:
            np.logical_not(self.is_on, out=self._tmp)
            out &= self._tmp
        return out

    def _static(self, pitch_range, pitch_classes) -> np.ndarray:
        """Base & range & key, cached: these change rarely, polyphony changes every note."""
        key = (None if pitch_range is None else (int(pitch_range[0]), int(pitch_range[1])),
               None if pitch_classes is None else frozenset(int(pc) % 12 for pc in pitch_classes))
        if key != self._static_key:
            mask = self.base.copy()
            if key[0] is not None:
                lo, hi = key[0]
                mask &= ~(self.is_start & ((self.start_pitch < lo) | (self.start_pitch > hi)))
            if key[1] is not None:
                allowed_pc = np.zeros(12, dtype=bool)
                allowed_pc[list(key[1])] = True
                mask &= ~(self.is_start & ~allowed_pc[self.start_pitch % 12])
            self._static_key, self._static_mask = key, mask
        return self._static_mask


def base_mask(vocab: Vocabulary) -> np.ndarray:
    """Everything but BOS and UNK."""
    return TokenMasks(vocab).base.copy()


def pitch_range_mask(vocab: Vocabulary, lo: int, hi: int) -> np.ndarray:
    """No note may start outside MIDI pitches [lo, hi] (BOS/UNK are also disallowed)."""
    return TokenMasks(vocab).allowed(pitch_range=(lo, hi)).copy()


def key_mask(vocab: Vocabulary, pitch_classes: Iterable[int]) -> np.ndarray:
    """No note may start on a pitch class outside `pitch_classes` (0 = C ... 11 = B)."""
    return TokenMasks(vocab).allowed(pitch_classes=pitch_classes).copy()


def polyphony_mask(vocab: Vocabulary, sounding: int, max_notes: int) -> np.ndarray:
    """No ON_ token once `sounding` notes reach `max_notes` (0 = no limit)."""
    return TokenMasks(vocab).allowed(sounding=sounding, max_polyphony=max_notes).copy()
