"""Model registry: kind -> (config dataclass, module class). A checkpoint names its kind and stores
the config as a dict, so `build_model(kind, config)` rebuilds exactly the trained architecture."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from torch import nn

from training.models.lstm import LSTM, LSTMConfig
from training.models.wavenet import WaveNet, WaveNetConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "lstm": (LSTMConfig, LSTM),
    "wavenet": (WaveNetConfig, WaveNet),
}


def make_config(kind: str, **fields):
    """The config dataclass of `kind` from keyword fields (unknown fields raise TypeError)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {sorted(MODELS)}")
    return MODELS[kind][0](**fields)


def build_model(kind: str, config: Mapping | object) -> nn.Module:
    """A freshly initialised model of `kind` from its config (a dataclass or its asdict)."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {sorted(MODELS)}")
    config_cls, module_cls = MODELS[kind]
    return module_cls(config_cls(**config))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "LSTM", "LSTMConfig", "WaveNet", "WaveNetConfig", "build_model", "make_config",
           "count_parameters"]
