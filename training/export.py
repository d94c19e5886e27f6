"""Checkpoint -> ``models/<name>/model.onnx`` + ``model.json`` (DESIGN.md), verified before it lands.

The step graph (one token in, logits and next state out) is exported with the legacy TorchScript
exporter (opset 17, one file). Then the export checks itself: it runs the ONNX graph token by
token with onnxruntime (1 intra-op thread), keeping state exactly as the runtime does (LSTM h/c fed
back; WaveNet ring buffers driven by the sidecar's queue spec), over >= 500 tokens (real data kept
in the checkpoint, else seeded random ids), and compares every step's logits with the PyTorch
full-sequence forward. A max abs difference above `TOLERANCE` raises `ModelError`. Everything is
written to a temporary folder beside the target and renamed into place only once it passed.

The sidecar also says what the model is for (`style`, one word; `description`, one line) and,
when the training data can still be loaded (from the encoded-corpus cache, usually), the best
n-gram's test NLL on the same held-out split (`metrics.best_ngram_test_nll`), so a model's
quality can be read beside its bar without a run of `improv eval`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import improv
from improv.errors import ConfigError, ImprovError, ModelError
from training.checkpoint import load_checkpoint, model_from_checkpoint

TOLERANCE = 1e-4  # max abs logit difference, ONNX step stream vs PyTorch full sequence
CHECK_TOKENS = 512
SIZE_LIMIT_BYTES = 20 * 2**20  # shipped models stay below this
STYLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}")  # one word: bach, folk, irish, essen+oneills


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    max_abs_diff: float
    tokens: int
    source: str  # "data" or "random"
    onnx_bytes: int
    baseline: dict | None = None  # `training.evaluate.ngram_baseline`, None when not recorded
    baseline_why: str = ""  # why it was not


@dataclass(frozen=True)
class SidecarText:
    """What the sidecar says about the model beyond its checkpoint: `improv export --style/--description`."""

    name: str | None = None  # default: the folder name
    style: str | None = None  # default: the training corpora (improv.catalog.style_of)
    description: str = ""

    def __post_init__(self) -> None:
        if self.style is not None and not STYLE.fullmatch(self.style):
            raise ConfigError(f"--style {self.style!r}: use one word of at most 40 letters, digits, - _ . + "
                              "(e.g. folk, irish, bach)")
        if "\n" in self.description or "\r" in self.description:
            raise ConfigError("--description: use one line (no line breaks)")


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, text: SidecarText = SidecarText(),
                      check_tokens: int = CHECK_TOKENS, tolerance: float = TOLERANCE, baseline: bool = True,
                      cache_dir: str | Path | None = None) -> ExportReport:
    """Export, verify, then move into `out` (replacing an older export there only on success).
    `baseline`: also record the best n-gram's test NLL (`ngram_baseline`) when the data loads."""
    ckpt = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(ckpt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        onnx_path = tmp / "model.onnx"
        export_onnx(model, onnx_path)
        sidecar = make_sidecar(ckpt, model, text, out.name, onnx_path)
        _write_json(tmp / "model.json", sidecar)
        tokens, source = check_sequence(ckpt, len(sidecar["vocabulary"]["names"]), check_tokens)
        diff = max_abs_diff(model, tmp, tokens)
        if not diff <= tolerance:  # also catches NaN
            raise ModelError(f"{out}: ONNX step graph disagrees with the PyTorch model (max abs logit diff "
                             f"{diff:.3g} > {tolerance:g} over {len(tokens)} tokens); nothing was written, report a bug")
        sidecar["export_check"] = {"tokens": len(tokens), "source": source, "max_abs_logit_diff": diff}
        figures, why = ngram_figures(sidecar, cache_dir) if baseline else (None, "not asked for (--no-baseline)")
        sidecar["metrics"] = {**sidecar["metrics"], **(figures or {})}
        _write_json(tmp / "model.json", _json_safe(sidecar))
        _install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportReport(out, diff, len(tokens), source, (out / "model.onnx").stat().st_size, figures, why)


def ngram_figures(sidecar: dict, cache_dir: str | Path | None) -> tuple[dict | None, str]:
    """(`ngram_baseline` of the sidecar, "") or (None, why not): data that cannot be loaded (files
    gone, music21 missing, none named) leaves the baseline out, never the export."""
    from training.evaluate import ngram_baseline

    try:
        return ngram_baseline(sidecar, cache_dir=cache_dir), ""
    except (ImprovError, ValueError) as err:
        return None, " ".join(str(err).split())


def export_onnx(model: nn.Module, path: Path) -> None:
    """The model's step wrapper -> one self-contained ONNX file (opset 17, legacy exporter)."""
    step = model.step_module().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
        torch.onnx.export(step, step.example_inputs(), str(path), input_names=list(step.input_names),
                          output_names=list(step.output_names), opset_version=17, dynamo=False,
                          external_data=False, do_constant_folding=True)


def make_sidecar(ckpt: dict, model: nn.Module, text: SidecarText, folder_name: str, onnx_path: Path) -> dict:
    """model.json, every field of DESIGN.md; plain JSON (non-finite numbers become null)."""
    from improv.catalog import style_of

    train_config = ckpt.get("train_config", {})
    sidecar = {
        "format": "improv-step-model", "format_version": 1, "name": text.name or folder_name, "kind": ckpt["model_kind"],
        "style": text.style or style_of({"train_config": train_config}), "description": text.description.strip(),
        "onnx_file": onnx_path.name, "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "vocabulary": ckpt["vocabulary"], "token_input": "token", "logits_output": "logits",
        **model.sidecar_state(),
        "model_config": ckpt["model_config"], "train_config": train_config,
        "train_command": ckpt.get("train_command", ""), "data_hash": ckpt.get("data_hash", ""),
        "metrics": ckpt.get("metrics", {}), "improv_version": improv.__version__,
    }
    return _json_safe(sidecar)


def check_sequence(ckpt: dict, vocab_size: int, n: int) -> tuple[list[int], str]:
    """Real tokens kept in the checkpoint if there are enough, else seeded random ids."""
    sample = list(ckpt.get("sample_tokens") or [])
    if len(sample) >= n:
        return sample[:n], "data"
    return np.random.default_rng(0).integers(0, vocab_size, n).tolist(), "random"


def max_abs_diff(model: nn.Module, folder: Path, tokens: list[int]) -> float:
    """Max abs difference between the streamed ONNX logits and the full-sequence forward."""
    streamed = stream_logits(folder, tokens)  # (N, V)
    with torch.no_grad():
        full = model.eval()(torch.tensor([tokens], dtype=torch.int64))[0].numpy()  # (N, V)
    if streamed.shape != full.shape:
        raise ModelError(f"{folder}: ONNX logits have shape {streamed.shape}, the model {full.shape}; re-export")
    return float(np.abs(streamed - full).max())


def stream_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    """(N, V) logits of `tokens` stepped one at a time through the runtime's own `StepModel`
    (the sidecar checked against the graph, state kept outside it), as the daemon runs it."""
    from improv.model_step import StepModel

    model = StepModel.load(folder)
    state = model.new_state()
    return np.stack([model.step(t, state) for t in tokens])


def _install(tmp: Path, out: Path) -> None:
    """Rename the verified folder into place; an older export is removed only after that."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    return value


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
