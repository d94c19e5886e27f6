"""Metrics: what every next-token scorer returns (the training loop, the ONNX step run, the n-grams).

NLL is in nats per predicted token, pooled over every predicted token (each weighs the same);
ppl = exp(nll); acc is how often the argmax was the next token; tokens counts the predictions.
With nothing to predict, nll, ppl and acc are None. `as_dict` is the one JSON spelling:
metrics.json's ``test``, ``valid_*`` / ``test_*`` in the checkpoint and the model sidecar, and
`improv eval --json`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metrics:
    nll: float | None  # nats per token
    ppl: float | None  # exp(nll)
    acc: float | None  # 0..1
    tokens: int

    @classmethod
    def pooled(cls, nll_sum: float, correct: float, tokens: float) -> Metrics:
        """From sums over the predicted tokens: NLL (nats), correct argmax count, token count."""
        if tokens <= 0:
            return cls(None, None, None, 0)
        nll = float(nll_sum) / tokens
        return cls(nll, math.exp(min(nll, 700.0)), float(correct) / tokens, int(tokens))

    def as_dict(self, prefix: str = "") -> dict:
        """{"nll", "ppl", "acc", "tokens"}, each key after `prefix` (e.g. "test_")."""
        return {prefix + k: v for k, v in dataclasses.asdict(self).items()}
