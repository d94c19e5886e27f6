"""Tiny untrained LSTM and WaveNet step models, exported per docs/DESIGN.md, for tests that need a
real ONNX model without training one. Independent of training/ on purpose: these pin the runtime
contract (improv.model_step), not the trainer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from improv.tokens import TokenConfig, Vocabulary


class TinyLstmStep(nn.Module):
    def __init__(self, vocab_size: int, embed: int = 16, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, layers)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, token, h, c):  # token (1,), h/c (layers, 1, hidden)
        y, (h, c) = self.lstm(self.embed(token).view(1, 1, -1), (h, c))
        return self.head(y[0]), h, c

    def sequence(self, tokens):  # (T,) -> (T, V)
        y, _ = self.lstm(self.embed(tokens).unsqueeze(1))
        return self.head(y[:, 0])


class TinyWaveNet(nn.Module):
    """Gated residual layers, kernel 2, dilations 1, 2, 4, 1, 2, 4; sequence and step forms."""

    def __init__(self, vocab_size: int, channels: int = 8, dilations=(1, 2, 4, 1, 2, 4)) -> None:
        super().__init__()
        self.dilations = list(dilations)
        self.embed = nn.Embedding(vocab_size, channels)
        self.convs = nn.ModuleList(nn.Conv1d(channels, 2 * channels, 2, dilation=d) for d in self.dilations)
        self.res = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in self.dilations)
        self.head = nn.Linear(channels, vocab_size)

    def sequence(self, tokens):  # (T,) -> (T, V)
        x = self.embed(tokens).T.unsqueeze(0)  # (1, C, T)
        for d, conv, res in zip(self.dilations, self.convs, self.res):
            a, b = conv(nn.functional.pad(x, (d, 0))).chunk(2, dim=1)
            x = x + res(torch.tanh(a) * torch.sigmoid(b))
        return self.head(x[0].T)

    def forward(self, token, past):  # token (1,), past (L, C) -> logits (1, V), current (L, C)
        x = self.embed(token)  # (1, C)
        current = []
        for i, (conv, res) in enumerate(zip(self.convs, self.res)):
            current.append(x)
            w = conv.weight  # (2C, C, 2): tap 0 sees t - d, tap 1 sees t
            z = past[i : i + 1] @ w[:, :, 0].T + x @ w[:, :, 1].T + conv.bias
            a, b = z.chunk(2, dim=1)
            x = x + (torch.tanh(a) * torch.sigmoid(b)) @ res.weight[:, :, 0].T + res.bias
        return self.head(x), torch.cat(current, dim=0)


def export_tiny(kind: str, folder: Path, seed: int = 0, config: TokenConfig | None = None) -> Path:
    """Write folder/model.onnx + model.json for a tiny random model of `kind`; returns the folder."""
    torch.manual_seed(seed)
    vocab = Vocabulary(config or TokenConfig())
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    token = torch.zeros(1, dtype=torch.long)
    meta = {
        "format": "improv-step-model",
        "format_version": 1,
        "name": folder.name,
        "kind": kind,
        "onnx_file": "model.onnx",
        "vocabulary": vocab.to_dict(),
        "token_input": "token",
        "logits_output": "logits",
        "train_command": f"tests/tiny_models.py export_tiny({kind!r})",
        "data_hash": "sha256:none",
        "model_config": {},
        "train_config": {},
        "metrics": {},
    }
    if kind == "lstm":
        model = TinyLstmStep(len(vocab)).eval()
        h = torch.zeros(2, 1, 32)
        args, names_in, names_out = (token, h, h.clone()), ["token", "h_in", "c_in"], ["logits", "h_out", "c_out"]
        meta["state"] = [
            {"input": "h_in", "output": "h_out", "shape": [2, 1, 32]},
            {"input": "c_in", "output": "c_out", "shape": [2, 1, 32]},
        ]
        meta["queues"], meta["receptive_field"] = None, None
    else:
        model = TinyWaveNet(len(vocab)).eval()
        past = torch.zeros(len(model.dilations), 8)
        args, names_in, names_out = (token, past), ["token", "past"], ["logits", "current"]
        meta["state"] = []
        meta["queues"] = {"input": "past", "output": "current", "dilations": model.dilations, "channels": 8}
        meta["receptive_field"] = 1 + sum(model.dilations)
    with torch.no_grad():
        torch.onnx.export(model, args, str(onnx_path), input_names=names_in, output_names=names_out,
                          opset_version=17, dynamo=False)
    meta["onnx_sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(meta, indent=1))
    torch.save(model.state_dict(), folder / "weights.pt")
    return folder


def load_tiny_torch(kind: str, folder: Path) -> nn.Module:
    vocab_size = len(json.loads((folder / "model.json").read_text())["vocabulary"]["names"])
    model = TinyLstmStep(vocab_size) if kind == "lstm" else TinyWaveNet(vocab_size)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return model.eval()
