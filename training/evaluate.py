"""Test-set evaluation of an exported step model beside smoothed n-gram baselines.

The model is run exactly as the daemon runs it: through the ONNX step graph (`improv.model_step`),
one token at a time, with a fresh state at the start of every test piece and the state carried
through the piece. Each piece's first token is given; every later token is predicted and weighted
equally (NLL pooled over all test tokens, in nats). The n-gram baselines (`training.ngram`, orders
1..5) are fitted on the same train split, in the same vocabulary, and scored under the same
conventions, so the numbers compare directly.

Data: by default the settings stored in the model's sidecar (``train_config``: data, corpus,
max_pieces, key, min_count, split_seed); options override them (giving --data or --corpus replaces
both sources). Tokens are encoded with the model's own token config; if the data's vocabulary
differs from the model's (e.g. other pruning), its tokens are mapped through the names into the
model's vocabulary (with the vocabulary's fallback for names the model lacks).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from improv.errors import ConfigError, DataError, ModelError
from improv.tokens import Vocabulary
from training.metrics import Metrics

DATA_SETTINGS = ("data", "corpus", "max_pieces", "key", "min_count", "split_seed")
ORDERS = (1, 2, 3, 4, 5)


def data_settings(meta: dict, **overrides) -> dict:
    """The sidecar's data settings with the given (non-None) overrides; data/corpus as tuples."""
    stored = meta.get("train_config") or {}
    settings = {k: stored[k] for k in DATA_SETTINGS if stored.get(k) is not None}
    if overrides.get("data") or overrides.get("corpus"):
        settings.pop("data", None)
        settings.pop("corpus", None)
    settings.update({k: v for k, v in overrides.items() if k in DATA_SETTINGS and v not in (None, (), [])})
    for source in ("data", "corpus"):
        value = settings.get(source) or ()
        settings[source] = (value,) if isinstance(value, (str, Path)) else tuple(value)
    settings["data"] = tuple(str(p) for p in settings["data"])
    if not settings["data"] and not settings["corpus"]:
        raise ConfigError("no evaluation data: the model's sidecar names none; give --data FILE or --corpus NAME")
    return settings


def align_to_model(pieces: Sequence[np.ndarray], data_vocab: Vocabulary, model_vocab: Vocabulary, where: str) -> list[np.ndarray]:
    """The pieces' ids in the model's vocabulary (through the token names)."""
    if data_vocab.config != model_vocab.config:
        raise ModelError(
            f"{where}: the model's token config ({model_vocab.config}) differs from the data's "
            f"({data_vocab.config}); evaluate on data encoded the way the model was trained"
        )
    if tuple(data_vocab.names) == tuple(model_vocab.names):
        return [np.asarray(p, dtype=np.int32) for p in pieces]
    lut = model_vocab.ids(data_vocab.names)
    return [lut[np.asarray(p, dtype=np.int64)] for p in pieces]


def first_tokens(pieces: Sequence[np.ndarray], limit: int | None) -> list[np.ndarray]:
    """The leading pieces (the last one cut short) holding at most `limit` predicted tokens."""
    if limit is None:
        return list(pieces)
    kept, left = [], int(limit)
    for piece in pieces:
        if left <= 0:
            break
        kept.append(piece[: left + 1])
        left -= max(0, len(kept[-1]) - 1)
    return kept


def _log_softmax_at(logits: np.ndarray, target: int) -> float:
    top = float(logits.max())
    return float(logits[target]) - top - math.log(float(np.exp(logits - top).sum()))


def step_metrics(model, pieces: Sequence[np.ndarray], progress=None) -> tuple[Metrics, float]:
    """The metrics of `model` stepped through each piece from a fresh state, and its ms per step.
    `progress(n)` is called after every n tokens if given."""
    nll, correct, count, seconds = 0.0, 0, 0, 0.0
    for piece in pieces:
        state = model.new_state()
        for i in range(len(piece) - 1):
            t0 = time.perf_counter()
            logits = model.step(int(piece[i]), state)
            seconds += time.perf_counter() - t0
            target = int(piece[i + 1])
            nll -= _log_softmax_at(logits.astype(np.float64), target)
            correct += int(np.argmax(logits)) == target
            count += 1
        if progress is not None and len(piece) > 1:
            progress(len(piece) - 1)
    if not count:
        raise DataError("no test tokens to evaluate: every test piece has fewer than two tokens")
    return Metrics.pooled(nll, correct, count), 1000.0 * seconds / count


