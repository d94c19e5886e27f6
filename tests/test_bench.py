"""`improv bench`: structure, never speed. One `--quick` run on tiny models (JACK included when jackd
is installed) is checked for every required key, numbers or null with a reason (with
IMPROV_REQUIRE_JACK=1, null only where the tiny models cannot give the figure), and ratios that
follow from the p50s written beside them; the pieces that turn recordings into numbers are checked
on synthetic data. Wall-clock bounds are generous on purpose: the machine is shared.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import mido
import pytest

from benchmarks import BenchOptions, run_bench
from benchmarks.midi import duet_latencies, errors_from_log, grid_errors
from benchmarks.report import Report, required_keys
from improv.commands.bench import parse_checkpoints, parse_sections
from improv.errors import ConfigError

MODELS = ("tiny-lstm", "tiny-wavenet")
REQUIRE_JACK = os.environ.get("IMPROV_REQUIRE_JACK") == "1"
HAVE_JACK = shutil.which("jackd") is not None
# The required figures the tiny models cannot give, and the reason the bench must give for each;
# any other null (a section that crashed, a daemon that never started) fails under IMPROV_REQUIRE_JACK=1.
NULL_BY_DESIGN = {
    "step.tiny-lstm.naive_rf_over_cached": "no receptive field",  # an LSTM has none
    "step.tiny-wavenet.*": "no PyTorch module for tiny-wavenet",  # its export keeps no model_config
    "midi.p*.reaction_p99_ms": "never played a note of its own",  # a reaction needs improv to play in between
    "quality.tiny-*": "no evaluation data",  # the tiny sidecars name no training data
}


def null_by_design(key: str, why: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) and phrase in why for pattern, phrase in NULL_BY_DESIGN.items())


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    """`improv bench --quick --json` on tiny models, shortened further where the keys stay the same."""
    from tests.tiny_models import export_tiny

    if REQUIRE_JACK and not HAVE_JACK:
        pytest.fail("IMPROV_REQUIRE_JACK=1 but jackd is not installed (apt install jackd2)")
    tmp = tmp_path_factory.mktemp("bench")
    for name in MODELS:
        export_tiny(name.split("-")[1], tmp / "models" / name)
    jsb = tmp / "jsb" / "metrics.json"
    jsb.parent.mkdir()
    jsb.write_text(json.dumps({"model": "lstm", "test": {"nll": 0.5, "acc": 0.8}, "stopped": "epochs"}))
    out = tmp / "bench.json"
    env = dict(os.environ, IMPROV_MODELS=str(tmp / "models"), IMPROV_CACHE=str(tmp / "cache"))
    cmd = [sys.executable, "-m", "improv.cli", "bench", "--quick", "--json", str(out), "--jsb-metrics", str(jsb),
           "--midi-seconds", "11", "--train-steps", "1", "--train-threads", "1", "--max-pieces", "4"]
    # 11 s: two calls per stream (a call and its answer take 10 beats, 5 s): an answer chord leaves
    # in one JACK cycle, and a cycle the recorder misses must not leave the stream with no figure
    result = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"json": json.loads(out.read_text()), "stdout": result.stdout}


@pytest.mark.jack
def test_every_required_key_is_a_number_or_null_with_a_reason(bench):
    data = bench["json"]
    for key in required_keys(list(MODELS)):
        assert key in data, f"{key} missing from the JSON"
        value = data[key]
        if value is None:
            assert isinstance(data.get(f"{key}.why"), str) and data[f"{key}.why"], f"{key} is null without a reason"
            assert not REQUIRE_JACK or null_by_design(key, data[f"{key}.why"]), f"{key} is null: {data[f'{key}.why']}"
        else:
            assert isinstance(value, (int, float)) and math.isfinite(value), f"{key} = {value!r}"
    for key, value in data.items():  # every other value: a number, null with a reason, or a described string
        if key.endswith((".why", ".target", "note", "source")) or key.startswith("meta."):
            assert isinstance(value, str) or key.startswith("meta."), key
            continue
        if key.endswith(".pass"):
            assert value in (True, False, None), key
            continue
        assert value is None or isinstance(value, (int, float)), f"{key} = {value!r}"
        if value is None:
            assert data.get(f"{key}.why"), f"{key} is null without a reason"


@pytest.mark.jack
def test_ratios_follow_from_the_p50s_of_the_same_run(bench):
    data = bench["json"]
    checked = 0
    for m in MODELS:
        p = f"step.{m}"
        pairs = {"torch_over_onnx": ("torch_p50_ms", "onnx_p50_ms"),
                 "naive_over_cached": ("naive256_p50_ms", "onnx_p50_ms"),
                 "naive_rf_over_cached": ("naive_rf_p50_ms", "onnx_p50_ms"),
                 "long_over_short_context": ("ctx10000_p50_ms", "ctx100_p50_ms"),
                 "after_idle_over_cached": ("after_idle_p50_ms", "onnx_p50_ms")}
        for ratio, (top, bottom) in pairs.items():
            if data[f"{p}.{ratio}"] is None:
                continue
            assert data[f"{p}.{ratio}"] == pytest.approx(data[f"{p}.{top}"] / data[f"{p}.{bottom}"], rel=1e-9)
            checked += 1
        assert data[f"{p}.onnx_p50_ms"] <= data[f"{p}.onnx_p99_ms"] <= data[f"{p}.onnx_max_ms"]
        assert data[f"{p}.onnx_p50_ms"] < 50, "a tiny model's cached step took over 50 ms at the median"
    assert checked >= 4  # the LSTM has torch, naive and context ratios; the WaveNet at least context
    assert data["step.tiny-lstm.naive_rf_over_cached"] is None and "receptive field" in \
        data["step.tiny-lstm.naive_rf_over_cached.why"]


@pytest.mark.jack
def test_naive_recompute_grows_with_the_window(bench):
    data = bench["json"]
    assert data["step.tiny-lstm.naive256_p50_ms"] > data["step.tiny-lstm.naive64_p50_ms"], \
        "recomputing 256 tokens per step was not slower than 64: the window is not really recomputed"


@pytest.mark.jack
def test_offline_sections_and_targets(bench):
    data = bench["json"]
    assert data["quality.jsb.test_nll"] == 0.5 and data["quality.jsb.nll_per_16th"] == pytest.approx(2.0)
    if data["corpus.cold_s"] is not None:
        assert data["corpus.cached_s"] is not None and 0 < data["corpus.cached_s"] < 300
    for m in MODELS:
        value = data[f"train.{m}.tokens_per_s"]
        assert value is None or value > 0
        assert data[f"quality.{m}.nll"] is None and data[f"quality.{m}.nll.why"]  # tiny sidecars name no data
    assert data["step.tiny-lstm.onnx_p99_ms.target"] == "<= 0.3"
    assert data["step.tiny-lstm.onnx_p99_ms.pass"] in (True, False)
    assert "PASS" in bench["stdout"] or "MISS" in bench["stdout"]


@pytest.mark.jack
def test_jack_section(bench):
    data = bench["json"]
    keys = [f"midi.p{p}.{k}" for p in (32, 64) for k in ("reaction_p99_ms", "plan_error_p99_ms")]
    if not HAVE_JACK:
        assert all(data[k] is None and "jackd" in data[f"{k}.why"] for k in keys)
        pytest.skip("jackd not installed: the MIDI section reported itself missing, as it should")
    for period in (32, 64):
        p = f"midi.p{period}"
        assert data[f"{p}.thru_p99_ms"] is not None or data[f"{p}.plan_error_p99_ms"] is not None, \
            data.get(f"{p}.plan_error_p99_ms.why")
    if REQUIRE_JACK:  # a reaction needs improv to play between two player notes: null is allowed, with why
        for period in (32, 64):
            p = f"midi.p{period}"
            assert isinstance(data[f"{p}.plan_error_p99_ms"], float), data.get(f"{p}.plan_error_p99_ms.why")
            assert isinstance(data[f"{p}.thru_p99_ms"], float), data.get(f"{p}.thru_p99_ms.why")
    # README: start-up 0.5 s, RSS ~140 MB (a tiny model: less); bounds for a noisy shared machine
    assert data["daemon.startup_s"] is not None and 0 < data["daemon.startup_s"] < 5
    assert data["daemon.rss_mb"] is not None and 40 < data["daemon.rss_mb"] < 400
    for key in keys + ["daemon.startup_s"]:
        if data[key] is not None:
            assert data[key] >= 0


# ---------------------------------------------------------------------- pieces, on synthetic data


def test_the_memorys_target_follows_each_models_home():
    """At home (a corpus the model trained on) the memory must stay out of the way; away, take over."""
    from types import SimpleNamespace

    from benchmarks.music import _adapt_target, home_corpora

    folk = SimpleNamespace(meta={"train_config": {"corpus": ["essen"]}})
    assert home_corpora(folk) == {"essen"} and home_corpora(SimpleNamespace(meta={})) == {"bach"}
    report = Report()
    for corpus, gain in (("essen", 0.01), ("bach", 0.5), ("oneills", 0.2)):
        key = f"music.folk.{corpus}.adapt_gain"
        report.put(key, gain)
        report.targets[key] = _adapt_target(key, corpus in home_corpora(folk))
    verdicts = {c: report.verdict(f"music.folk.{c}.adapt_gain") for c in ("essen", "bach", "oneills")}
    assert verdicts == {"essen": True, "bach": True, "oneills": False}
    assert report.to_json()["music.folk.essen.adapt_gain.target"] == ">= -0.01"


def test_no_shipped_model_gives_null_with_the_reason(tmp_path):
    report = run_bench(BenchOptions(models_dir=tmp_path, sections=("step",)))
    data = report.to_json()
    for key in required_keys(["bach-lstm", "bach-wavenet"]):
        assert data[key] is None and data[f"{key}.why"], key
    assert "no shipped model" in data["step.bach-lstm.onnx_p99_ms.why"]
    assert "not run" in data["midi.p32.reaction_p99_ms.why"]


def test_quality_scores_each_model_on_its_own_held_out_split(tmp_path, monkeypatch):
    """Two models trained on different data: each is scored on its own split (the n-gram the
    export recorded on that split is the bench's best n-gram), with the improvement target."""
    import torch

    from benchmarks.train import TrainOptions, quality
    from tests.test_corpus import melodies
    from training.export import export_checkpoint
    from training.train import TrainConfig, train

    torch.set_num_threads(1)
    monkeypatch.setenv("IMPROV_CACHE", str(tmp_path / "cache"))
    models = []
    for name, count, shift in (("low", 8, 0), ("high", 30, 7)):
        music = melodies(tmp_path / name, count, shift)
        config = TrainConfig(model="lstm", data=(str(music),), epochs=1, batch_size=4, window=16, threads=1,
                             workers=1, out=str(tmp_path / f"run-{name}"), show_progress=False)
        train(config, {"embed": 8, "hidden": 16, "layers": 1})
        export_checkpoint(tmp_path / f"run-{name}" / "best.pt", tmp_path / "models" / name)
        models.append((name, tmp_path / "models" / name))
    report = Report()
    quality(report, models + [("missing", tmp_path / "models" / "missing")], TrainOptions(eval_tokens=None))
    data = report.to_json()
    for name, folder in models:
        sidecar = json.loads((folder / "model.json").read_text())
        p = f"quality.{name}"
        assert data[f"{p}.best_ngram_nll"] == pytest.approx(sidecar["metrics"]["best_ngram_test_nll"], rel=1e-9)
        assert data[f"{p}.tokens"] == sidecar["metrics"]["best_ngram_test_tokens"]
        assert data[f"{p}.improvement_over_best_ngram"] == pytest.approx(
            1 - data[f"{p}.nll"] / data[f"{p}.best_ngram_nll"], rel=1e-9)
        assert data[f"{p}.improvement_over_best_ngram.target"] == ">= 0.2"
        assert data[f"{p}.improvement_over_best_ngram.pass"] in (True, False)
        assert "NOT the data" not in data[f"{p}.data_note"]
    assert data["quality.low.tokens"] != data["quality.high.tokens"]
    for key in ("nll", "best_ngram_nll", "improvement_over_best_ngram"):
        assert data[f"quality.missing.{key}"] is None and "no model at" in data[f"quality.missing.{key}.why"]
    assert {f"quality.{m}.{k}" for m in ("low", "high") for k in ("nll", "best_ngram_nll")} <= set(
        required_keys(["low", "high"]))


def test_report_never_writes_a_made_up_number(tmp_path):
    report = Report()
    report.put("step.m.onnx_p99_ms", float("nan"), "p99", "ms")
    report.put("daemon.rss_mb", 120.0, "rss", "MB")
    report.missing(["daemon.rss_mb", "daemon.startup_s"], "no daemon")
    data = json.loads(report.write_json(tmp_path / "b.json").read_text())
    assert data["step.m.onnx_p99_ms"] is None and "finite" in data["step.m.onnx_p99_ms.why"]
    assert data["daemon.rss_mb"] == 120.0 and data["daemon.rss_mb.pass"] is True
    assert data["daemon.startup_s"] is None and data["daemon.startup_s.why"] == "no daemon"


def test_plan_error_from_the_grid():
    origin, bpm, tpb = 1000.0, 120.0, 12
    tick = 60.0 / (bpm * tpb)
    received = [(origin + k * tick + 0.0004, [0x90, 60, 80]) for k in (240, 243, 250)]
    received += [(origin + 241 * tick, [0x80, 60, 0])]  # note-offs are not answer notes
    errors = grid_errors(received, {"beat_origin_s": origin, "bpm": bpm}, tpb)
    assert errors == pytest.approx([0.0004] * 3, abs=1e-9)


def test_plan_error_from_a_timing_log(tmp_path):
    from benchmarks.midi import dropped_from_output
    from improv.timing_log import TimingLog
    from improv.scheduler import SendRecord

    on, off = mido.Message("note_on", note=60, velocity=80), mido.Message("note_off", note=60)
    records = deque([SendRecord(10.0, 10.0001, on, "response"), SendRecord(10.2, 10.2001, on.copy(note=40), "thru"),
                     SendRecord(11.0, 11.0002, on.copy(note=64), "response"), SendRecord(11.0, 11.0002, off, "response")])
    log = TimingLog(tmp_path / "timing.csv", records)  # the very writer `improv run --timing-log` uses
    log.close()
    received = [(10.0007, [0x90, 60, 80]), (10.2004, [0x90, 40, 80]), (11.0009, [0x90, 64, 80])]
    errors, lost, _ = errors_from_log(tmp_path / "timing.csv", received)
    assert errors == pytest.approx([0.0007, 0.0009]) and lost == 0  # the thru echo is not an answer note
    # the first answer note lost in JACK: not matched to a later note of the same pitch
    errors, lost, _ = errors_from_log(tmp_path / "timing.csv", received[1:] + [(12.0, [0x90, 60, 80])])
    assert errors == pytest.approx([0.0009]) and lost == 1
    out = "WARNING dropped a response note-on 12 ms late\nINFO fine\nWARNING dropped a duet note-on 9 ms late\n"
    assert dropped_from_output(out) == 2


def test_duet_reaction_from_the_log_counts_notes_lost_in_jack_apart(tmp_path):
    from benchmarks.midi import inside_improv, reactions_from_log
    from improv.timing_log import TimingLog
    from improv.scheduler import SendRecord

    on = mido.Message("note_on", note=60, velocity=80)
    sent = [SendRecord(1.0003, 1.0004, on.copy(note=40), "thru"),  # improv stamped the note at 1.0003
            SendRecord(1.0003, 1.0015, on, "duet"),  # its reaction
            SendRecord(2.0002, 2.0003, on.copy(note=41), "thru"),
            SendRecord(2.0002, 2.002, on.copy(note=62), "duet"),  # lost on the way out
            SendRecord(2.1, 2.1, on.copy(note=64), "duet"),  # improv's next note: not the reaction
            SendRecord(3.0002, 3.0003, on.copy(note=42), "thru"),  # answered by nothing before 4.0
            SendRecord(4.1, 4.1, on.copy(note=65), "duet")]  # after 43, which improv never heard
    log = TimingLog(tmp_path / "t.csv", deque(sent))
    log.close()
    received = [(1.0012, [0x90, 40, 90]), (1.0031, [0x90, 60, 80]), (2.1012, [0x90, 64, 80]),
                (4.1011, [0x90, 65, 80])]
    sends = [(1.0, 40), (2.0, 41), (3.0, 42), (4.0, 43)]
    reaction, unanswered, lost, not_heard = reactions_from_log(sends, tmp_path / "t.csv", received)
    assert reaction == pytest.approx([0.0031])
    assert (lost, unanswered, not_heard) == (1, 1, 1)
    inside, echo = inside_improv(sends, tmp_path / "t.csv")
    assert inside == pytest.approx([0.0012, 0.0018]) and echo == pytest.approx([0.0001] * 3)


def test_duet_reaction_takes_improvs_next_own_note():
    sends = [(1.0, 40), (2.0, 41), (3.0, 42)]
    received = [(1.002, [0x90, 40, 90]),  # thru echo of the first note
                (1.010, [0x90, 60, 80]),  # improv's own next note: reaction 10 ms
                (2.003, [0x90, 41, 90]),  # echo; no own note before the third send: unanswered
                (3.001, [0x90, 42, 90]), (3.020, [0x90, 62, 80])]
    reaction, thru, unanswered = duet_latencies(sends, received)
    assert reaction == pytest.approx([0.010, 0.020]) and unanswered == 1
    assert thru == pytest.approx([0.002, 0.003, 0.001])


def test_torch_module_is_rebuilt_from_the_onnx_initializers(tmp_path):
    from benchmarks.step import Missing, parity, rebuild_from_onnx
    from improv.model_step import StepModel
    from tests.tiny_models import export_tiny

    lstm = StepModel.load(export_tiny("lstm", tmp_path / "lstm"))
    assert parity(rebuild_from_onnx(lstm), lstm) < 1e-4
    wavenet = StepModel.load(export_tiny("wavenet", tmp_path / "wavenet"))
    with pytest.raises(Missing):  # a different architecture: reported missing, never faked
        rebuild_from_onnx(wavenet)


def test_cli_option_parsing():
    assert parse_sections("step, midi", ("step", "midi", "train")) == ("step", "midi")
    with pytest.raises(ConfigError):
        parse_sections("steps", ("step",))
    assert parse_checkpoints(["a=x.pt"], ()) == {"a": Path("x.pt")}
    assert parse_checkpoints(["x.pt"], ("models/bach-lstm",)) == {"bach-lstm": Path("x.pt")}
    with pytest.raises(ConfigError):
        parse_checkpoints(["x.pt"], ("a", "b"))


def test_repeated_runs_give_the_median_and_the_spread():
    runs = []
    for p99 in (3.0, 1.0, 2.0):
        r = Report()
        r.put("midi.p32.reaction_p99_ms", p99, "reaction p99", "ms")
        r.put("midi.p32.plan_notes", 10.0 * p99, "answer notes", "")
        r.put("midi.p32.reaction_lost", None, "lost", "", why="needs the daemon's --timing-log")
        runs.append(r)
    merged = Report()
    merged.merge_runs(runs)
    assert merged.get("midi.p32.reaction_p99_ms") == 2.0
    assert merged.get("midi.p32.reaction_p99_ms.spread") == 2.0
    assert merged.notes["midi.p32.reaction_p99_ms.runs"] == "3.000, 1.000, 2.000"
    assert merged.get("midi.p32.plan_notes") == 20.0 and "midi.p32.plan_notes.spread" not in merged.values
    assert merged.get("midi.p32.reaction_lost") is None
    assert merged.why["midi.p32.reaction_lost"] == "needs the daemon's --timing-log"
    assert "median of 3 runs" in merged.rows["midi"][0].label


def test_grid_error_is_signed_against_the_point_each_note_was_meant_for():
    from benchmarks.midi_grid import grid_errors

    step = 60.0 / 120 / 12  # 41.7 ms
    origin = 100.0
    meant = [origin + 5 * step, origin + 7 * step, origin + 9 * step + 0.001]
    arrived = [meant[0] + 0.002, meant[1] - 0.0005, origin + 9 * step + 0.030]  # the last: 30 ms late
    errors = grid_errors(arrived, meant, origin, step)
    assert errors == pytest.approx([0.002, -0.0005, 0.030])  # not -11.7 ms: more than half a step late
