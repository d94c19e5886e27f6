"""The installed models, as `improv models` lists them: one `ModelEntry` per model folder.

Each folder is loaded by `StepModel.load`, so a broken one (unreadable sidecar, missing or replaced
model.onnx, shapes that disagree) is listed with that check's one-line reason while the others
still are. The sidecar's `style` and `description` (written by `improv export`) have fallbacks
for sidecars older than them: the style is the training corpora (or data files) named in
`train_config`, the description empty. The step time is measured on the spot: a few hundred
cached steps, one onnxruntime thread, on a seeded stream of the model's own tokens. Whether the
model writes chords or lines is `improv.voicing.writes_chords`'s probe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from improv.errors import ImprovError

TIMED_STEPS = 300  # about 30 ms for the shipped models; p99 is then the third-slowest step
WARMUP_STEPS = 30


@dataclass(frozen=True)
class ModelEntry:
    """One model folder: what its sidecar says and the measured step time, or why it is broken."""

    name: str
    folder: str
    style: str = ""
    kind: str = ""
    size_mb: float | None = None  # model.onnx, MB (10^6 bytes, as the README's models table)
    test_nll: float | None = None  # nats/token, the sidecar's metrics
    ngram_nll: float | None = None  # the best n-gram on the same test split, when export recorded it
    step_p50_ms: float | None = None
    step_p99_ms: float | None = None
    description: str = ""
    writes: str = ""  # "chords", or "lines": a melody model, its answers to chords voiced (improv.voicing)
    live: bool = True  # False: a grid-scheme model, which `improv run` cannot stream
    problem: str | None = None  # one line when the folder is broken

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def style_of(meta: dict) -> str:
    """The sidecar's style, else the corpora (or data files) it was trained on, joined by '+'."""
    if meta.get("style"):
        return str(meta["style"])
    config = meta.get("train_config") or {}
    sources = list(config.get("corpus") or []) + [Path(str(p)).name.split(".")[0] for p in config.get("data") or []]
    return "+".join(str(s) for s in sources)


def description_of(meta: dict) -> str:
    """The sidecar's one-line description ('' when it has none)."""
    return " ".join(str(meta.get("description") or "").split())


def model_folders(folder: Path) -> list[Path]:
    """Subfolders that hold a model.json or a model.onnx, sorted; hidden ones (an export in
    progress) left out."""
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and ((d / "model.json").exists() or (d / "model.onnx").exists()))


def list_models(folder: Path, *, timed_steps: int = TIMED_STEPS) -> list[ModelEntry]:
    """Every model folder under `folder`; `timed_steps=0` skips the step timing."""
    return [describe(d, timed_steps=timed_steps) for d in model_folders(folder)]


def describe(folder: Path, *, timed_steps: int = TIMED_STEPS) -> ModelEntry:
    """One folder as a `ModelEntry`, loaded and checked by `StepModel.load`; never raises an
    `ImprovError` (a broken model becomes an entry with `problem`)."""
    from improv.model_step import StepModel

    try:
        model = StepModel.load(folder, threads=1)
    except ImprovError as err:
        return ModelEntry(name=folder.name, folder=str(folder), problem=str(err))
    meta = model.meta
    onnx = folder / meta.get("onnx_file", "model.onnx")
    metrics = meta.get("metrics") or {}
    p50, p99 = step_times_ms(model, timed_steps) if timed_steps > 0 else (None, None)
    return ModelEntry(
        name=model.name, folder=str(folder), style=style_of(meta), kind=model.kind,
        size_mb=onnx.stat().st_size / 1e6, test_nll=_number(metrics.get("test_nll")),
        ngram_nll=_number(metrics.get("best_ngram_test_nll")), step_p50_ms=p50, step_p99_ms=p99,
        description=description_of(meta), writes="chords" if model.writes_chords else "lines",
        live=model.vocab.config.scheme == "event",
    )


def step_times_ms(model, steps: int, seed: int = 0) -> tuple[float, float]:
    """(p50, p99) ms of `steps` cached steps after a warm-up, fed seeded random token ids."""
    from improv.context import TimedModel

    timed = TimedModel(model, history=steps)
    tokens = np.random.default_rng(seed).integers(0, len(model.vocab), WARMUP_STEPS + steps)
    state = model.new_state()
    model.feed(tokens[:WARMUP_STEPS], state)
    timed.feed(tokens[WARMUP_STEPS:], state)
    times = np.asarray(timed.times_ms)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None

