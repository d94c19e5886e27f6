"""Checkpoints: a plain dict saved with `torch.save`, loaded with ``weights_only=True``.

Keys (DESIGN.md): ``model_kind``, ``model_config`` (dataclass asdict), ``vocabulary``
(`Vocabulary.to_dict`), ``train_config``, ``state_dict``, ``optimizer``, ``epoch`` (epochs completed),
``step`` (optimizer steps), ``best_valid_nll``, ``metrics``, ``train_command``, ``data_hash``, ``rng``.
Extra keys this trainer adds: ``history`` (per-epoch metrics, for an exact `--resume`),
``partial`` (the sums of the epoch in progress, when saved mid-epoch, e.g. on Ctrl-C), ``lr_scale``,
``best_epoch``, ``bad_epochs`` (plateau schedule, patience), ``world_size`` and ``sample_tokens``
(a real token sequence from the data, which `improv export` replays to check the ONNX graph).
Everything in it is tensors, numbers, strings, lists and dicts, so no pickle code ever runs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from improv.errors import ModelError
from improv.tokens import Vocabulary
from training.models import MODELS, build_model

REQUIRED = ("model_kind", "model_config", "vocabulary", "state_dict")


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    """Write atomically: a temp file in the same folder, then rename, so a crash never leaves half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Load and sanity-check a checkpoint; `ModelError` naming the file and the fix otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found; pass a .pt file written by `improv train`")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise ModelError(f"{path}: not a readable improv checkpoint ({err}); retrain or pick another file") from err
    missing = [k for k in REQUIRED if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks {', '.join(missing)}; it was not written by `improv train`")
    if checkpoint["model_kind"] not in MODELS:
        raise ModelError(f"{path}: unknown model kind {checkpoint['model_kind']!r}; use one of {sorted(MODELS)}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> tuple[nn.Module, Vocabulary]:
    """The trained model (eval mode, CPU) and its vocabulary."""
    model = build_model(checkpoint["model_kind"], checkpoint["model_config"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise ModelError(f"checkpoint weights do not fit its model_config ({detail}); retrain") from err
    vocab = Vocabulary.from_dict(checkpoint["vocabulary"])
    if len(vocab) != checkpoint["model_config"]["vocab_size"]:
        raise ModelError(f"checkpoint vocabulary has {len(vocab)} tokens but the model {checkpoint['model_config']['vocab_size']}; retrain")
    return model.eval(), vocab


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
