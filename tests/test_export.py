"""Export: the ONNX step graph streamed token by token matches the PyTorch full-sequence forward."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from improv.errors import ModelError
from improv.model_step import session_options
from improv.tokens import TokenConfig, Vocabulary
from training.checkpoint import save_checkpoint
from training.dataset import synthetic_corpus
from training.export import TOLERANCE, export_checkpoint
from training.models import MODELS, LSTMConfig, WaveNet, WaveNetConfig, build_model
from training.train import TrainConfig, train

VOCAB = Vocabulary(TokenConfig())  # the full event vocabulary
SIZES = {
    "lstm": LSTMConfig(vocab_size=len(VOCAB), embed=16, hidden=32, layers=2),
    "wavenet": WaveNetConfig(vocab_size=len(VOCAB), channels=16, skip_channels=24, dilation_cycle=4, stacks=2),
}
SIDECAR_FIELDS = {"format", "format_version", "name", "kind", "onnx_file", "onnx_sha256", "vocabulary",
                  "token_input", "logits_output", "state", "queues", "receptive_field", "model_config",
                  "train_config", "train_command", "data_hash", "metrics", "improv_version"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def random_checkpoint(kind: str, path, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(kind, SIZES[kind])
    save_checkpoint({
        "model_kind": kind, "model_config": dataclasses.asdict(model.config), "vocabulary": VOCAB.to_dict(),
        "train_config": {"model": kind}, "state_dict": model.state_dict(), "epoch": 0, "step": 0,
        "metrics": {"valid_nll": 1.5, "test_nll": 1.6}, "train_command": "improv train --model " + kind,
        "data_hash": "sha256:test", "sample_tokens": [],
    }, path)
    return model.eval()


def full_logits(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([tokens]))[0].numpy()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_random_model_export_streams_like_the_sequence(kind, tmp_path):
    random_checkpoint(kind, tmp_path / "best.pt")
    report = export_checkpoint(tmp_path / "best.pt", tmp_path / "models" / f"tiny-{kind}")
    assert report.tokens >= 500 and report.source == "random"
    assert report.max_abs_diff <= TOLERANCE
    folder = tmp_path / "models" / f"tiny-{kind}"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx"]  # one file, no external data
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f"tiny-{kind}"]  # no temp folder left
    sidecar = json.loads((folder / "model.json").read_text())
    assert SIDECAR_FIELDS <= set(sidecar)
    assert sidecar["onnx_sha256"] == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert sidecar["kind"] == kind and sidecar["name"] == f"tiny-{kind}"
    assert sidecar["train_command"] == f"improv train --model {kind}" and sidecar["data_hash"] == "sha256:test"
    assert sidecar["metrics"]["test_nll"] == 1.6
    assert Vocabulary.from_dict(sidecar["vocabulary"]) == VOCAB
    if kind == "wavenet":
        assert sidecar["state"] == [] and sidecar["queues"]["dilations"] == [1, 2, 4, 8] * 2
        assert sidecar["queues"]["channels"] == 16 and sidecar["receptive_field"] == 31
    else:
        assert sidecar["queues"] is None and sidecar["receptive_field"] is None
        assert [s["shape"] for s in sidecar["state"]] == [[2, 1, 32]] * 2


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_trained_model_export(kind, tmp_path):
    corpus = synthetic_corpus(12, 300, seed=1)
    sizes = {"hidden": 24, "embed": 8} if kind == "lstm" else {"channels": 12, "skip_channels": 12, "dilation_cycle": 5}
    config = TrainConfig(model=kind, epochs=2, batch_size=8, window=48, lr=1e-2, threads=1, warmup_steps=1,
                         out=str(tmp_path / "run"), show_progress=False)
    train(config, sizes, corpus=corpus)
    report = export_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "model")
    assert report.source == "data" and report.tokens >= 500
    assert report.max_abs_diff <= TOLERANCE
    sidecar = json.loads((tmp_path / "model" / "model.json").read_text())
    assert sidecar["metrics"]["test_nll"] is not None and sidecar["export_check"]["max_abs_logit_diff"] <= TOLERANCE


def test_wrong_dilations_in_the_queue_spec_are_caught(tmp_path, monkeypatch):
    random_checkpoint("wavenet", tmp_path / "best.pt")
    good = WaveNet.sidecar_state

    def rotated(self):
        spec = good(self)
        spec["queues"]["dilations"] = spec["queues"]["dilations"][1:] + spec["queues"]["dilations"][:1]
        return spec

    monkeypatch.setattr(WaveNet, "sidecar_state", rotated)
    with pytest.raises(ModelError, match="disagrees"):
        export_checkpoint(tmp_path / "best.pt", tmp_path / "models" / "broken")
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-written


def test_swapped_lstm_state_is_caught_and_old_export_kept(tmp_path, monkeypatch):
    from training.models import LSTM

    random_checkpoint("lstm", tmp_path / "best.pt")
    out = tmp_path / "m"
    export_checkpoint(tmp_path / "best.pt", out)
    before = (out / "model.onnx").read_bytes()
    good = LSTM.sidecar_state

    def swapped(self):  # h fed back as c and c as h
        spec = good(self)
        spec["state"][0]["output"], spec["state"][1]["output"] = "c_out", "h_out"
        return spec

    monkeypatch.setattr(LSTM, "sidecar_state", swapped)
    with pytest.raises(ModelError, match="disagrees"):
        export_checkpoint(tmp_path / "best.pt", out)
    assert (out / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "m"]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_runtime_step_model_matches(kind, tmp_path):
    """improv.model_step (the daemon's runtime) agrees with PyTorch on an exported model."""
    from improv.model_step import StepModel

    model = random_checkpoint(kind, tmp_path / "best.pt", seed=5)
    export_checkpoint(tmp_path / "best.pt", tmp_path / "m")
    tokens = np.random.default_rng(1).integers(0, len(VOCAB), 300).tolist()
    step_model = StepModel.load(tmp_path / "m")
    state = step_model.new_state()
    streamed = np.stack([step_model.step(t, state) for t in tokens])
    assert np.abs(streamed - full_logits(model, tokens)).max() <= TOLERANCE


def test_export_command(tmp_path, monkeypatch):
    from improv.cli import app

    random_checkpoint("lstm", tmp_path / "best.pt")
    args = ["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "models" / "x")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "max abs logit diff" in result.output
    assert (tmp_path / "models" / "x" / "model.onnx").is_file()
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.output


def test_sidecar_style_description_and_ngram_baseline(tmp_path, monkeypatch):
    """`improv export --style --description` writes both; the best n-gram's test NLL is the one
    `improv eval` finds on the same held-out split; without --style the style is the training data."""
    from improv.cli import app
    from tests.test_corpus import melodies
    from training.evaluate import evaluate

    monkeypatch.setenv("IMPROV_CACHE", str(tmp_path / "cache"))
    music = melodies(tmp_path / "tunes", 10)
    config = TrainConfig(model="lstm", data=(str(music),), epochs=1, batch_size=4, window=16, threads=1,
                         workers=1, out=str(tmp_path / "run"), show_progress=False)
    train(config, {"embed": 8, "hidden": 16, "layers": 1})
    args = ["export", str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "folk"), "--style", "folk",
            "--description", "Scales in C, for the tests."]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best n-gram" in result.output
    sidecar = json.loads((tmp_path / "folk" / "model.json").read_text())
    assert sidecar["style"] == "folk" and sidecar["description"] == "Scales in C, for the tests."
    report = evaluate(model=tmp_path / "folk", show_progress=False)
    assert sidecar["metrics"]["best_ngram_test_nll"] == pytest.approx(report["best_ngram"]["nll"], rel=1e-9)
    assert sidecar["metrics"]["best_ngram_order"] == report["best_ngram"]["order"]
    assert sidecar["metrics"]["best_ngram_test_tokens"] == report["tokens"]

    plain = export_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "plain", baseline=False)
    sidecar = json.loads((tmp_path / "plain" / "model.json").read_text())
    assert sidecar["style"] == "tunes" and sidecar["description"] == "" and "best_ngram_test_nll" not in sidecar["metrics"]
    assert plain.baseline is None and "--no-baseline" in plain.baseline_why

    melodies(tmp_path / "tunes", 11)  # the data changed since training: its split is not the model's
    changed = export_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "changed")
    assert changed.baseline is None and "has changed since the model was trained" in changed.baseline_why
    assert "best_ngram_test_nll" not in json.loads((tmp_path / "changed" / "model.json").read_text())["metrics"]


