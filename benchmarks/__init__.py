"""`improv bench`: every speed claim improv makes, measured in one run (see docs and `improv bench --help`).

Sections, each its own module: `step` (cached ONNX step vs PyTorch eager vs naive window
recompute), `midi` (end to end over JACK ports; the daemon's cost is measured on its call-and-
response daemon), `daemon` (start-up, memory, CPU), `train` (corpus preparation, training
throughput, quality), `music` (do the answers follow the call; the session memory's NLL gain). `report` collects the numbers, the reasons for the missing ones, the targets,
the tables and the flat JSON. A section that cannot run writes null for its keys with the reason;
a section that fails does the same and the others still run.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.report import Report, required_keys

SECTIONS = ("step", "midi", "daemon", "train", "quality", "music")
EXPECTED_MODELS = ("general-lstm", "bach-lstm", "bach-wavenet", "folk-lstm", "irish-lstm")  # what models/ ships; named in the keys when it is empty
PREFERRED_LIVE_MODEL = "general-lstm"


@dataclass(frozen=True)
class BenchOptions:
    quick: bool = False
    models_dir: Path | None = None  # default: improv.model_step.models_dir() ($IMPROV_MODELS or models/)
    models: tuple[str, ...] = ()  # names under models_dir or model folders; () = every shipped model
    checkpoints: dict[str, Path] = field(default_factory=dict)  # model name -> training checkpoint
    jsb_metrics: Path | None = None
    sections: tuple[str, ...] = SECTIONS
    periods: tuple[int, ...] = (32, 64)
    midi_seconds: float | None = None
    steps: int | None = None
    max_pieces: int | None = None
    train_steps: int | None = None
    train_threads: int | None = None
    jack_realtime: bool = False  # the MIDI section's jackd with --realtime (SCHED_FIFO where allowed)
    jack_port_max: int | None = None  # jackd --port-max of the bench's servers (None: midi.PORT_MAX)
    repeat: int = 1  # each MIDI stream this many times (medians of the per-run figures, their spread)
    realtime: bool = False  # the MIDI section's `improv run` with --realtime
    daemon_config: Path | None = None  # the MIDI section's `improv run --config`


def run_bench(options: BenchOptions, console=None) -> Report:
    from rich.console import Console

    console = console or Console(stderr=True)
    report, started = Report(), time.perf_counter()
    models, unknown = find_models(options.models_dir, options.models)
    names = [n for n, _ in models] + list(unknown) or list(EXPECTED_MODELS)
    _meta(report, options, models)
    with tempfile.TemporaryDirectory(prefix="improv-bench-") as tmp:
        work = Path(tmp)
        for name, why in unknown.items():
            report.missing([k for k in required_keys([name]) if f".{name}." in k], why)
        if not models:
            why = f"no shipped model in {_models_dir(options)} (a folder with model.json); train and export one"
            report.missing([k for k in required_keys(names) if k.startswith("step.")], why)
        for section in SECTIONS:
            if section not in options.sections:
                continue
            console.log(f"bench: {section} ...")
            t0 = time.perf_counter()
            try:
                _SECTIONS[section](report, options, models, work, console)
            except Exception as err:  # noqa: BLE001 - one broken section must not hide the others
                if os.environ.get("IMPROV_VERBOSE"):
                    raise
                report.note(f"{section}.failure_note", f"{type(err).__name__}: {err}")
                report.missing(_section_keys(section, names, options), f"the {section} section failed: "
                               f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")
            report.meta[f"{section}_s"] = round(time.perf_counter() - t0, 1)
    for section in SECTIONS:
        if section not in options.sections:
            report.missing(_section_keys(section, names, options), f"not run (--only {','.join(options.sections)})")
    report.missing(required_keys(names, options.periods), "not measured")
    report.meta["duration_s"] = round(time.perf_counter() - started, 1)
    return report


def find_models(models_dir: Path | None, picks: tuple[str, ...]) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """([(name, folder)] of the shipped models to bench, {name: why} for picks that are not models)."""
    base = Path(models_dir) if models_dir is not None else _default_models_dir()
    if not picks:  # the folders `improv models` lists that have a sidecar (hidden ones, exports in progress, left out)
        from improv.catalog import model_folders

        return [(d.name, d) for d in model_folders(base) if (d / "model.json").is_file()], {}
    models, unknown = [], {}
    for pick in picks:
        folder = Path(pick) if Path(pick).is_dir() else base / pick
        if folder.is_file():
            folder = folder.parent
        if (folder / "model.json").is_file():
            models.append((folder.name, folder))
        else:
            unknown[Path(pick).name] = f"no model at {folder} (no model.json)"
    return models, unknown


def _default_models_dir() -> Path:
    from improv.model_step import models_dir

    return models_dir()


def _models_dir(options: BenchOptions) -> Path:
    return Path(options.models_dir) if options.models_dir is not None else _default_models_dir()


def _meta(report: Report, options: BenchOptions, models: list[tuple[str, Path]]) -> None:
    import onnxruntime

    report.meta.update({
        "quick": options.quick, "models_dir": str(_models_dir(options)), "models": ",".join(n for n, _ in models),
        "sections": ",".join(options.sections), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def _section_keys(section: str, names: list[str], options: BenchOptions) -> list[str]:
    prefixes = {"step": ("step.",), "midi": ("midi.",), "daemon": ("daemon.",), "train": ("train.", "corpus."),
                "quality": ("quality.",), "music": ("music.",)}[section]
    return [k for k in required_keys(names, options.periods) if k.startswith(prefixes)]


def _live_model(models: list[tuple[str, Path]]) -> Path | None:
    named = dict(models)
    return named.get(PREFERRED_LIVE_MODEL) or (models[0][1] if models else None)


# ---------------------------------------------------------------------- sections


def _step(report: Report, options: BenchOptions, models, work: Path, console) -> None:
    from benchmarks.step import StepOptions, bench_model

    step_options = StepOptions(steps=options.steps or (400 if options.quick else 2000),
                               naive_steps=options.steps or (50 if options.quick else 2000),
                               warmup=50 if options.quick else 200, idle_steps=30 if options.quick else 100)
    for name, folder in models:
        console.log(f"bench: step {name}")
        try:
            bench_model(report, name, folder, step_options, work / "step", options.checkpoints.get(name))
        except Exception as err:  # noqa: BLE001 - ModelError for a broken export, and the like
            if os.environ.get("IMPROV_VERBOSE"):
                raise
            report.missing([k for k in required_keys([name]) if k.startswith(f"step.{name}.")],
                           f"{name}: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
    if models:
        report.note("step.note", f"p50/p99/max over {step_options.steps} timed steps ({step_options.naive_steps} "
                                 f"naive windows) after warm-up, 1 thread each, cached / torch / naive timed in "
                                 f"{step_options.rounds} round-robin blocks (each block re-warmed by a few untimed "
                                 "calls); ratios are of the p50s of this run")


def _midi(report: Report, options: BenchOptions, models, work: Path, console) -> None:
    from benchmarks import daemon, midi
    from benchmarks.harness.jackd import jack_missing

    model = _live_model(models)
    costs = daemon.Costs()
    why = jack_missing() if model is not None else "no shipped model to run the daemon with"
    if why is not None:
        report.missing([k for k in required_keys([], options.periods) if k.startswith("midi.")], why)
        return
    midi_options = midi.MidiOptions(seconds=options.midi_seconds or (6.0 if options.quick else 60.0),
                                    periods=options.periods, idle_s=2.0 if options.quick else 10.0,
                                    realtime=options.jack_realtime, repeat=options.repeat,
                                    grid_seconds=6.0 if options.quick else None,
                                    daemon_args=(*(("--realtime",) if options.realtime else ()),
                                                 *(("--config", str(options.daemon_config)) if options.daemon_config else ())),
                                    port_max=options.jack_port_max or midi.PORT_MAX)
    midi.run(report, model, midi_options, work, costs)
    if "daemon" in options.sections:
        costs.write(report)
        report.note("daemon.note", f"{model.name} in call-and-response mode on JACK (period {options.periods[-1]}); "
                                   f"start-up over every daemon the MIDI section started; CPU and memory from /proc")


def _daemon(report: Report, options: BenchOptions, models, work: Path, console) -> None:
    if report.get("daemon.startup_s") is not None:
        return  # measured on the MIDI section's daemons
    from benchmarks import daemon, midi
    from benchmarks.harness.jackd import jack_missing

    model = _live_model(models)
    if model is None:
        report.missing(["daemon.startup_s", "daemon.rss_mb"], "no shipped model to run the daemon with")
        return
    idle_s = 2.0 if options.quick else 10.0
    no_jack = jack_missing()
    if no_jack is not None:
        daemon.standalone(report, model, work, idle_s, no_jack)
        return
    with midi.jack_server(64, 48000, work, port_max=options.jack_port_max or midi.PORT_MAX) as server:  # no player
        daemon.standalone(report, model, work, idle_s, "the MIDI section did not run", env=server.env,
                          args=["--backend", "jack"])


def _train(report: Report, options: BenchOptions, models, work: Path, console) -> None:
    from benchmarks import train

    train_options = train.TrainOptions(max_pieces=options.max_pieces or (6 if options.quick else 32),
                                       timed_steps=options.train_steps or (3 if options.quick else 20),
                                       batch_size=8 if options.quick else 64, window=128 if options.quick else 256,
                                       threads=options.train_threads)
    corpus = train.corpus_times(report, train_options, work)
    specs = [(name, *_train_spec(folder)) for name, folder in models]
    kinds = {kind for _, kind, _ in specs}
    specs += [(kind, kind, {}) for kind in ("lstm", "wavenet") if kind not in kinds]  # both kinds, always
    if not models:  # the shipped models' keys, with the default config of their kind
        specs = [(name, name.rsplit("-", 1)[-1], {}) for name in EXPECTED_MODELS]
    train.train_speed(report, specs, corpus, train_options, work)


def _train_spec(folder: Path) -> tuple[str, dict]:
    import json

    meta = json.loads((folder / "model.json").read_text())
    options = {k: v for k, v in (meta.get("model_config") or {}).items() if k != "vocab_size"}
    return meta["kind"], options


def _quality(report: Report, options: BenchOptions, models, work: Path, console) -> None:
    from benchmarks import train

    train.quality(report, models, train.TrainOptions(eval_tokens=2000 if options.quick else None))
    train.jsb_figure(report, options.jsb_metrics)


def _music(report: Report, options: BenchOptions, models, work: Path, console) -> None:
    from benchmarks import music

    music.run(report, models, music.MusicOptions(calls=3 if options.quick else 8, seeds=2 if options.quick else 4,
                                                 adapt_pieces=4 if options.quick else 15))


_SECTIONS = {"step": _step, "midi": _midi, "daemon": _daemon, "train": _train, "quality": _quality, "music": _music}

