from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from improv.cli import app
from improv.errors import ConfigError, DataError, ModelError
from improv.tokens import Note, TokenConfig, Vocabulary, encode_notes
from tests.test_generate import EVENT, FakeStepModel, scale
from training import evaluate as ev
from training.ngram import fit_ngram


def melodies(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        pitches = 60 + rng.choice([0, 2, 4, 5, 7, 9, 11, 12], size=12)
        lengths = rng.choice([0.5, 1.0], size=12)
        onsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        pieces.append(encode_notes([Note(o, d, int(p)) for o, d, p in zip(onsets, lengths, pitches)], EVENT))
    return pieces


def fake_dataset(vocab: Vocabulary = EVENT, train=None, test=None) -> SimpleNamespace:
    return SimpleNamespace(
        vocab=vocab, names=[], skipped=[], description="fake melodies", data_hash="sha256:fake",
        splits={"train": melodies(30, 0) if train is None else train, "valid": [], "test": melodies(6, 1) if test is None else test},
    )


def bigram_model(dataset) -> FakeStepModel:
    """A step model whose logits are exactly the KN bigram's log-probabilities."""
    bigram = fit_ngram(dataset.splits["train"], len(EVENT), 2)
    table = np.log(np.stack([bigram.prob_dist([a]) for a in range(len(EVENT))]))
    return FakeStepModel(EVENT, table, name="bigram-as-model")


def test_a_model_equal_to_the_bigram_scores_exactly_like_it(tmp_path):
    dataset = fake_dataset()
    report = ev.evaluate(model=bigram_model(dataset), dataset=dataset, show_progress=False, json_path=tmp_path / "r.json")
    assert math.isclose(report["model"]["nll"], report["ngram"]["2"]["nll"], rel_tol=1e-6)
    assert math.isclose(report["model"]["acc"], report["ngram"]["2"]["acc"])
    assert report["tokens"] == sum(len(p) - 1 for p in dataset.splits["test"]) == report["ngram"]["1"]["tokens"]
    assert set(report["ngram"]) == {"1", "2", "3", "4", "5"}
    best = report["best_ngram"]
    assert best["nll"] == min(m["nll"] for m in report["ngram"].values())
    assert math.isclose(report["improvement_over_best_ngram"], (best["nll"] - report["model"]["nll"]) / best["nll"])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report))
    assert report["data"] == "fake melodies" and report["data_hash"] == "sha256:fake"
    metric_keys = {"nll", "ppl", "acc", "tokens"}  # Metrics.as_dict: as in metrics.json and the sidecar
    assert set(report["model"]) == metric_keys | {"name", "kind", "ms_per_step"}
    assert all(set(m) == metric_keys for m in report["ngram"].values()) and set(best) == metric_keys | {"order"}


def test_model_metrics_are_pooled_over_tokens_with_a_fresh_state_per_piece():
    table = np.random.default_rng(0).normal(size=(len(EVENT), len(EVENT)))
    model = FakeStepModel(EVENT, table)
    pieces = melodies(3, 2)
    result, ms_per_step = ev.step_metrics(model, pieces)
    logp = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    expected = -np.mean([logp[a, b] for p in pieces for a, b in zip(p[:-1], p[1:])])
    assert math.isclose(result.nll, expected, rel_tol=1e-6) and math.isclose(result.ppl, math.exp(expected))
    assert model.steps == result.tokens == sum(len(p) - 1 for p in pieces)
    assert ms_per_step >= 0


def test_data_in_another_vocabulary_is_mapped_through_names():
    dataset = fake_dataset()
    used = {EVENT.name(int(t)) for p in dataset.splits["train"] + dataset.splits["test"] for t in p}
    small = Vocabulary(EVENT.config, tuple(sorted(used, key=lambda n: -EVENT.id(n))))  # same tokens, other ids
    assert small.names != EVENT.names
    remapped = fake_dataset(small, [small.ids([EVENT.name(int(t)) for t in p]) for p in dataset.splits["train"]],
                            [small.ids([EVENT.name(int(t)) for t in p]) for p in dataset.splits["test"]])
    model = bigram_model(dataset)
    a = ev.evaluate(model=model, dataset=dataset, show_progress=False, orders=[1, 2])
    b = ev.evaluate(model=model, dataset=remapped, show_progress=False, orders=[1, 2])
    assert math.isclose(a["model"]["nll"], b["model"]["nll"]) and math.isclose(a["ngram"]["2"]["nll"], b["ngram"]["2"]["nll"])


def test_a_different_token_config_is_a_model_error():
    grid = Vocabulary(TokenConfig(scheme="grid", pitch_min=36, pitch_max=81))
    dataset = SimpleNamespace(vocab=grid, splits={"train": [np.zeros(8, np.int32)], "test": [np.zeros(8, np.int32)]})
    with pytest.raises(ModelError, match="token config"):
        ev.evaluate(model=FakeStepModel(EVENT, np.zeros((len(EVENT), len(EVENT)))), dataset=dataset, show_progress=False)