def test_export_refuses_a_style_or_description_that_is_not_one_line(tmp_path):
    from improv.cli import app

    random_checkpoint("lstm", tmp_path / "best.pt")
    for bad in (["--style", "two words"], ["--description", "one\ntwo"]):
        result = CliRunner().invoke(app, ["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "x"), *bad])
        assert result.exit_code == 2 and bad[0] in result.output, result.output
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------- the folded WaveNet step graph

PRODUCTION_WAVENET = WaveNetConfig(vocab_size=len(VOCAB), channels=64, skip_channels=128, dilation_cycle=7, stacks=2)


def _node_counts(path) -> tuple[int, int]:
    """(nodes as exported, Constant excluded; nodes onnxruntime runs after ORT_ENABLE_ALL)."""
    import onnx
    import onnxruntime as ort

    exported = sum(n.op_type != "Constant" for n in onnx.load(str(path)).graph.node)
    options = session_options()
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return exported, len(onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("config", [SIZES["wavenet"], PRODUCTION_WAVENET], ids=["tiny", "production"])
def test_folded_wavenet_graph_is_small_and_streams_like_the_sequence(config, tmp_path):
    """Per layer: 2 Gemms fused with tanh / sigmoid, their product, the residual Gemm; everything else
    (the t - d taps of all layers, the skips, the heads, `current`) is a fixed handful of nodes."""
    torch.manual_seed(2)
    model = build_model("wavenet", config)
    with torch.no_grad():  # non-zero biases everywhere, so the bias folds are exercised
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint({"model_kind": "wavenet", "model_config": dataclasses.asdict(model.config),
                     "vocabulary": VOCAB.to_dict(), "train_config": {}, "state_dict": model.state_dict(),
                     "epoch": 0, "step": 0, "metrics": {}, "train_command": "", "data_hash": "",
                     "sample_tokens": []}, tmp_path / "best.pt")
    report = export_checkpoint(tmp_path / "best.pt", tmp_path / "m")  # verifies <= TOLERANCE itself
    assert report.tokens >= 500 and report.max_abs_diff <= TOLERANCE
    layers = len(config.dilations)
    exported, runs = _node_counts(tmp_path / "m" / "model.onnx")
    assert exported <= 6 * layers + 14, exported  # 97 for the production size
    assert runs <= 4 * layers + 12, runs  # 67 for the production size (was 144 unfolded)
    from training.export import export_onnx

    reference = model.eval().reference_step_module()
    model.step_module = lambda: reference  # the unfolded graph, for comparison
    export_onnx(model, tmp_path / "reference.onnx")
    assert _node_counts(tmp_path / "reference.onnx")[1] >= 2 * runs - 10  # the fold halves what runs


def test_folded_step_equals_the_reference_step():
    torch.manual_seed(3)
    model = build_model("wavenet", SIZES["wavenet"]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        folded, reference = model.step_module(), model.reference_step_module()
        for token in (0, 7, len(VOCAB) - 1):
            past = torch.randn(len(model.config.dilations), model.config.channels)
            (l1, c1), (l2, c2) = folded(torch.tensor([token]), past), reference(torch.tensor([token]), past)
            assert (l1 - l2).abs().max() < 1e-5 and (c1 - c2).abs().max() < 1e-5


def test_folded_step_keeps_the_checkpoint_layout():
    model = build_model("wavenet", SIZES["wavenet"])
    before = {k: v.shape for k, v in model.state_dict().items()}
    model.step_module()
    assert {k: v.shape for k, v in model.state_dict().items()} == before  # the step's tensors live in the step
    assert "layers.0.conv.weight" in before and "layers.0.out.weight" in before


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_runtime_fast_path_equals_the_plain_path(kind, tmp_path):
    """StepModel.step's IO-bound path (preallocated buffers) and its plain `session.run` path (taken by a
    second concurrent caller) give the same logits and states; a non-contiguous history works too."""
    import threading

    from improv.model_step import StepModel

    random_checkpoint(kind, tmp_path / "best.pt", seed=7)
    export_checkpoint(tmp_path / "best.pt", tmp_path / "m")
    model = StepModel.load(tmp_path / "m")
    assert model._fast is not None
    tokens = np.random.default_rng(2).integers(0, len(VOCAB), 200).tolist()
    fast_state, plain_state = model.new_state(), model.new_state()
    fast = [model.step(t, fast_state) for t in tokens]
    with model._io_lock:  # held: every step takes the plain path
        plain = [model.step(t, plain_state) for t in tokens]
    assert np.array_equal(np.stack(fast), np.stack(plain))
    assert fast[0] is not fast[1] and not np.shares_memory(fast[0], fast[1])  # callers may keep logits
    for name in fast_state.tensors:
        assert np.array_equal(fast_state.tensors[name], plain_state.tensors[name])
    listen, respond = model.new_state(), None  # alternating states, as the live engine steps them
    alternating = []
    for i, t in enumerate(tokens):
        alternating.append(model.step(t, listen))
        if i == 50:
            respond = listen.copy()
        if respond is not None:
            model.step(int(tokens[-1 - i]), respond)
    assert np.array_equal(np.stack(alternating), np.stack(fast))
    if kind == "wavenet":
        assert np.array_equal(fast_state.history, plain_state.history)
        odd = model.new_state()
        odd.history = np.asfortranarray(odd.history)  # reshape copies it: the gather must not reuse a copy
        assert np.array_equal(np.stack([model.step(t, odd) for t in tokens]), np.stack(fast))

    results = {}

    def run(i: int) -> None:
        state = model.new_state()
        results[i] = np.stack([model.step(t, state) for t in tokens])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(3):
        assert np.array_equal(results[i], np.stack(fast))


def test_folded_graph_initializers_unfold_to_an_equivalent_model(tmp_path):
    """What benchmarks can rebuild from a folded model.onnx alone: the same logits, from its initializers."""
    import onnx
    from onnx import numpy_helper

    model = random_checkpoint("wavenet", tmp_path / "best.pt", seed=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint({"model_kind": "wavenet", "model_config": dataclasses.asdict(model.config),
                     "vocabulary": VOCAB.to_dict(), "train_config": {}, "state_dict": model.state_dict(),
                     "epoch": 0, "step": 0, "metrics": {}, "train_command": "", "data_hash": "",
                     "sample_tokens": []}, tmp_path / "best.pt")
    export_checkpoint(tmp_path / "best.pt", tmp_path / "m")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "m" / "model.onnx")).graph.initializer}
    from training.models.wavenet import WaveNetStep

    again = build_model("wavenet", model.config)
    again.load_state_dict(WaveNetStep.unfold(inits, model.config))
    tokens = np.random.default_rng(5).integers(0, len(VOCAB), 200).tolist()
    assert np.abs(full_logits(again.eval(), tokens) - full_logits(model, tokens)).max() <= 1e-4
