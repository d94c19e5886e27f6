"""Bad models and configs: a corrupt or truncated ONNX file, a sidecar that does not match its
model, a vocabulary the live engine cannot use (a grid-scheme model), TOML with unknown keys,
wrong types or broken syntax. `improv run` and `improv demo` must print one line that names the
file and the problem, exit with code 2, and - for `improv run` - do so before opening any port.

`improv run` runs against the test's JACK server with `--backend jack --log-level info`: the MIDI
system is there, so the only thing wrong is the model or the config, and the info log shows how
far start-up got ("ports open" is logged the moment both ports exist). Sidecars that disagree with
their graph are also checked without JACK: `improv run` in-process on a fake MIDI system.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner


pytestmark = pytest.mark.timeout(300)


def _sidecar(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def _write_sidecar(folder: Path, meta: dict) -> None:
    (folder / "model.json").write_text(json.dumps(meta))


def _rehash(folder: Path) -> None:
    meta = _sidecar(folder)
    meta["onnx_sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    _write_sidecar(folder, meta)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def bad_models(tiny_model_dir, tmp_path_factory) -> dict[str, tuple[Path, str, str]]:
    """name -> (model folder, the path the message must name, a phrase it must contain)."""
    from improv.tokens import TokenConfig
    from tests.tiny_models import export_tiny

    root = tmp_path_factory.mktemp("bad-models")
    out: dict[str, tuple[Path, str, str]] = {}

    folder = _copy(tiny_model_dir, root / "truncated")
    onnx = folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    out["truncated"] = (folder, folder / "model.onnx", "do not match the sha256")

    folder = _copy(tiny_model_dir, root / "truncated-unhashed")  # no sha256 to catch it
    onnx = folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 3])
    meta = _sidecar(folder)
    del meta["onnx_sha256"]
    _write_sidecar(folder, meta)
    out["truncated-unhashed"] = (folder, folder / "model.onnx", "onnxruntime cannot load it")

    folder = _copy(tiny_model_dir, root / "garbage")  # garbage whose hash the sidecar agrees with
    (folder / "model.onnx").write_bytes(os.urandom(4096))
    _rehash(folder)
    out["garbage"] = (folder, folder / "model.onnx", "onnxruntime cannot load it")

    folder = _copy(tiny_model_dir, root / "empty")
    (folder / "model.onnx").write_bytes(b"")
    _rehash(folder)
    out["empty"] = (folder, folder / "model.onnx", "onnxruntime cannot load it")

    other = export_tiny("lstm", root / "narrow-vocab", config=TokenConfig(pitch_min=36, pitch_max=96))
    folder = _copy(tiny_model_dir, root / "foreign-sidecar")  # another model's sidecar
    meta = _sidecar(other)
    meta["onnx_sha256"] = _sidecar(tiny_model_dir)["onnx_sha256"]
    _write_sidecar(folder, meta)
    out["foreign-sidecar"] = (folder, folder / "model.onnx", "the sidecar does not belong to this model")

    folder = _copy(tiny_model_dir, root / "wrong-state")
    meta = _sidecar(folder)
    meta["state"][0]["shape"] = [3, 1, 32]
    _write_sidecar(folder, meta)
    out["wrong-state"] = (folder, folder / "model.onnx", "state h_in")

    folder = _copy(tiny_model_dir, root / "wrong-names")
    meta = _sidecar(folder)
    meta["token_input"] = "tokens"
    _write_sidecar(folder, meta)
    out["wrong-names"] = (folder, folder / "model.onnx", "graph lacks tokens")

    folder = _copy(tiny_model_dir, root / "broken-json")
    (folder / "model.json").write_text('{"format": "improv-step-model", "kind": ')
    out["broken-json"] = (folder, folder / "model.json", "unreadable sidecar")

    folder = _copy(tiny_model_dir, root / "not-a-sidecar")
    (folder / "model.json").write_text(json.dumps({"format": "something-else"}))
    out["not-a-sidecar"] = (folder, folder / "model.json", "not an improv model sidecar")

    folder = _copy(tiny_model_dir, root / "bad-vocabulary")
    meta = _sidecar(folder)
    meta["vocabulary"]["config"]["pitch_min"] = 200
    _write_sidecar(folder, meta)
    out["bad-vocabulary"] = (folder, folder / "model.json", "vocabulary is malformed (pitch range 200..108")

    folder = _copy(tiny_model_dir, root / "state-without-shape")
    meta = _sidecar(folder)
    del meta["state"][1]["shape"]
    _write_sidecar(folder, meta)
    out["state-without-shape"] = (folder, folder / "model.json", "malformed (KeyError: 'shape')")

    folder = export_tiny("lstm", root / "grid", config=TokenConfig(scheme="grid", pitch_min=36, pitch_max=81))
    out["grid"] = (folder, folder / "model.json", "grid-scheme model")

    out["missing"] = (root / "no-such-model", root / "no-such-model", "no model at")
    return out


CONFIGS = {  # name -> (TOML text, a phrase the message must contain)
    "unknown-key": ("[mode]\nsilence_beat = 2.0\n", "unknown key mode.silence_beat; did you mean 'silence_beats'"),
    "unknown-section": ("[sampler]\ntemperature = 0.5\n", "unknown section [sampler]"),
    "wrong-type": ('[sampling]\ntemperature = "hot"\n', "sampling.temperature must be a number"),
    "bad-value": ("[time]\nbpm = 1000\n", "time.bpm: use a tempo in 20..400 bpm"),
    "syntax": ("[mode\nmode = 'call'\n", "not valid TOML"),
}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in env.items() if not k.startswith("IMPROV_")}
    return subprocess.run([sys.executable, "-m", "improv.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()
             and not line.startswith("improv: INFO:") and "Warning" not in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _check(result, named: Path | str, phrase: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    line = _one_error_line(result)
    assert line.startswith("improv: ") and phrase in line, line
    assert str(named) in line, line
    return line


MODEL_CASES = [
    "truncated", "truncated-unhashed", "garbage", "empty", "foreign-sidecar", "wrong-state",
    "wrong-names", "broken-json", "not-a-sidecar", "bad-vocabulary", "state-without-shape", "grid",
    "missing"]
DEMO_CASES = ["truncated", "garbage", "foreign-sidecar", "broken-json", "missing",
              "bad-vocabulary", "state-without-shape", "grid"]


@pytest.mark.jack
@pytest.mark.parametrize("case", MODEL_CASES)
def test_improv_run_rejects_a_bad_model_before_opening_a_port(case, bad_models, jack_server, tmp_path):
    folder, named, phrase = bad_models[case]
    ready = tmp_path / "ready.json"
    result = _run(["run", "--backend", "jack", "--model", str(folder), "--quiet", "--log-level", "info",
                   "--ready-file", str(ready)], jack_server.env)
    line = _check(result, named, phrase)
    assert "ports open" not in result.stderr and "MIDI backend jack" in result.stderr, result.stderr
    assert not ready.exists() and "ready in" not in result.stdout
    assert not [p for p in jack_server.ports() if p.startswith("improv")], line


@pytest.mark.jack
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_improv_run_rejects_a_bad_config_before_opening_a_port(case, tiny_model_dir, jack_server, tmp_path):
    text, phrase = CONFIGS[case]
    config = tmp_path / f"{case}.toml"
    config.write_text(text)
    result = _run(["run", "--backend", "jack", "--model", str(tiny_model_dir), "--config", str(config),
                   "--quiet", "--log-level", "info"], jack_server.env)
    _check(result, str(config), phrase)
    assert "ports open" not in result.stderr and "model loaded" not in result.stderr


@pytest.mark.parametrize("case", DEMO_CASES)
def test_improv_demo_rejects_a_bad_model(case, bad_models, tmp_path):
    folder, named, phrase = bad_models[case]
    out = tmp_path / "demo.mid"
    result = _run(["demo", "--model", str(folder), "--out", str(out)], dict(os.environ))
    _check(result, named, phrase)
    assert not out.exists()


@pytest.mark.parametrize("case", ["unknown-key", "wrong-type", "syntax"])
def test_improv_demo_rejects_a_bad_config(case, tiny_model_dir, tmp_path):
    text, phrase = CONFIGS[case]
    config = tmp_path / f"{case}.toml"
    config.write_text(text)
    result = _run(["demo", "--model", str(tiny_model_dir), "--config", str(config),
                   "--out", str(tmp_path / "d.mid")], dict(os.environ))
    _check(result, str(config), phrase)


def test_the_live_model_check_in_process(bad_models, tiny_model_dir):
    """The check `improv run` makes after loading, before any port: event models pass."""
    from improv.errors import ModelError
    from improv.model_step import StepModel

    StepModel.load(tiny_model_dir).check_live()
    with pytest.raises(ModelError, match=r"grid/model.json: a grid-scheme model cannot play live"):
        StepModel.load(bad_models["grid"][0]).check_live()


MISMATCHES = {  # case -> (model kind, how its model.json disagrees with the graph, what the message says)
    "lstm-token-input": ("lstm", lambda m: m.update(token_input="tokens"), "graph lacks tokens"),
    "lstm-logits-output": ("lstm", lambda m: m.update(logits_output="probs"), "graph lacks probs"),
    "lstm-state-input": ("lstm", lambda m: m["state"][0].update(input="hidden"), "graph lacks hidden"),
    "lstm-state-output": ("lstm", lambda m: m["state"][1].update(output="cell"), "graph lacks cell"),
    "lstm-state-shape": ("lstm", lambda m: m["state"][0].update(shape=[3, 1, 32]),
                         "state h_in is [2, 1, 32] in the graph, [3, 1, 32] in model.json"),
    "wavenet-token-input": ("wavenet", lambda m: m.update(token_input="tokens"), "graph lacks tokens"),
    "wavenet-logits-output": ("wavenet", lambda m: m.update(logits_output="probs"), "graph lacks probs"),
    "wavenet-queue-input": ("wavenet", lambda m: m["queues"].update(input="history"), "graph lacks history"),
    "wavenet-queue-output": ("wavenet", lambda m: m["queues"].update(output="now"), "graph lacks now"),
    "wavenet-channels": ("wavenet", lambda m: m["queues"].update(channels=16),
                         "state past is [6, 8] in the graph, [6, 16] in model.json"),
    "wavenet-layers": ("wavenet", lambda m: m["queues"].update(dilations=[1, 2, 4, 1, 2]),
                       "state past is [6, 8] in the graph, [5, 8] in model.json"),
}


@pytest.fixture(scope="module")
def mismatched(tiny_model_dir, tiny_wavenet_dir, tmp_path_factory) -> dict[str, Path]:
    """case -> a copy of a tiny model whose sidecar disagrees with its graph (its sha256 still right)."""
    root = tmp_path_factory.mktemp("mismatched")
    out = {}
    for case, (kind, edit, _) in MISMATCHES.items():
        folder = _copy(tiny_model_dir if kind == "lstm" else tiny_wavenet_dir, root / case)
        meta = _sidecar(folder)
        edit(meta)
        _write_sidecar(folder, meta)
        out[case] = folder
    return out


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_load_names_the_graph_and_what_the_sidecar_gets_wrong(case, mismatched):
    from improv.errors import ModelError
    from improv.model_step import StepModel

    with pytest.raises(ModelError) as err:
        StepModel.load(mismatched[case])
    assert str(mismatched[case] / "model.onnx") in str(err.value) and MISMATCHES[case][2] in str(err.value)


def _invoke(args: list[str], monkeypatch) -> str:
    """`improv ARGS` in-process; asserts exit code 2 and returns the one line it printed."""
    from improv.cli import app

    monkeypatch.delenv("IMPROV_VERBOSE", raising=False)  # verbose re-raises: a traceback on purpose
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("improv: "), result.output
    return lines[0]


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_improv_demo_rejects_a_sidecar_that_disagrees_with_its_graph(case, mismatched, tmp_path, monkeypatch):
    out = tmp_path / "demo.mid"
    line = _invoke(["demo", "--model", str(mismatched[case]), "--out", str(out)], monkeypatch)
    assert str(mismatched[case] / "model.onnx") in line and MISMATCHES[case][2] in line, line
    assert not out.exists()


@pytest.fixture
def fake_midi(monkeypatch):
    """A MIDI system that is there (the backend "fake") and whose ports record being opened."""
    import improv.ports

    opened = []

    def open_port(kind, spec, backend):
        opened.append(kind)
        raise AssertionError(f"the {kind} port was opened")

    monkeypatch.setattr(improv.ports, "choose_backend", lambda name: "fake")
    monkeypatch.setattr(improv.ports, "open_port", open_port)
    level = logging.getLogger().level
    yield opened
    logging.getLogger().setLevel(level)  # run_daemon sets the root level from --log-level


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_improv_run_rejects_a_sidecar_that_disagrees_with_its_graph_before_opening_a_port(
        case, mismatched, fake_midi, monkeypatch):
    line = _invoke(["run", "--model", str(mismatched[case]), "--quiet"], monkeypatch)
    assert str(mismatched[case] / "model.onnx") in line and MISMATCHES[case][2] in line, line
    assert fake_midi == []