def test_an_empty_test_split_is_a_data_error():
    dataset = fake_dataset(test=[])
    with pytest.raises(DataError):
        ev.evaluate(model=bigram_model(fake_dataset()), dataset=dataset, show_progress=False)


def test_limit_tokens_cuts_the_test_set():
    dataset = fake_dataset()
    report = ev.evaluate(model=bigram_model(dataset), dataset=dataset, limit_tokens=30, show_progress=False, orders=[1])
    assert report["tokens"] == report["ngram"]["1"]["tokens"] == 30
    pieces = [np.arange(5), np.arange(4), np.arange(9)]
    assert [len(p) for p in ev.first_tokens(pieces, 6)] == [5, 3]
    assert [len(p) for p in ev.first_tokens(pieces, None)] == [5, 4, 9]


def test_data_settings_come_from_the_sidecar_unless_overridden():
    meta = {"train_config": {"corpus": ["bach"], "max_pieces": 50, "key": "c", "min_count": 2, "split_seed": 3, "lr": 0.1}}
    assert ev.data_settings(meta) == {"data": (), "corpus": ("bach",), "max_pieces": 50, "key": "c", "min_count": 2, "split_seed": 3}
    settings = ev.data_settings(meta, data=("x.tgz",), max_pieces=5, key=None)
    assert settings["data"] == ("x.tgz",) and settings["corpus"] == () and settings["max_pieces"] == 5 and settings["key"] == "c"
    with pytest.raises(ConfigError):
        ev.data_settings({"train_config": {}})


def test_eval_command_prints_a_table_and_writes_json(tmp_path, monkeypatch):
    import improv.model_step

    dataset = fake_dataset()
    model = bigram_model(dataset)
    model.meta["train_config"] = {"corpus": ["fake"]}
    seen = {}

    def load_data(settings, vocab, cache_dir):
        seen.update(settings)
        return dataset

    monkeypatch.setattr(improv.model_step.StepModel, "load", classmethod(lambda cls, path=None, threads=1: model))
    monkeypatch.setattr(ev, "_load_data", load_data)
    result = CliRunner().invoke(app, ["eval", "--model", "whatever", "--max-pieces", "9", "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert "5-gram" in result.output and "best n-gram" in result.output
    assert seen["corpus"] == ("fake",) and seen["max_pieces"] == 9
    assert json.loads((tmp_path / "e.json").read_text())["model"]["name"] == "bigram-as-model"


def test_eval_command_without_any_data_fails_with_one_line(tmp_path, monkeypatch):
    import improv.model_step

    model = bigram_model(fake_dataset())
    monkeypatch.setattr(improv.model_step.StepModel, "load", classmethod(lambda cls, path=None, threads=1: model))
    monkeypatch.delenv("IMPROV_VERBOSE", raising=False)
    result = CliRunner().invoke(app, ["eval", "--model", "whatever"])
    assert result.exit_code == 2 and "no evaluation data" in result.output


# --------------------------------------------------------------------------- end to end, real ONNX


def test_improv_eval_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    """Real ONNX model, real training.data on a folder of six small MIDI files."""
    from improv.midifile import write_midi

    rng = np.random.default_rng(0)
    for k in range(6):
        write_midi(tmp_path / "midi" / f"m{k}.mid", {"a": [Note(i / 2, 0.5, int(60 + rng.choice([0, 2, 4, 7]))) for i in range(24)]})
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "midi"), "--cache-dir", str(tmp_path / "cache"),
            "--limit-tokens", "40", "--json", str(tmp_path / "tiny.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "tiny.json").read_text())
    assert report["tokens"] == 40 and report["model"]["kind"] == "lstm" and "6 pieces" in report["data"]
    assert math.isclose(report["model"]["ppl"], math.exp(report["model"]["nll"]))
    assert report["model"]["nll"] > report["best_ngram"]["nll"]  # untrained: worse than counting
    assert report["data_hash"].startswith("sha256:")


@pytest.fixture(scope="module")
def tiny_grid_dir(tmp_path_factory):
    from tests.tiny_models import export_tiny
    from training.jsb import JSB_TOKEN_CONFIG

    return export_tiny("lstm", tmp_path_factory.mktemp("models") / "tiny-grid", config=JSB_TOKEN_CONFIG)


def test_grid_model_on_the_jsb_benchmark(tiny_grid_dir, jsb_archive, tmp_path):
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_grid_dir), "--data", str(jsb_archive), "--max-pieces", "2",
                                      "--limit-tokens", "200", "--max-order", "3", "--json", str(tmp_path / "g.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["tokens"] == 200 and set(report["ngram"]) == {"1", "2", "3"} and "JSB" in report["data"]
    out = tmp_path / "g.mid"
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_grid_dir), "--seed-corpus", str(jsb_archive), "--seed-piece", "1",
                                      "--seed-beats", "2", "--beats", "2", "--out", str(out), "--seed", "0"])
    assert result.exit_code == 0, result.output
    from improv.midifile import read_midi_tracks

    tracks = read_midi_tracks(out)
    assert tracks["seed"] and max(n.onset_beats for n in tracks["seed"]) < 2
    assert all(2 <= n.onset_beats < 4 for n in tracks.get("improv", []))
