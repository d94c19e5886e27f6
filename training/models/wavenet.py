"""WaveNet over tokens (van den Oord et al. 2016), with the fast-generation step of Paine et al. 2016.

Embedding to C residual channels; L gated layers, each a causal dilated convolution of kernel 2
(C -> 2C), ``tanh(a) * sigmoid(b)``, a 1x1 residual convolution added to the layer's input and a
1x1 skip convolution (the two 1x1s are one C -> C + S convolution, split); dilations 1, 2, 4, ..., 2^(cycle-1), repeated `stacks` times. The skips are
summed -> ReLU -> 1x1 -> ReLU -> 1x1 -> vocabulary logits.

A kernel-2 convolution at time t reads its input at t and at t - d only, so one step needs, per
layer, the layer's input from d steps ago. `WaveNetStep` takes those as ``past [L, C]`` and returns
this step's inputs as ``current [L, C]``; the runtime keeps one ring buffer of d rows per layer.
Zeros before the start match the left zero padding of the full-sequence forward exactly.

`WaveNetStep` (exported) is built from weights folded at construction so that onnxruntime runs
few ops per layer (docs/TRAINING.md); `WaveNetReferenceStep` is the same step
written layer by layer, kept as the reference. The full-sequence model and its state_dict layout
are what training and checkpoints use; `WaveNetStep.unfold` maps folded tensors back to one.
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
        """The folded one-token graph (a weight snapshot) that is exported to ONNX."""
        return WaveNetStep(self)

    def reference_step_module(self) -> WaveNetReferenceStep:
        """The unfolded one-token graph, layer by layer (same contract)."""
        return WaveNetReferenceStep(self)

    def sidecar_state(self) -> dict:
        """The `state` / `queues` / `receptive_field` fields of model.json."""
        queues = {"input": "past", "output": "current", "dilations": self.config.dilations,
                  "channels": self.config.channels}
        return {"state": [], "queues": queues, "receptive_field": self.receptive_field}


class WaveNetStep(nn.Module):
    """token [1], past [L, C] -> logits [1, V], current [L, C]. Eval mode only.

    The exported step graph, with the weights folded at construction (a snapshot: build it after
    loading the weights) so that the graph has few, larger ops. The same arithmetic as
    `WaveNetReferenceStep`:

    * the tap at t - d of every layer's convolution is ONE batched MatMul over ``past`` at the start
      (``[L, 1, C] @ [L, C, 2C]``, the conv biases added), split into the 2L halves (a, b);
    * residual biases are moved out of the chain: the graph carries ``y_l = x_l - beta_l`` with
      ``beta_l`` the sum of the residual biases of layers < l, so a residual is one Gemm
      ``y + g @ W_res`` (C = y) and ``beta_l @ W_conv_l`` is folded into layer l's conv bias;
      ``current`` is ``concat(y_l) + beta``;
    * per layer: ``tanh(y @ W_a + pa_l)``, ``sigmoid(y @ W_b + pb_l)`` (Gemms that onnxruntime fuses
      with their activation), their product g, the residual Gemm (none after the last layer);
    * the skips are ONE Gemm at the end: ``concat(g_l) [1, L*C] @ stacked skip weights [L*C, S]``
      plus the summed skip biases, then the two head Gemms.
    """

    input_names = ("token", "past")
    output_names = ("logits", "current")

    def __init__(self, net: WaveNet) -> None:
        super().__init__()
        cfg = net.config
        self.config = cfg
        c, n = cfg.channels, len(net.layers)
        self.n_layers = n
        with torch.no_grad():  # folded in float64, stored in float32: the folds add no rounding of their own
            layers = [(layer.conv.weight.double(), layer.conv.bias.double(), layer.out.weight[:, :, 0].double(),
                       layer.out.bias.double()) for layer in net.layers]
            res_bias = torch.stack([b_out[:c] for _, _, _, b_out in layers])  # (L, C)
            beta = torch.cat([res_bias.new_zeros(1, c), res_bias.cumsum(0)[:-1]])  # (L, C): beta_0 = 0
            buffers = {"embed": net.embed.weight, "beta": beta}
            w_past, b_past = [], []
            for i, (w, b_conv, w_out, _) in enumerate(layers):
                w_now = w[:, :, 1].T  # (C, 2C); w is (2C, C, 2): tap 0 reads t - d, tap 1 reads t
                w_past.append(w[:, :, 0].T)
                b_past.append(b_conv + beta[i] @ w_now)
                buffers[f"w_a{i}"], buffers[f"w_b{i}"] = w_now[:, :c], w_now[:, c:]  # (C, C) each
                if i < n - 1:  # the last layer's residual feeds nothing
                    buffers[f"w_res{i}"] = w_out[:c].T  # (C, C)
            buffers["w_past"] = torch.stack(w_past)  # (L, C, 2C)
            buffers["b_past"] = torch.stack(b_past)[:, None, :]  # (L, 1, 2C)
            buffers["w_skip"] = torch.cat([w_out[c:].T for _, _, w_out, _ in layers])  # (L * C, S)
            buffers["b_skip"] = sum(b_out[c:] for _, _, _, b_out in layers)[None]  # (1, S)
            buffers["w_head1"], buffers["b_head1"] = net.head1.weight[:, :, 0].T, net.head1.bias[None]  # (S, S)
            buffers["w_head2"], buffers["b_head2"] = net.head2.weight[:, :, 0].T, net.head2.bias[None]  # (S, V)
            for name, value in buffers.items():
                self.register_buffer(name, value.detach().to(torch.float32).contiguous().clone())

    def forward(self, token: torch.Tensor, past: torch.Tensor):
        n, c = self.n_layers, self.config.channels
        y = F.embedding(token, self.embed)  # (1, C): x_0, beta_0 = 0
        halves = (torch.matmul(past.unsqueeze(1), self.w_past) + self.b_past).reshape(2 * n, c).split(1)
        rows, gates = [], []
        for i in range(n):
            rows.append(y)
            a = torch.tanh(torch.addmm(halves[2 * i], y, getattr(self, f"w_a{i}")))  # (1, C)
            b = torch.sigmoid(torch.addmm(halves[2 * i + 1], y, getattr(self, f"w_b{i}")))
            g = a * b
            gates.append(g)
            if i < n - 1:
                y = torch.addmm(y, g, getattr(self, f"w_res{i}"))  # y_{l+1} = y_l + g W_res
        skips = torch.addmm(self.b_skip, torch.cat(gates, dim=1), self.w_skip)  # (1, S)
        h = torch.relu(torch.addmm(self.b_head1, torch.relu(skips), self.w_head1))
        logits = torch.addmm(self.b_head2, h, self.w_head2)  # (1, V)
        return logits, torch.cat(rows, dim=0) + self.beta  # (1, V), (L, C)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        return torch.zeros(1, dtype=torch.int64), torch.zeros(len(cfg.dilations), cfg.channels)

    @staticmethod
    def unfold(tensors, config: WaveNetConfig) -> dict[str, torch.Tensor]:
        """A `WaveNet` state_dict computing the same logits, from the folded tensors (the buffers of a
        `WaveNetStep`, also the initializer names of its ONNX graph; numpy arrays or tensors).

        Equivalent, not identical: only the sum of the skip biases is kept (it all goes to layer 0),
        and the last layer's residual 1x1, which no output reads, comes back as zeros.
        """
        t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in tensors.items()}
        c, n = config.channels, len(config.dilations)
        beta = t["beta"]
        state = {"embed.weight": t["embed"]}
        for i in range(n):
            w_now = torch.cat([t[f"w_a{i}"], t[f"w_b{i}"]], dim=1)  # (C, 2C)
            state[f"layers.{i}.conv.weight"] = torch.stack([t["w_past"][i].T, w_now.T], dim=-1)  # (2C, C, 2)
            state[f"layers.{i}.conv.bias"] = t["b_past"][i, 0] - beta[i] @ w_now
            w_res = t[f"w_res{i}"].T if i < n - 1 else torch.zeros(c, c, dtype=torch.float64)
            b_res = beta[i + 1] - beta[i] if i < n - 1 else torch.zeros(c, dtype=torch.float64)
            skip = t["w_skip"][i * c:(i + 1) * c].T  # (S, C)
            state[f"layers.{i}.out.weight"] = torch.cat([w_res, skip])[:, :, None]
            state[f"layers.{i}.out.bias"] = torch.cat([b_res, t["b_skip"][0] if i == 0 else torch.zeros_like(t["b_skip"][0])])
        for head in ("head1", "head2"):
            state[f"{head}.weight"] = t[f"w_{head}"].T[:, :, None]
            state[f"{head}.bias"] = t[f"b_{head}"][0]
        return {k: v.to(torch.float32).contiguous() for k, v in state.items()}


class WaveNetReferenceStep(nn.Module):
    """The unfolded step, layer by layer as in training: same contract and logits as `WaveNetStep`.

    Kept as the readable reference (tests compare against it) and as the "before" graph of
    benchmarks/profiles/wavenet_step_profile.py.
    """

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
