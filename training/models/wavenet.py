"""WaveNet over tokens (van den Oord et al. 2016), with the fast-generation step of Paine et al. 2016.

Embedding to C residual channels; L gated layers, each a causal dilated convolution of kernel 2
(C -> 2C), ``tanh(a) * sigmoid(b)``, a 1x1 residual convolution added to the layer's input and a
1x1 skip convolution (the two 1x1s are one C -> C + S convolution, split); dilations 1, 2, 4, ..., 2^(cycle-1), repeated `stacks` times. The skips are
summed -> ReLU -> 1x1 -> ReLU -> 1x1 -> vocabulary logits.

A kernel-2 convolution at time t reads its input at t and at t - d only, so one step needs, per
layer, the layer's input from d steps ago. `WaveNetStep` takes those as ``past [L, C]`` and returns
this step's inputs as ``current [L, C]``; the runtime keeps one ring buffer of d rows per layer.
Zeros before the start match the left zero padding of the full-sequence forward exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WaveNetConfig:
    """Constructor arguments; stored in every checkpoint (``dataclasses.asdict``)."""

    vocab_size: int = 47
    channels: int = 64  # residual channels C
    skip_channels: int = 128  # S
    dilation_cycle: int = 7  # layers per stack: dilations 1, 2, ..., 2^(cycle-1)
    stacks: int = 2
    dropout: float = 0.0  # on each layer's gated output, training only

    def __post_init__(self) -> None:
        sizes = (self.vocab_size, self.channels, self.skip_channels, self.dilation_cycle, self.stacks)
        if min(sizes) < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"invalid WaveNet config {dataclasses.asdict(self)}")

    @property
    def dilations(self) -> list[int]:
        return [2**i for i in range(self.dilation_cycle)] * self.stacks

    @property
    def receptive_field(self) -> int:
        return 1 + sum(self.dilations)


def _pointwise(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A 1x1 convolution applied to (N, C_in) rows -> (N, C_out)."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


class GatedLayer(nn.Module):
    def __init__(self, channels: int, skip_channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size=2, dilation=dilation)
        self.out = nn.Conv1d(channels, channels + skip_channels, 1)  # residual and skip 1x1s, fused
        self.split = (channels, skip_channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T) -> next layer's input (B, C, T), skip (B, S, T). Causal: left zero padding."""
        z = self.conv(F.pad(x, (self.dilation, 0)))  # (B, 2C, T)
        a, b = z.chunk(2, dim=1)  # (B, C, T) each
        g = self.drop(torch.tanh(a) * torch.sigmoid(b))
        res, skip = self.out(g).split(self.split, dim=1)  # (B, C, T), (B, S, T)
        return x + res, skip

    def step(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: x, past (1, C) (input now and `dilation` steps ago) -> (1, C), (1, S)."""
        w = self.conv.weight  # (2C, C, 2): tap 0 reads t - d, tap 1 reads t
        z = F.linear(past, w[:, :, 0]) + F.linear(x, w[:, :, 1], self.conv.bias)  # (1, 2C)
        a, b = z.chunk(2, dim=1)
        g = torch.tanh(a) * torch.sigmoid(b)
        res, skip = _pointwise(g, self.out).split(self.split, dim=1)  # (1, C), (1, S)
        return x + res, skip


class WaveNet(nn.Module):
    kind = "wavenet"

    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = config
        c, s = config.channels, config.skip_channels
        self.embed = nn.Embedding(config.vocab_size, c)
        self.layers = nn.ModuleList(GatedLayer(c, s, d, config.dropout) for d in config.dilations)
        self.head1 = nn.Conv1d(s, s, 1)
        self.head2 = nn.Conv1d(s, config.vocab_size, 1)

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, V) logits; position t sees tokens max(0, t - rf + 1) .. t."""
        x = self.embed(tokens).transpose(1, 2)  # (B, C, T)
        skips = 0
        for layer in self.layers:
            x, s = layer(x)  # (B, C, T), (B, S, T)
            skips = skips + s
        h = self.head1(F.relu(skips))  # (B, S, T)
        return self.head2(F.relu(h)).transpose(1, 2)  # (B, T, V)

    def step_module(self) -> WaveNetStep:
        return WaveNetStep(self)

    def sidecar_state(self) -> dict:
        """The `state` / `queues` / `receptive_field` fields of model.json."""
        queues = {"input": "past", "output": "current", "dilations": self.config.dilations,
                  "channels": self.config.channels}
        return {"state": [], "queues": queues, "receptive_field": self.receptive_field}


class WaveNetStep(nn.Module):
    """token [1], past [L, C] -> logits [1, V], current [L, C]. Eval mode only."""

    input_names = ("token", "past")
    output_names = ("logits", "current")

    def __init__(self, net: WaveNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, token: torch.Tensor, past: torch.Tensor):
        x = self.net.embed(token)  # (1, C)
        rows, skips = [], 0
        for i, layer in enumerate(self.net.layers):
            rows.append(x)
            x, s = layer.step(x, past[i : i + 1])  # (1, C), (1, S)
            skips = skips + s
        h = _pointwise(F.relu(skips), self.net.head1)  # (1, S)
        logits = _pointwise(F.relu(h), self.net.head2)  # (1, V)
        return logits, torch.cat(rows, dim=0)  # (1, V), (L, C)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        cfg = self.net.config
        return torch.zeros(1, dtype=torch.int64), torch.zeros(len(cfg.dilations), cfg.channels)
