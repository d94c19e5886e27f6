"""Offline: corpus preparation, training throughput and quality, each through training/ itself.

* corpus: `training.data.load_dataset` on a music21 corpus (bach, the first `max_pieces` pieces),
  cold (an empty cache dir: every file parsed, in worker processes) and again from that cache;
* training: tokens/s of `training.train.train` (the real loop: AdamW, clipping, the model's own
  config from its sidecar) on that corpus, or synthetic tokens if it could not be loaded (said so).
  Timed between the `on_step` hooks of consecutive optimizer steps of one epoch, so the first step
  (warm-up) and the evaluation/checkpoint at an epoch's end are left out;
* quality: `training.evaluate.evaluate` (the `improv eval` table: the model stepped through ONNX,
  n-gram baselines 1..5 on the same split) per shipped model, each on the held-out split of the
  data its sidecar names, and the JSB 16th-note figure from the JSB run's metrics.json.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.report import Report

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TrainOptions:
    corpus: str = "bach"
    max_pieces: int = 32
    timed_steps: int = 20
    batch_size: int = 64
    window: int = 256
    eval_tokens: int | None = None  # score at most this many test tokens (None: all)
    threads: int | None = None  # torch threads for training; None: training's own default
    seed: int = 0


class _Enough(Exception):
    """Raised from on_step once enough steps were timed."""


def _quiet_console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=120)


# ---------------------------------------------------------------------- corpus


def corpus_times(report: Report, options: TrainOptions, work_dir: Path):
    """Cold and cached `load_dataset`; returns the corpus (None if it could not be loaded)."""
    cache = work_dir / "corpus-cache"
    shutil.rmtree(cache, ignore_errors=True)
    labels = {"corpus.cold_s": ("cold: empty cache, parse and encode", "s"),
              "corpus.cached_s": ("from the cache", "s")}
    try:
        from training.data import load_dataset

        def load():
            t0 = time.perf_counter()
            data = load_dataset(corpus=[options.corpus], max_pieces=options.max_pieces, cache_dir=cache,
                                console=_quiet_console(), show_progress=False)
            return data, time.perf_counter() - t0

        corpus, cold = load()
        _, cached = load()
    except Exception as err:  # noqa: BLE001 - music21 missing, corpus missing, parse failures...
        report.missing(labels, f"could not load music21 corpus {options.corpus!r}: {_one_line(err)}", labels)
        return None
    pieces = sum(len(v) for v in corpus.splits.values())
    report.put("corpus.cold_s", cold, *labels["corpus.cold_s"])
    report.put("corpus.cached_s", cached, *labels["corpus.cached_s"])
    report.put("corpus.pieces", float(pieces))
    report.put("corpus.tokens", float(sum(len(p) for v in corpus.splits.values() for p in v)))
    report.note("corpus.note", f"{corpus.description} (the first {options.max_pieces} requested), default tokens; "
                               "load_dataset with a fresh cache dir (worker processes parse), then again")
    return corpus


# ---------------------------------------------------------------------- training


def train_speed(report: Report, specs: list[tuple[str, str, dict]], corpus, options: TrainOptions,
                work_dir: Path) -> None:
    """`specs`: (key name, model kind, model options without vocab_size) -> train.<name>.tokens_per_s."""
    data, source = (corpus, "real data") if corpus is not None else (synthetic_corpus(options.seed), "synthetic tokens")
    device = threads = None
    for name, kind, model_options in specs:
        key = f"train.{name}.tokens_per_s"
        try:
            tps, steps, device, threads = time_training(kind, model_options, data, options, work_dir / f"train-{name}")
            report.put(key, tps, f"{name} ({kind}): tokens/s over {steps} steps", "tok/s")
        except Exception as err:  # noqa: BLE001 - a broken config must not stop the other kinds
            report.put(key, None, f"{name} ({kind}) tokens/s", "tok/s", why=f"training failed: {_one_line(err)}")
    report.note("train.note", f"training.train on {source} ({getattr(data, 'description', '')}); batch "
                              f"{options.batch_size} x window {options.window}, device {device}, torch threads "
                              f"{threads}; the first step and epoch ends are not timed")


def time_training(kind: str, model_options: dict, corpus, options: TrainOptions, out: Path):
    """(tokens/s, timed steps, device, threads) of a short real training run."""
    import torch

    from training.train import TrainConfig, train

    marks: list[tuple[float, int, int, int]] = []  # (time, epoch, batches done this epoch, tokens this epoch)

    def on_step(trainer) -> None:
        part = trainer.partial
        marks.append((time.perf_counter(), trainer.epoch, part["batches"], part["tokens"]))
        if len(_intervals(marks)) >= options.timed_steps:
            raise _Enough

    threads = {"threads": options.threads} if options.threads else {}
    config = TrainConfig(model=kind, epochs=1_000_000, batch_size=options.batch_size, window=options.window,
                         stride=_stride(corpus, options), patience=0, seed=options.seed, out=str(out),
                         show_progress=False, eval_tokens=8192, **threads)
    shutil.rmtree(out, ignore_errors=True)
    try:
        train(config, model_options, corpus=corpus, console=_quiet_console(), on_step=on_step)
    except _Enough:
        pass
    finally:
        shutil.rmtree(out, ignore_errors=True)
    spans = _intervals(marks)
    if not spans:
        raise RuntimeError("no two consecutive steps in one epoch were timed")
    seconds, tokens = sum(s for s, _ in spans), sum(n for _, n in spans)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    return tokens / seconds, len(spans), device, config.threads


def _intervals(marks) -> list[tuple[float, int]]:
    """(seconds, tokens) of every step that directly followed another step of the same epoch."""
    out = []
    for (t0, e0, b0, n0), (t1, e1, b1, n1) in zip(marks, marks[1:]):
        if e0 == e1 and b1 == b0 + 1:
            out.append((t1 - t0, n1 - n0))
    return out


def _stride(corpus, options: TrainOptions) -> int:
    """The window stride giving at least two batches per epoch (overlapping windows on small data)."""
    from training.dataset import frame_size, window_starts

    align = frame_size(corpus.vocab)
    lengths = [len(p) for p in corpus.splits["train"]]
    stride = options.window
    while stride > 1:
        if sum(len(window_starts(n, options.window, stride, align)) for n in lengths) >= 2 * options.batch_size:
            break
        stride //= 2
    return max(stride, align)


def synthetic_corpus(seed: int):
    """Random tokens in the default vocabulary, for when no real corpus can be loaded."""
    from improv.tokens import TokenConfig, Vocabulary

    vocab = Vocabulary(TokenConfig())
    rng = np.random.default_rng(seed)
    piece = lambda: rng.integers(0, len(vocab), 2000).astype(np.int32)  # noqa: E731
    splits = {"train": [piece() for _ in range(16)], "valid": [piece()], "test": [piece()]}
    names = {k: [f"{k}{i}" for i in range(len(v))] for k, v in splits.items()}
    return SimpleNamespace(vocab=vocab, splits=splits, names=names, data_hash="sha256:synthetic", skipped=[],
                           description="synthetic random tokens")


# ---------------------------------------------------------------------- quality


def quality(report: Report, models: list[tuple[str, Path]], options: TrainOptions) -> None:
    """Each model on its own held-out split: `evaluate` reads the data settings (corpora or files,
    max_pieces, key mode, min_count, split seed) from the model's sidecar, so a folk model is scored
    on folk tunes and a chorale model on chorales, each beside n-grams fitted on its training split."""
    from benchmarks.report import QUALITY_KEYS
    from training.evaluate import evaluate, report_table

    for name, folder in models:
        p = f"quality.{name}"
        try:
            result = evaluate(model=folder, limit_tokens=options.eval_tokens, show_progress=False)
        except Exception as err:  # noqa: BLE001 - ImprovError (no data named, music21 missing) and friends
            report.missing([f"{p}.{k}" for k in QUALITY_KEYS], f"{name}: {_one_line(err)}")
            continue
        report.put(f"{p}.nll", result["model"]["nll"], f"{name}: test NLL", "nats/token")
        report.put(f"{p}.accuracy", result["model"]["acc"], f"{name}: test accuracy")
        for order, m in result["ngram"].items():
            report.put(f"{p}.ngram{order}_nll", m["nll"])
        report.put(f"{p}.best_ngram_nll", result["best_ngram"]["nll"],
                   f"{name}: best n-gram ({result['best_ngram']['order']}-gram) NLL", "nats/token")
        report.put(f"{p}.improvement_over_best_ngram", result["improvement_over_best_ngram"],
                   f"{name}: NLL removed vs the best n-gram", "")
        report.put(f"{p}.tokens", float(result["tokens"]))
        same = result["data_hash"] == result["model_data_hash"]
        report.note(f"{p}.data_note", result["data"] + ("" if same else "; NOT the data the model was trained on "
                                                   f"(hash {result['data_hash']} vs the sidecar's {result['model_data_hash']})"))
        report.extra_tables.append(report_table(result))
    if models:
        limit = f"the first {options.eval_tokens} test tokens" if options.eval_tokens else "every test token"
        report.note("quality.note", f"each model on the held-out split of its own training data (its sidecar's "
                                    f"train_config), {limit}, stepped through ONNX; n-grams of orders 1-5 fitted "
                                    "on the same training split")


def jsb_figure(report: Report, metrics_path: Path | None) -> None:
    """Test NLL of the JSB 16th-note runs: per token and per 16th-note step (4 voices = 4 tokens).
    The headline keys take the best finished run; every finished run also gets its own row."""
    labels = {"quality.jsb.test_nll": ("JSB 16th-note benchmark, best run: test NLL", "nats/token"),
              "quality.jsb.nll_per_16th": ("JSB: test NLL per 16th-note step (4 tokens)", "nats/step"),
              "quality.jsb.test_acc": ("JSB: test accuracy", "")}
    paths = [Path(metrics_path)] if metrics_path else find_jsb_runs()
    runs, problems = [], []
    for path in paths:
        try:
            metrics = json.loads(path.read_text())
            runs.append((float(metrics["test"]["nll"]), float(metrics["test"]["acc"]), path, metrics))
        except (OSError, ValueError, KeyError, TypeError):
            problems.append(f"{path} has no test figures (the run is not finished?)")
    if not runs:
        why = "; ".join(problems) or "no JSB run under runs/ (train one on jsb_chorales.tgz) and no --jsb-metrics"
        report.missing(labels, why, labels)
        return
    from training.jsb import JSB_TOKEN_CONFIG

    nll, acc, path, metrics = min(runs, key=lambda r: r[0])
    report.put("quality.jsb.test_nll", nll, *labels["quality.jsb.test_nll"])
    report.put("quality.jsb.nll_per_16th", nll * JSB_TOKEN_CONFIG.grid_voices, *labels["quality.jsb.nll_per_16th"])
    report.put("quality.jsb.test_acc", acc, *labels["quality.jsb.test_acc"])
    report.note("quality.jsb.source", f"{path} ({metrics.get('train_command', '')}; stopped: {metrics.get('stopped')})")
    for nll, _, path, metrics in runs:
        run = path.parent.name
        report.put(f"quality.jsb.{run}.test_nll", nll, f"JSB run {run} ({metrics.get('model')}): test NLL",
                   "nats/token")


def find_jsb_runs() -> list[Path]:
    """runs/*/metrics.json (under the current folder and the repository) of runs on the JSB data."""
    found = {}
    for base in (Path.cwd() / "runs", REPO / "runs"):
        for config_path in sorted(base.glob("*/config.json")):
            try:
                data = json.loads(config_path.read_text()).get("train_config", {}).get("data", [])
            except (OSError, ValueError, AttributeError):
                continue
            metrics = config_path.parent / "metrics.json"
            if any("jsb" in Path(str(d)).name.lower() for d in data):  # finished or not
                found.setdefault(metrics.resolve(), metrics)
    return list(found.values())


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
