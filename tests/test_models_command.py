"""`improv models`: the installed models listed with their sidecar's figures and a measured step time;
a broken model folder beside good ones is listed with what is wrong, and the good ones still are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from improv.catalog import description_of, style_of
from improv.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, ["models", *args], env={"COLUMNS": "300"})


def copy_model(source: Path, folder: Path, **sidecar) -> Path:
    """A copy of a model folder with these sidecar fields set (None removes a field)."""
    shutil.copytree(source, folder)
    path = folder / "model.json"
    meta = json.loads(path.read_text())
    meta.update(sidecar)
    meta = {k: v for k, v in meta.items() if v is not None}
    path.write_text(json.dumps(meta))
    return folder


@pytest.fixture
def shelf(tmp_path, tiny_model_dir, tiny_wavenet_dir) -> Path:
    """Two good models (one with the new sidecar fields, one without) and four broken folders."""
    root = tmp_path / "models"
    root.mkdir()
    copy_model(tiny_model_dir, root / "folk-lstm", name="folk-lstm", style="folk", description="Jigs and\nreels.",
               metrics={"test_nll": 1.25, "best_ngram_test_nll": 1.75, "best_ngram_order": 5})
    copy_model(tiny_wavenet_dir, root / "old-wavenet", name="old-wavenet", style=None, description=None,
               train_config={"corpus": ["essen", "oneills"]}, metrics={"test_nll": 1.5})
    copy_model(tiny_model_dir, root / "bad-json")
    (root / "bad-json" / "model.json").write_text("{not json")
    copy_model(tiny_model_dir, root / "no-onnx")
    (root / "no-onnx" / "model.onnx").unlink()
    copy_model(tiny_model_dir, root / "wrong-sha", onnx_sha256="0" * 64)
    shape = {"input": "h_in", "output": "h_out", "shape": [2, 1, 64]}
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    copy_model(tiny_model_dir, root / "wrong-shape", state=[shape, meta["state"][1]])
    copy_model(tiny_model_dir, root / ".folk-lstm.tmp")  # an export in progress: not listed
    (root / "notes").mkdir()  # a folder without a model: not listed
    return root


def test_lists_good_and_broken_models_as_json(shelf):
    result = invoke("--dir", str(shelf), "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    entries = {e["name"]: e for e in listing["models"]}
    assert sorted(entries) == ["bad-json", "folk-lstm", "no-onnx", "old-wavenet", "wrong-sha", "wrong-shape"]
    folk, old = entries["folk-lstm"], entries["old-wavenet"]
    assert folk["ok"] and folk["style"] == "folk" and folk["kind"] == "lstm" and folk["description"] == "Jigs and reels."
    assert folk["test_nll"] == 1.25 and folk["ngram_nll"] == 1.75 and folk["size_mb"] > 0
    assert 0 < folk["step_p50_ms"] <= folk["step_p99_ms"]
    assert old["ok"] and old["style"] == "essen+oneills" and old["description"] == "" and old["ngram_nll"] is None
    problems = {name: e["problem"] for name, e in entries.items() if not e["ok"]}
    assert "unreadable sidecar" in problems["bad-json"]
    assert "cannot read the model" in problems["no-onnx"]
    assert "do not match the sha256" in problems["wrong-sha"]
    assert "state h_in is [2, 1, 32] in the graph, [2, 1, 64] in model.json" in problems["wrong-shape"]
    assert all("\n" not in p for p in problems.values())


def test_table_shows_each_model_and_what_is_wrong(shelf):
    result = invoke("--dir", str(shelf), "--no-time")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.replace("│", " ").split())
    for name in ("folk-lstm", "old-wavenet", "bad-json", "no-onnx", "wrong-sha", "wrong-shape"):
        assert name in text
    assert "folk" in text and "essen+oneills" in text and "1.250" in text and "1.750" in text
    assert text.count("broken:") == 4
    assert ".folk-lstm.tmp" not in text and "notes" not in text


def test_no_time_skips_the_step_timing(shelf):
    listing = json.loads(invoke("--dir", str(shelf), "--json", "--no-time").stdout)
    assert all(e["step_p50_ms"] is None for e in listing["models"])


def test_only_broken_models_exit_2_after_listing_them(tmp_path, tiny_model_dir):
    root = tmp_path / "models"
    copy_model(tiny_model_dir, root / "wrong-sha", onnx_sha256="0" * 64)
    result = invoke("--dir", str(root))
    assert result.exit_code == 2
    assert "broken:" in result.stdout and "no usable model in" in result.output


def test_empty_or_missing_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    empty = invoke("--dir", str(tmp_path / "empty"))
    assert empty.exit_code == 2 and "no models in" in empty.output and "Traceback" not in empty.output
    missing = invoke("--dir", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "no such folder" in missing.output


def test_the_shipped_models_list_without_the_new_sidecar_fields():
    """The shipped sidecars predate style and description: their style falls back to the corpus."""
    result = invoke("--json", "--no-time")
    assert result.exit_code == 0, result.output
    entries = {e["name"]: e for e in json.loads(result.stdout)["models"]}
    assert entries["bach-lstm"]["ok"] and entries["bach-lstm"]["style"] == "bach"


def test_style_and_description_fallbacks():
    assert style_of({"style": "irish", "train_config": {"corpus": ["oneills"]}}) == "irish"
    assert style_of({"train_config": {"corpus": ["bach"], "data": ["../shared/data/jsb_chorales.tgz"]}}) == "bach+jsb_chorales"
    assert style_of({}) == "" and description_of({}) == ""
    assert description_of({"description": "  two\nlines "}) == "two lines"


def test_says_which_shipped_models_write_lines():
    """A melody model is told from a chorale model by the probe (`improv.voicing.writes_chords`)."""
    result = invoke("--json", "--no-time")
    assert result.exit_code == 0, result.output
    writes = {e["name"]: e["writes"] for e in json.loads(result.stdout)["models"]}
    assert writes["folk-lstm"] == "lines" and writes["irish-lstm"] == "lines"
    assert writes["bach-lstm"] == "chords" and writes["general-lstm"] == "chords"
