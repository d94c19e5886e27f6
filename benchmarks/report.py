"""What one `improv bench` run measured: a flat key -> number | null map, the reason for every null,
the targets with PASS/MISS, a rich table per section and the JSON file.

JSON (flat, one object): metric keys (``step.bach-lstm.onnx_p99_ms``) hold a number or null; for a
null, ``<key>.why`` says why; for a key with a target, ``<key>.pass`` is true / false (null when
the value is missing); ``<section>.note`` strings say what a section measured and how; ``meta.*``
describe the run. Numbers are written unrounded, so a ratio can be checked against its p50s.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SECTIONS = ("step", "midi", "daemon", "train", "corpus", "quality", "music")
TITLES = {"step": "model step (onnxruntime, 1 intra-op thread)", "midi": "end to end over JACK MIDI ports",
          "daemon": "the daemon's cost", "train": "training throughput", "corpus": "corpus preparation",
          "quality": "quality (test set)", "music": "listening: does the answer answer the call?"}


@dataclass(frozen=True)
class Target:
    pattern: str  # fnmatch over metric keys
    op: str  # "<=", ">=" or "within" (|value - 1| <= bound)
    bound: float

    def text(self) -> str:
        return f"within {self.bound:.0%} of 1" if self.op == "within" else f"{self.op} {self.bound:g}"

    def passes(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.bound
        if self.op == ">=":
            return value >= self.bound
        return abs(value - 1.0) <= self.bound


TARGETS = (
    Target("step.*.onnx_p99_ms", "<=", 0.3),
    Target("step.*.naive_over_cached", ">=", 50.0),
    Target("step.*.naive_rf_over_cached", ">=", 50.0),
    Target("step.*.torch_over_onnx", ">=", 3.0),
    Target("step.*.long_over_short_context", "within", 0.10),
    Target("midi.p32.reaction_p99_ms", "<=", 2.0),
    Target("midi.p32.plan_error_p99_ms", "<=", 1.0),
    Target("daemon.startup_s", "<=", 1.0),
    Target("daemon.rss_mb", "<=", 150.0),
    Target("step.*.memory_added_p99_ms", "<=", 0.05),
    Target("music.*.in_key", ">=", 0.90),
    Target("music.*.echo", ">=", 0.30),
    Target("music.*.copy", "<=", 0.10),
    Target("music.*.density_log2", "<=", 0.5),
    Target("music.*.poly_excess", "<=", 0.3),
    Target("music.*.register_st", "<=", 4.0),
    Target("music.*.distinct", ">=", 0.9),
    Target("music.*.essen.adapt_gain", ">=", 0.40),  # away from a model's home corpora (the music
    Target("music.*.oneills.adapt_gain", ">=", 0.40),  # section sets each model's own: benchmarks.music)
    Target("music.*.bach.adapt_gain", ">=", -0.01),
    Target("music.memory_mb_1h", "<=", 20.0),
    Target("quality.*.improvement_over_best_ngram", ">=", 0.20),
)

STEP_KEYS = ("onnx_p50_ms", "onnx_p99_ms", "naive_over_cached", "naive_rf_over_cached", "torch_over_onnx",
             "long_over_short_context", "memory_added_p99_ms", "memory_learn_p99_ms")
MUSIC_CORPORA = ("bach", "essen", "oneills")
MUSIC_KEYS = ("in_key", "echo", "copy", "density_log2", "poly_excess", "register_st", "distinct", "nll", "adapt_nll",
              "adapt_gain")
MIDI_KEYS = ("reaction_p99_ms", "plan_error_p99_ms")
QUALITY_KEYS = ("nll", "best_ngram_nll", "improvement_over_best_ngram")  # each model on its own held-out split


def required_keys(models: list[str], periods: tuple[int, ...] = (32, 64)) -> list[str]:
    """The keys every `--json` file has (a number or null with a reason)."""
    keys = [f"step.{m}.{k}" for m in models for k in STEP_KEYS]
    keys += [f"midi.p{p}.{k}" for p in sorted({32, 64, *periods}) for k in MIDI_KEYS]
    keys += ["daemon.startup_s", "daemon.rss_mb"]
    keys += [f"train.{m}.tokens_per_s" for m in models]
    keys += ["corpus.cold_s", "corpus.cached_s"]
    keys += [f"quality.{m}.{k}" for m in models for k in QUALITY_KEYS]
    keys += [f"music.{m}.{c}.{k}" for m in models for c in MUSIC_CORPORA for k in MUSIC_KEYS] + ["music.memory_mb_1h"]
    return keys


_LABELS = {  # the table rows of the required keys, for when they are missing
    "onnx_p50_ms": ("{m}: cached ONNX step p50", "ms"), "onnx_p99_ms": ("{m}: cached ONNX step p99", "ms"),
    "naive_over_cached": ("{m}: naive window 256 / cached (p50)", "×"),
    "naive_rf_over_cached": ("{m}: naive receptive field / cached (p50)", "×"),
    "torch_over_onnx": ("{m}: torch eager / ONNX step (p50)", "×"),
    "long_over_short_context": ("{m}: step at 10,000 / at 100 tokens (p50)", "×"),
    "tokens_per_s": ("{m}: training tokens/s", "tok/s"),
    "reaction_p99_ms": ("{m} frames: duet note in -> improv's next note out p99", "ms"),
    "plan_error_p99_ms": ("{m} frames: call-and-response arrival - plan p99", "ms"),
    "startup_s": ("start-up, spawn -> ready file", "s"), "rss_mb": ("resident memory (VmRSS)", "MB"),
    "cold_s": ("cold: empty cache, parse and encode", "s"), "cached_s": ("from the cache", "s"),
    "quality.nll": ("{m}: test NLL", "nats/token"), "best_ngram_nll": ("{m}: best n-gram NLL", "nats/token"),
    "improvement_over_best_ngram": ("{m}: NLL removed vs the best n-gram", ""),
}


def default_label(key: str) -> tuple[str, str] | None:
    """(label, unit) of a required key, e.g. step.bach-lstm.onnx_p99_ms -> bach-lstm: cached ONNX step p99."""
    parts = key.split(".")
    label = _LABELS.get(f"{parts[0]}.{parts[-1]}") or _LABELS.get(parts[-1])
    if label is None:
        return None
    middle = parts[1] if len(parts) == 3 else ""
    return label[0].format(m=middle[1:] if middle.startswith("p") and middle[1:].isdigit() else middle), label[1]


def target_for(key: str) -> Target | None:
    return next((t for t in TARGETS if fnmatch.fnmatchcase(key, t.pattern)), None)


@dataclass
class Row:
    key: str
    label: str
    unit: str


class Report:
    """Collects values in the order measured; nothing is ever filled in that was not measured."""

    def __init__(self) -> None:
        self.values: dict[str, float | None] = {}
        self.why: dict[str, str] = {}
        self.notes: dict[str, str] = {}  # "<section>.note" (or any "<prefix>.note") -> text
        self.meta: dict[str, object] = {}
        self.rows: dict[str, list[Row]] = {s: [] for s in SECTIONS}
        self.extra_tables: list = []  # rich renderables printed after the main tables (eval tables)
        self.targets: dict[str, Target] = {}  # a key's own target, in place of TARGETS' pattern

    def target(self, key: str) -> Target | None:
        return self.targets.get(key) or target_for(key)

    def put(self, key: str, value: float | None, label: str | None = None, unit: str = "",
            why: str | None = None) -> None:
        """Record a measured number (or None with `why`); `label` adds a table row."""
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            value, why = None, why or f"not a finite number ({value!r})"
        self.values[key] = None if value is None else float(value)
        if value is None:
            self.why[key] = why or "not measured"
        else:
            self.why.pop(key, None)
        section = key.split(".", 1)[0]
        if label is not None and section in self.rows and key not in [r.key for r in self.rows[section]]:
            self.rows[section].append(Row(key, label, unit))

    def missing(self, keys, why: str, labels: dict[str, tuple[str, str]] | None = None) -> None:
        """Null for each key not recorded yet (a null already recorded keeps its own reason)."""
        for key in keys:
            if key not in self.values:
                label, unit = (labels or {}).get(key) or default_label(key) or (None, "")
                self.put(key, None, label, unit, why=why)

    def put_quantiles(self, prefix: str, values_s: list[float], label: str, why: str,
                      with_max: bool = False) -> None:
        """`<prefix>_p50_ms`, `_p99_ms` (and `_max_ms`) of values in seconds, or nulls with `why`."""
        ms = np.asarray(values_s) * 1000.0
        empty = len(ms) == 0
        for name, q in (("p50", 50), ("p99", 99)):
            self.put(f"{prefix}_{name}_ms", None if empty else float(np.percentile(ms, q)), f"{label} {name}",
                     "ms", why=why)
        if with_max:
            self.put(f"{prefix}_max_ms", None if empty else float(ms.max()), f"{label} max", "ms", why=why)

    def merge_runs(self, runs: list[Report]) -> None:
        """The same measurements made several times (`improv bench --repeat N`): each key gets the
        median of the runs' values, each p50/p99 a `.spread` row (max - min over the runs) and a
        `.runs` note with every run's value; a key no run measured keeps the first run's reason."""
        for key in runs[0].values:
            values = [r.values[key] for r in runs if r.values.get(key) is not None]
            row = next((row for row in runs[0].rows.get(key.split(".", 1)[0], []) if row.key == key), None)
            label, unit = (row.label, row.unit) if row else (None, "")
            if not values:
                self.put(key, None, label, unit, why=runs[0].why.get(key))
                continue
            label = label and f"{label} (median of {len(values)} runs)"
            self.put(key, float(np.median(values)), label, unit)
            if key.endswith(("_p50_ms", "_p99_ms")):
                self.put(f"{key}.spread", max(values) - min(values),
                         row and f"{row.label}: spread over the runs (max - min)", unit)
                self.note(f"{key}.runs", ", ".join(f"{v:.3f}" for v in values))
        for r in runs:
            self.notes.update({k: v for k, v in r.notes.items() if k not in self.notes})
            self.targets.update({k: v for k, v in r.targets.items() if k not in self.targets})

    def note(self, key: str, text: str) -> None:
        self.notes[key] = text

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    # ------------------------------------------------------------------ output

    def verdict(self, key: str) -> bool | None:
        target, value = self.target(key), self.values.get(key)
        if target is None or value is None:
            return None
        return target.passes(value)

    def to_json(self) -> dict:
        out: dict[str, object] = {f"meta.{k}": v for k, v in self.meta.items()}
        for key, value in self.values.items():
            out[key] = value
            if value is None:
                out[f"{key}.why"] = self.why.get(key, "not measured")
            if self.target(key) is not None:
                out[f"{key}.pass"] = self.verdict(key)
                out[f"{key}.target"] = self.target(key).text()
        out.update(self.notes)
        return out

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        tmp.replace(path)
        return path

    def tables(self) -> list:
        """One rich Table per section that has rows (value, target, PASS/MISS or why it is missing)."""
        from rich.table import Table

        tables = []
        for section in SECTIONS:
            rows = self.rows[section]
            if not rows:
                continue
            note = self.notes.get(f"{section}.note")
            table = Table(title=TITLES[section], caption=note, caption_justify="left", title_justify="left",
                          expand=False)
            table.add_column("measurement")
            table.add_column("value", justify="right")
            table.add_column("target", justify="right")
            table.add_column("", justify="left")
            for row in rows:
                table.add_row(*self._cells(row))
            tables.append(table)
        return tables

    def _cells(self, row: Row) -> tuple[str, str, str, str]:
        value, target = self.values.get(row.key), self.target(row.key)
        if value is None:
            return row.label, "—", target.text() if target else "", f"[dim]missing: {self.why.get(row.key, '')}[/]"
        shown = f"{format_number(value)} {row.unit}".rstrip()
        verdict = self.verdict(row.key)
        mark = "" if verdict is None else ("[green]PASS[/]" if verdict else "[red]MISS[/]")
        return row.label, shown, target.text() if target else "", mark


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1:
        return f"{value:.3f}"
    return f"{value:.4f}"