def adaptive_metrics(model, pieces: Sequence[np.ndarray], listen=None) -> dict[str, Metrics]:
    """Each piece streamed through the live context with a fresh session memory (`listen`: the
    [listen] settings, default ones if None), scored without and with the memory mixed in, over
    the whole piece and over its second half (where the memory has heard the first):
    {"nll", "adapt", "nll_second_half", "adapt_second_half"}."""
    from improv.blend import Blend
    from improv.context import ModelContext, TimedModel
    from improv.memory import SessionMemory
    from improv.settings import ListenSettings

    listen = listen or ListenSettings()
    sums = {k: [0.0, 0, 0] for k in ("nll", "adapt", "nll_second_half", "adapt_second_half")}
    for piece in pieces:
        memory = SessionMemory(model.vocab.names, listen.order, listen.half_life_tokens)
        context = ModelContext(TimedModel(model), memory, Blend(listen.order, listen.follow), listen.own_weight)
        start = 1 if len(piece) and int(piece[0]) == context.bos else 0  # (the context begins with BOS)
        for i in range(start, len(piece)):
            target = int(piece[i])
            alone, mixed = context.logits.astype(np.float64), context.mixed_logits()
            scores = {"nll": (_log_softmax_at(alone, target), int(np.argmax(alone)) == target),
                      "adapt": (_log_softmax_at(mixed, target), int(np.argmax(mixed)) == target)}
            for name, (log_p, hit) in scores.items():
                for key in (name, f"{name}_second_half") if i >= len(piece) // 2 else (name,):
                    sums[key][0] -= log_p
                    sums[key][1] += hit
                    sums[key][2] += 1
            context.hear(target)
    return {k: Metrics.pooled(*v) for k, v in sums.items()}


def adapt_report(m: dict[str, Metrics]) -> dict:
    """The session memory's part of the report: each score as `Metrics.as_dict`, and the gains (the
    fraction of the model's NLL the memory removes) over whole pieces and over second halves."""
    return {**{k: v.as_dict() for k, v in m.items()},
            "gain": 1.0 - m["adapt"].nll / m["nll"].nll,
            "gain_second_half": 1.0 - m["adapt_second_half"].nll / m["nll_second_half"].nll}


def _load_data(settings: dict, vocab: Vocabulary, cache_dir):
    try:
        from training.data import load_dataset
    except ModuleNotFoundError as err:
        if err.name == "music21":
            raise DataError("loading this corpus needs music21; pip install 'improv[train]'") from err
        raise
    return load_dataset(
        data=settings["data"], corpus=settings["corpus"], token_config=vocab.config,
        max_pieces=settings.get("max_pieces"), key=settings.get("key", "none"),
        min_count=settings.get("min_count", 0), split_seed=settings.get("split_seed", 0), cache_dir=cache_dir,
    )


def evaluate(
    *,
    model,
    data: Sequence[str | Path] = (),
    corpus: Sequence[str] = (),
    max_pieces: int | None = None,
    key: str | None = None,
    min_count: int | None = None,
    split_seed: int | None = None,
    limit_tokens: int | None = None,
    orders: Sequence[int] = ORDERS,
    dataset=None,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
    json_path: str | Path | None = None,
    adapt: bool = False,
) -> dict:
    """Evaluate `model` (a path/name, None = default, or a loaded step model) on the test split and
    fit/score the n-grams; returns the report (see `report_json`) and writes it to `json_path`.
    `dataset` (an EncodedCorpus) skips loading data."""
    from training.ngram import fit_ngrams

    if model is None or isinstance(model, (str, Path)):
        from improv.model_step import StepModel

        model = StepModel.load(model)
    where = str(getattr(model, "folder", getattr(model, "name", "model")))
    if dataset is None:
        settings = data_settings(model.meta, data=tuple(data), corpus=tuple(corpus), max_pieces=max_pieces,
                                 key=key, min_count=min_count, split_seed=split_seed)
        dataset = _load_data(settings, model.vocab, cache_dir)
    train = align_to_model(dataset.splits.get("train", []), dataset.vocab, model.vocab, where)
    test = first_tokens(align_to_model(dataset.splits.get("test", []), dataset.vocab, model.vocab, where), limit_tokens)
    if not any(len(p) > 1 for p in test):
        raise DataError("the test split is empty; use more pieces (--max-pieces) or other data")
    ngrams = fit_ngrams(train, len(model.vocab), orders)
    baseline = {str(n): m.metrics(test) for n, m in ngrams.items()}
    result, ms_per_step = _run_with_progress(model, test, show_progress)
    report = report_json(model, result, ms_per_step, baseline, dataset)
    if adapt:
        report["adapt"] = adapt_report(adaptive_metrics(model, test))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def ngram_baseline(meta: dict, *, dataset=None, cache_dir: str | Path | None = None,
                   orders: Sequence[int] = ORDERS) -> dict:
    """The best n-gram's figures on the held-out split of the data a sidecar (or checkpoint) names in
    its train_config, in its vocabulary, as `evaluate` scores them: {"best_ngram_test_nll",
    "best_ngram_order", "best_ngram_test_tokens"}. DataError when that data no longer hashes to the
    sidecar's data_hash (the split would not be the one the model was tested on)."""
    vocab = Vocabulary.from_dict(meta["vocabulary"])
    if dataset is None:
        dataset = _load_data(data_settings(meta), vocab, cache_dir)
    expected = meta.get("data_hash")
    if expected and dataset.data_hash != expected:
        raise DataError(f"the training data ({dataset.description}) has changed since the model was trained "
                        f"({dataset.data_hash[:19]}... is not {expected[:19]}...); the held-out split would differ")
    train = align_to_model(dataset.splits.get("train", []), dataset.vocab, vocab, "the sidecar")
    test = align_to_model(dataset.splits.get("test", []), dataset.vocab, vocab, "the sidecar")
    if not any(len(p) > 1 for p in test):
        raise DataError("the test split is empty")
    from training.ngram import fit_ngrams

    order, best = best_ngram({str(n): m.metrics(test) for n, m in fit_ngrams(train, len(vocab), orders).items()})
    return {"best_ngram_test_nll": best.nll, "best_ngram_order": int(order), "best_ngram_test_tokens": best.tokens}


