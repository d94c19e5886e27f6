"""The step model and the session memory mixed into one next-token distribution.

p = w p_model + (1 - w) p_memory. With ``auto`` the weight adapts online, a Bayesian mixture with
a fixed share (Herbster and Warmuth): after each of the player's tokens each predictor's weight
is multiplied by the probability it gave that token, then a small share `SHARE` is spread evenly,
so the mix is never much worse than the better of the two and can switch back quickly. One weight
pair per depth of the memory's match (how many tokens of context it recognised): the memory is
trusted where the player repeats material and the prior where the player plays something new to
the session. A fixed weight (`memory_weight`) overrides it (the "follow the player" CC). The mix
runs for each of the player's tokens: improv/native/memory_mix.c computes it where setup.py built
it, the numpy here otherwise (the same numbers).
"""

from __future__ import annotations

import math

import numpy as np

try:
    from improv import _memory_mix as native
except ImportError:  # not built (setup.py's extensions are optional): the numpy below
    native = None

SHARE = 0.01  # fixed share per update: a floor under either weight, and the speed of switching back
FLOOR = 1e-12
PRIOR_SHALLOW, PRIOR_DEEP = 0.9, 0.2  # the model's weight before any learning, no match .. full match


class Blend:
    def __init__(self, depths: int, memory_weight: float | None = None) -> None:
        self.memory_weight = memory_weight  # None: adapt; else the memory's fixed weight in [0, 1]
        # (depths + 1,) the model's weight per match depth; at first, the deeper the memory
        # recognises the context, the more it is trusted: a long match is the player repeating
        self._model_w = np.interp(np.arange(depths + 1), [0, depths], [PRIOR_SHALLOW, PRIOR_DEEP])
        self._logits = np.empty(0)  # (V,) output buffer
        self._p = np.empty(0)  # (V,) the model's probabilities

    def model_weight(self, depth: int) -> float:
        if self.memory_weight is not None:
            return 1.0 - self.memory_weight
        return float(self._model_w[depth])

    @property
    def following(self) -> float:
        """How much the memory leads now (0..1): its weight at the deepest match, for the view."""
        return 1.0 - self.model_weight(len(self._model_w) - 1)

    def mix(self, logits: np.ndarray, p_memory: np.ndarray, depth: int) -> np.ndarray:
        """(V,) log-probabilities of the mix, in a buffer reused by the next call (logits for the sampler)."""
        w = self.model_weight(depth)
        if w >= 1.0:
            return logits
        if len(self._logits) != len(logits):
            self._p, self._logits = np.empty(len(logits)), np.empty(len(logits))
        if native is not None:
            native.blend(self._logits, logits, p_memory, w, FLOOR)
            return self._logits
        p = self._softmax(logits)
        p *= w
        p += (1.0 - w) * p_memory
        np.maximum(p, FLOOR, out=p)
        return np.log(p, out=self._logits)

    def learn(self, logits: np.ndarray, token: int, p_memory_token: float, depth: int) -> None:
        """The player played `token`: each predictor's weight at this depth follows how well it saw it coming."""
        p_model = self._prob(logits, token)
        w = self._model_w[depth]
        a, b = w * p_model, (1.0 - w) * p_memory_token
        if a + b <= 0.0 or not math.isfinite(a + b):
            return
        w = a / (a + b)
        self._model_w[depth] = (1.0 - SHARE) * w + SHARE * 0.5

    def _softmax(self, logits: np.ndarray) -> np.ndarray:
        p = self._p
        np.subtract(logits, logits.max(), out=p)
        np.exp(p, out=p)
        p /= p.sum()
        return p

    @staticmethod
    def _prob(logits: np.ndarray, token: int) -> float:
        top = float(logits.max())
        return math.exp(float(logits[token]) - top) / float(np.exp(logits - top).sum())
