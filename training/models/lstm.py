"""LSTM language model over tokens: embedding -> LSTM -> dropout -> linear to vocabulary logits.

The full-sequence `forward` trains with teacher forcing; `LSTMStep` is the one-token graph that is
exported to ONNX (DESIGN.md): ``token [1]``, ``h_in``/``c_in`` ``[layers, 1, hidden]`` ->
``logits [1, V]``, ``h_out``/``c_out``. Nothing is tied between embedding and output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LSTMConfig:
    """Constructor arguments; stored in every checkpoint (``dataclasses.asdict``)."""

    vocab_size: int = 47
    embed: int = 64  # embedding dimension
    hidden: int = 256  # LSTM hidden (and cell) size
    layers: int = 2
    dropout: float = 0.2  # between LSTM layers and before the output layer

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.embed, self.hidden, self.layers) < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"invalid LSTM config {dataclasses.asdict(self)}")


class LSTM(nn.Module):
    kind = "lstm"

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        between = config.dropout if config.layers > 1 else 0.0
        self.lstm = nn.LSTM(config.embed, config.hidden, config.layers, batch_first=True, dropout=between)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    @property
    def receptive_field(self) -> int | None:
        return None  # unbounded: the state carries everything heard so far

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, V) logits; position t sees tokens <= t, state starts at zero."""
        x = self.embed(tokens)  # (B, T, E)
        x, _ = self.lstm(x)  # (B, T, H)
        return self.head(self.drop(x))  # (B, T, V)

    def step_module(self) -> LSTMStep:
        return LSTMStep(self)

    def sidecar_state(self) -> dict:
        """The `state` / `queues` / `receptive_field` fields of model.json."""
        shape = [self.config.layers, 1, self.config.hidden]
        return {
            "state": [
                {"input": "h_in", "output": "h_out", "shape": shape},
                {"input": "c_in", "output": "c_out", "shape": shape},
            ],
            "queues": None,
            "receptive_field": None,
        }


class LSTMStep(nn.Module):
    """One token in, logits and the next (h, c) out. Eval mode only."""

    input_names = ("token", "h_in", "c_in")
    output_names = ("logits", "h_out", "c_out")

    def __init__(self, net: LSTM) -> None:
        super().__init__()
        self.net = net

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        x = self.net.embed(token).unsqueeze(1)  # (1, 1, E)
        y, (h, c) = self.net.lstm(x, (h, c))  # (1, 1, H); h, c (layers, 1, H)
        return self.net.head(y[:, 0]), h, c  # (1, V)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        cfg = self.net.config
        zeros = torch.zeros(cfg.layers, 1, cfg.hidden)
        return torch.zeros(1, dtype=torch.int64), zeros, zeros.clone()
