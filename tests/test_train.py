"""The training loop: run folder, checkpoints, seed repeatability, resume, Ctrl-C, early stopping."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from improv.errors import ConfigError
import training.train
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.dataset import synthetic_corpus
from training.train import TrainConfig, parameter_hash, train

CORPUS = synthetic_corpus(10, 240, seed=2)
SIZES = {"lstm": {"embed": 8, "hidden": 16}, "wavenet": {"channels": 8, "skip_channels": 8, "dilation_cycle": 4}}
TIMING = {"tokens_per_s", "epoch_s", "wall_s"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def run(tmp_path: Path, kind: str = "lstm", name: str = "run", **changes) -> dict:
    fields = dict(model=kind, epochs=3, batch_size=4, window=32, lr=1e-2, warmup_steps=2, threads=1,
                  out=str(tmp_path / name), show_progress=False)
    calls = {k: changes.pop(k) for k in ("on_step", "resume", "train_command") if k in changes}
    sizes = {**SIZES[kind], **({"dropout": changes.pop("dropout")} if "dropout" in changes else {})}
    return train(TrainConfig(**{**fields, **changes}), sizes, corpus=CORPUS, **calls)


def curves(metrics: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in metrics["history"]]


@pytest.mark.parametrize("kind", ["lstm", "wavenet"])
def test_run_folder(kind, tmp_path):
    metrics = run(tmp_path, kind, epochs=2, train_command="improv train --model " + kind)
    out = tmp_path / "run"
    assert {"config.json", "metrics.json", "loss.png", "best.pt", "last.pt"} <= {p.name for p in out.iterdir()}
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["stopped"] == "epochs" and len(on_disk["history"]) == 2
    row = on_disk["history"][-1]
    assert {"train_nll", "train_ppl", "train_acc", "valid_nll", "valid_ppl", "valid_acc", "tokens_per_s", "wall_s"} <= set(row)
    test = on_disk["test"]
    assert set(test) == {"nll", "ppl", "acc", "tokens"}  # training.metrics.Metrics.as_dict
    assert test["tokens"] == sum(len(p) - 1 for p in CORPUS.splits["test"])  # whole pieces, every token once
    assert 0 < test["nll"] < 3 and test["ppl"] == pytest.approx(torch.tensor(test["nll"]).exp().item(), rel=1e-5)
    assert metrics["test"] == test
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((out / "config.json").read_text())
    assert config["train_command"] == "improv train --model " + kind and config["data_hash"] == CORPUS.data_hash


def test_checkpoint_round_trip(tmp_path):
    run(tmp_path, epochs=1)
    path = tmp_path / "run" / "best.pt"
    raw = torch.load(path, weights_only=True)  # no pickle code runs
    for key in ("model_kind", "model_config", "vocabulary", "train_config", "state_dict", "optimizer", "epoch",
                "step", "best_valid_nll", "metrics", "train_command", "data_hash", "rng"):
        assert key in raw
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    assert vocab == CORPUS.vocab and {"test_nll", "test_ppl", "test_acc", "test_tokens"} <= set(raw["metrics"])
    assert raw["metrics"]["test_nll"] is not None
    tokens = torch.from_numpy(CORPUS.splits["test"][0][:50]).long()[None]
    again, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run"))  # a run folder means its best.pt
    assert torch.equal(model(tokens), again(tokens))
    assert len(raw["sample_tokens"]) >= 500


def test_same_seed_same_run(tmp_path):
    a = run(tmp_path, name="a", seed=3)
    b = run(tmp_path, name="b", seed=3)
    c = run(tmp_path, name="c", seed=4)
    assert curves(a) == curves(b) and a["test"] == b["test"]
    assert curves(a) != curves(c)


@pytest.mark.parametrize("kind", ["lstm", "wavenet"])
def test_resume_continues_exactly(kind, tmp_path):
    # constant lr: a cosine schedule is planned over --epochs, which this resume extends from 1 to 3
    straight = run(tmp_path, kind, name="straight", epochs=3, dropout=0.3, schedule="none")
    run(tmp_path, kind, name="split", epochs=1, dropout=0.3, schedule="none")
    resumed = run(tmp_path, kind, name="split", epochs=3, resume=True, dropout=0.3, schedule="none")
    assert curves(resumed) == curves(straight)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_ctrl_c_leaves_a_usable_last_pt(tmp_path):
    straight = run(tmp_path, name="straight", epochs=2)

    def interrupt(trainer):
        if trainer.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, name="cut", epochs=2, on_step=interrupt)
    checkpoint = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert checkpoint["step"] == 5 and checkpoint["partial"]["batches"] == 5
    model, _ = model_from_checkpoint(checkpoint)  # usable: loads and runs
    assert model(torch.zeros(1, 4, dtype=torch.int64)).shape == (1, 4, len(CORPUS.vocab))
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["stopped"] == "interrupted"
    resumed = run(tmp_path, name="cut", epochs=2, resume=True)  # and resumes mid-epoch, exactly
    assert curves(resumed) == curves(straight)


def test_ctrl_c_during_an_epochs_bookkeeping_waits_for_it(tmp_path, monkeypatch):
    """A real SIGINT while the loop saves epoch 1 (between choosing the best weights and best.pt)
    lands once the epoch is committed: last.pt, best.pt and the history agree, and --resume goes on."""
    straight = run(tmp_path, name="straight", epochs=2)
    save, saved = training.train.save_checkpoint, []

    def save_after_a_ctrl_c(checkpoint, path):
        saved.append(path.name)
        if len(saved) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, delivered as the terminal delivers it
        save(checkpoint, path)

    monkeypatch.setattr(training.train, "save_checkpoint", save_after_a_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, name="cut", epochs=2)
    monkeypatch.undo()
    assert saved == ["last.pt", "best.pt", "last.pt"]  # epoch 1 committed, then the interrupt's own
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    last, best = load_checkpoint(tmp_path / "cut" / "last.pt"), load_checkpoint(tmp_path / "cut" / "best.pt")
    assert last["epoch"] == last["best_epoch"] == best["epoch"] == len(last["history"]) == 1
    assert last["partial"] is None and last["history"] == best["history"]
    assert all(torch.equal(last["state_dict"][k], best["state_dict"][k]) for k in last["state_dict"])
    on_disk = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert on_disk["stopped"] == "interrupted" and on_disk["history"] == last["history"]
    resumed = run(tmp_path, name="cut", epochs=2, resume=True)
    assert curves(resumed) == curves(straight) and resumed["test"] == straight["test"]


def test_early_stopping(tmp_path):
    # lr so small that float32 weights cannot move: validation never improves after epoch 1
    metrics = run(tmp_path, epochs=10, patience=2, lr=1e-12)
    assert metrics["stopped"] == "patience" and len(metrics["history"]) == 3 and metrics["best_epoch"] == 1


def test_time_budget_stops_gracefully(tmp_path):
    metrics = run(tmp_path, epochs=50, max_minutes=1e-5)
    assert metrics["stopped"] == "time" and len(metrics["history"]) == 1
    assert not metrics["history"][0]["complete"]
    assert (tmp_path / "run" / "best.pt").is_file() and metrics["test"]["nll"] is not None


def test_bad_model_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="channels"):
        train(TrainConfig(out=str(tmp_path / "x"), threads=1, show_progress=False), {"channels": 8}, corpus=CORPUS)


def test_train_command_line_on_bach_chorales(tmp_path, monkeypatch):
    """`improv train --corpus bach` end to end: music21 parses 5 real chorales into a fresh cache."""
    from improv.cli import app

    monkeypatch.setenv("IMPROV_CACHE", str(tmp_path / "cache"))
    args = ["train", "--model", "wavenet", "--corpus", "bach", "--max-pieces", "5", "--epochs", "1",
            "--channels", "8", "--skip-channels", "8", "--wavenet-layers", "3", "--stacks", "1", "--window", "32",
            "--threads", "1", "--workers", "1", "--no-progress", "--out", str(tmp_path / "cli")]
    monkeypatch.setattr(sys, "argv", ["improv", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 5  # parsed here, not read from another run's cache
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["pieces"] == {"train": 3, "valid": 1, "test": 1} and metrics["tokens"]["train"] > 500
    assert 0 < metrics["test"]["nll"] < 10 and metrics["vocab_size"] > 50
    checkpoint = load_checkpoint(tmp_path / "cli" / "best.pt")
    assert checkpoint["train_command"] == "improv " + " ".join(args)
    assert tuple(checkpoint["train_config"]["corpus"]) == ("bach",) and checkpoint["train_config"]["max_pieces"] == 5
    assert checkpoint["model_config"]["dilation_cycle"] == 3 and checkpoint["vocabulary"]["config"]["scheme"] == "event"
    assert "receptive field 8 tokens" in " ".join(result.output.split())
    wrong = CliRunner().invoke(app, ["train", "--model", "lstm", "--channels", "8", "--corpus", "bach", "--max-pieces", "5",
                                     "--workers", "1", "--out", str(tmp_path / "w")])
    assert wrong.exit_code == 2 and "channels" in wrong.output


def test_train_command_line_on_two_corpora(tmp_path, monkeypatch):
    """`improv train --corpus oneills --corpus ryans --max-pieces 3`: one run on both corpora, three
    pieces of each (a total cut would take all six from the first), through a fresh cache."""
    from improv.cli import app

    monkeypatch.setenv("IMPROV_CACHE", str(tmp_path / "cache"))
    args = ["train", "--model", "lstm", "--corpus", "oneills", "--corpus", "ryans", "--max-pieces", "3",
            "--epochs", "2", "--embed", "8", "--hidden", "16", "--layers", "1", "--window", "32", "--batch-size", "4",
            "--threads", "1", "--workers", "1", "--no-progress", "--out", str(tmp_path / "two")]
    monkeypatch.setattr(sys, "argv", ["improv", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert sum(metrics["pieces"].values()) == 6 and metrics["pieces"]["test"] >= 1, metrics["pieces"]
    assert len(metrics["history"]) == 2 and 0 < metrics["test"]["nll"] < 10
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert tuple(config["train_config"]["corpus"]) == ("oneills", "ryans")
    assert config["data"] == "music21 corpus oneills + music21 corpus ryans, 6 pieces"


def test_jsb_smoke(jsb_archive, tmp_path):
    """A small LSTM on 10 chorales per split learns the grid: test NLL well under the 3.85 nats of
    a uniform guess over 47 classes (measured 1.58-1.71 over seeds 0-4, about 2 s; unigram 3.53)."""
    config = TrainConfig(model="lstm", data=(str(jsb_archive),), max_pieces=10, epochs=10, batch_size=8, window=64,
                         lr=2e-2, threads=1, out=str(tmp_path / "jsb"), show_progress=False)
    metrics = train(config, {"embed": 16, "hidden": 64})
    assert metrics["vocab_size"] == 47 and metrics["test"]["nll"] < 2.5
    checkpoint = load_checkpoint(tmp_path / "jsb" / "best.pt")
    assert checkpoint["vocabulary"]["config"]["scheme"] == "grid"
    assert dataclasses.asdict(config)["data"] == checkpoint["train_config"]["data"]