def best_ngram(baseline: dict[str, Metrics]) -> tuple[str, Metrics]:
    """(order, metrics) of the n-gram with the lowest NLL."""
    order = min(baseline, key=lambda n: baseline[n].nll)
    return order, baseline[order]


def _run_with_progress(model, test, show_progress: bool) -> tuple[Metrics, float]:
    if not show_progress:
        return step_metrics(model, test)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(max(0, len(p) - 1) for p in test)
    columns = (TextColumn("evaluating {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(getattr(model, "name", "model"), total=total)
        return step_metrics(model, test, progress=lambda n: bar.advance(task, n))


def report_json(model, result: Metrics, ms_per_step: float, baseline: dict[str, Metrics], dataset) -> dict:
    """{"model", "ngram": {order: metrics}, "best_ngram", "improvement_over_best_ngram" (the fraction
    of the best n-gram's NLL the model removes), "tokens", "data", "data_hash"}; metrics as
    `Metrics.as_dict` writes them."""
    best_order, best = best_ngram(baseline)
    return {
        "model": {"name": getattr(model, "name", "model"), "kind": getattr(model, "kind", None),
                  **result.as_dict(), "ms_per_step": ms_per_step},
        "ngram": {order: m.as_dict() for order, m in baseline.items()},
        "best_ngram": {"order": int(best_order), **best.as_dict()},
        "improvement_over_best_ngram": (best.nll - result.nll) / best.nll,
        "tokens": result.tokens,
        "data": getattr(dataset, "description", ""),
        "data_hash": getattr(dataset, "data_hash", None),
        "model_data_hash": (getattr(model, "meta", None) or {}).get("data_hash"),
    }


def report_table(report: dict):
    """The report as a rich Table (the model first, then each n-gram order)."""
    from rich.table import Table

    table = Table(title=f"test set: {report['tokens']} tokens, {report['data']}".rstrip(", "))
    for column in ("model", "NLL (nats/token)", "perplexity", "accuracy"):
        table.add_column(column, justify="left" if column == "model" else "right")

    def row(name: str, m: dict, style: str | None = None) -> None:
        table.add_row(name, f"{m['nll']:.4f}", f"{m['ppl']:.2f}", f"{100 * m['acc']:.1f}%", style=style)

    row(f"{report['model']['name']} ({report['model']['kind']})", report["model"], "bold")
    if "adapt" in report:
        a = report["adapt"]
        row("  + session memory", a["adapt"], "bold")
        row("  second halves: model alone", a["nll_second_half"])
        row("  second halves: + session memory", a["adapt_second_half"], "bold")
    for order, m in report["ngram"].items():
        row(f"{order}-gram (KN)", m, "green" if int(order) == report["best_ngram"]["order"] else None)
    return table


def summary(report: dict) -> str:
    gain = report["improvement_over_best_ngram"]
    best = report["best_ngram"]
    verdict = "below" if gain >= 0 else "above"
    line = (f"model NLL {report['model']['nll']:.4f} nats/token is {abs(gain):.1%} {verdict} the best n-gram "
            f"({best['order']}-gram, {best['nll']:.4f}); {report['model']['ms_per_step']:.2f} ms/step")
    if "adapt" in report:
        a = report["adapt"]
        line += (f"; with the session memory {a['adapt']['nll']:.4f} ({a['gain']:+.1%} less), second halves "
                 f"{a['nll_second_half']['nll']:.4f} -> {a['adapt_second_half']['nll']:.4f} "
                 f"({a['gain_second_half']:+.1%} less)")
    return line
