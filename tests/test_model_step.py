"""improv.model_step: the runtime side of the step-model contract."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from improv.errors import ModelError
from improv.model_step import StepModel
from tests.tiny_models import load_tiny_torch


@pytest.mark.parametrize("kind", ["lstm", "wavenet"])
def test_streaming_matches_full_sequence(kind, tiny_model_dir, tiny_wavenet_dir):
    folder = tiny_model_dir if kind == "lstm" else tiny_wavenet_dir
    model = StepModel.load(folder)
    torch_model = load_tiny_torch(kind, folder)
    tokens = np.random.default_rng(1).integers(0, len(model.vocab), 600)
    state = model.new_state()
    streamed = np.stack([model.step(int(t), state) for t in tokens])
    with torch.no_grad():
        full = torch_model.sequence(torch.as_tensor(tokens)).numpy()
    assert np.abs(streamed - full).max() <= 1e-4
    assert state.position == 600


def test_copied_state_does_not_disturb_the_original(tiny_wavenet_dir):
    model = StepModel.load(tiny_wavenet_dir)
    state = model.new_state()
    model.feed([5, 6, 7, 8, 9], state)
    branch = state.copy()
    model.feed([10, 11, 12], branch)
    a = model.step(13, state)
    fresh = model.new_state()
    model.feed([5, 6, 7, 8, 9], fresh)
    assert np.array_equal(a, model.step(13, fresh))


def test_loads_by_file_and_reports_vocabulary(tiny_model_dir):
    model = StepModel.load(tiny_model_dir / "model.onnx")
    assert model.kind == "lstm" and len(model.vocab) == 202
    assert model.step(0, model.new_state()).shape == (202,)


def _copy(src, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    return dst


def test_truncated_onnx_is_one_clear_error(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="sha256"):
        StepModel.load(folder)
    meta = json.loads((folder / "model.json").read_text())
    del meta["onnx_sha256"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        StepModel.load(folder)


def test_sidecar_from_another_model_is_rejected(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta["vocabulary"]["names"] = meta["vocabulary"]["names"][:-3]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="classes but the sidecar vocabulary"):
        StepModel.load(folder)


@pytest.mark.parametrize("text", ["", "{not json", '{"format": "other"}', '{"format": "improv-step-model"}'])
def test_bad_sidecars(text, tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    (folder / "model.json").write_text(text)
    with pytest.raises(ModelError, match="model.json"):
        StepModel.load(folder)


def test_unknown_model_names_the_known_ones(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("IMPROV_MODELS", str(tiny_model_dir.parent))
    with pytest.raises(ModelError, match="known models: tiny-lstm"):
        StepModel.load("nope")
    assert StepModel.load("tiny-lstm").name == "tiny-lstm"
