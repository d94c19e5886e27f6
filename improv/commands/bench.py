"""`improv bench`: every speed claim improv makes, from one command (the work is in benchmarks/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from improv.errors import ConfigError, ImprovError

Opt = typer.Option


def command(
    json_out: Annotated[Path | None, Opt("--json", help="Also write every number as one flat JSON object to this file: a number or null per key, with KEY.why saying why a value is missing and KEY.pass for each target.")] = None,
    quick: Annotated[bool, Opt("--quick", help="A shorter run (under 2 minutes) with the same keys: fewer timed steps, 6-second MIDI streams, fewer pieces and training steps, at most 2000 test tokens.")] = False,
    models_dir: Annotated[Path | None, Opt("--models-dir", help="The folder of shipped models: every subfolder with a model.json is benchmarked.", envvar="IMPROV_MODELS")] = None,
    model: Annotated[list[str] | None, Opt("--model", help="Benchmark only this model: a name under the models folder or a model folder. Repeat for more.")] = None,
    checkpoint: Annotated[list[str] | None, Opt("--checkpoint", help="A model's training checkpoint, for the PyTorch and naive figures: PATH when one model is benchmarked, else NAME=PATH. Repeat for more. By default a checkpoint in the model folder or its run folder is used if it matches model.onnx, else the weights are read back from model.onnx.")] = None,
    jsb_metrics: Annotated[Path | None, Opt("--jsb-metrics", help="The metrics.json of the JSB 16th-note run. By default the newest JSB run under runs/.")] = None,
    only: Annotated[str | None, Opt("--only", help="Run only these sections, comma-separated: step, midi, daemon, train, quality, music. The other sections' keys are written as null.")] = None,
    period: Annotated[list[int] | None, Opt("--period", help="A JACK period in frames (48 kHz) to run the MIDI streams at; repeat for more. Default: 32 and 64.")] = None,
    jack_realtime: Annotated[bool, Opt("--jack-realtime", help="Run the MIDI section's private jackd with --realtime (SCHED_FIFO where the machine allows it, as musicians run JACK; jackd falls back quietly where it may not). Default: not realtime, as CI machines allow.")] = False,
    jack_port_max: Annotated[int | None, Opt("--jack-port-max", help="The most ports the bench's private jackd manages (jackd --port-max). Every JACK client maps buffers sized by it, and they count in its resident memory. Default: 256.", min=16)] = None,
    repeat: Annotated[int, Opt("--repeat", help="Play each MIDI stream this many times: each figure is the median of the runs' figures (a p99 the median of the per-run p99s), with its spread (max - min) beside it.", min=1)] = 1,
    daemon_config: Annotated[Path | None, Opt("--daemon-config", help="A TOML settings file for the MIDI section's `improv run` (e.g. [listen] memory = false, to measure what the session memory costs a reaction).")] = None,
    realtime: Annotated[bool, Opt("--realtime", help="Run the MIDI section's `improv run` with --realtime (its scheduler and engine threads on SCHED_FIFO where allowed); pair it with --jack-realtime.")] = False,
    midi_seconds: Annotated[float | None, Opt("--midi-seconds", help="Length of each MIDI stream in seconds (default 60, 6 with --quick).", min=1.0)] = None,
    steps: Annotated[int | None, Opt("--steps", help="Timed steps per model-step measurement (default 2000; with --quick 400, and 50 naive windows).", min=10)] = None,
    max_pieces: Annotated[int | None, Opt("--max-pieces", help="Pieces of the bach corpus to prepare and train on (default 32, 6 with --quick).", min=3)] = None,
    train_steps: Annotated[int | None, Opt("--train-steps", help="Timed optimizer steps per model kind (default 20, 3 with --quick).", min=1)] = None,
    train_threads: Annotated[int | None, Opt("--train-threads", help="Torch threads for the training run (default: what `improv train` uses).", min=1)] = None,
) -> None:
    """Measure every speed claim in one run: model step, MIDI end to end, the daemon, training and quality."""
    from rich.console import Console

    bench = _import_benchmarks()
    models = tuple(model or ())
    options = bench.BenchOptions(
        quick=quick, models_dir=models_dir, models=models, checkpoints=parse_checkpoints(checkpoint or [], models),
        jsb_metrics=jsb_metrics, sections=parse_sections(only, bench.SECTIONS),
        periods=tuple(period or (32, 64)), midi_seconds=midi_seconds, steps=steps, max_pieces=max_pieces,
        train_steps=train_steps, train_threads=train_threads, jack_realtime=jack_realtime, repeat=repeat, realtime=realtime,
        daemon_config=daemon_config,
        jack_port_max=jack_port_max)
    report = bench.run_bench(options, console=Console(stderr=True))
    out = Console()
    for table in report.tables() + report.extra_tables:
        out.print(table)
    if json_out is not None:
        out.print(f"wrote {report.write_json(json_out)}")


def parse_sections(only: str | None, known: tuple[str, ...]) -> tuple[str, ...]:
    if not only:
        return known
    picked = tuple(s.strip() for s in only.split(",") if s.strip())
    unknown = [s for s in picked if s not in known]
    if unknown or not picked:
        raise ConfigError(f"--only {only!r}: use sections among {', '.join(known)}, comma-separated")
    return picked


def parse_checkpoints(specs: list[str], models: tuple[str, ...]) -> dict[str, Path]:
    """["NAME=PATH", ...] or one bare PATH with exactly one --model -> {name: path}."""
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(models) != 1:
                raise ConfigError(f"--checkpoint {spec}: say which model it belongs to, as NAME=PATH "
                                  "(a bare PATH needs exactly one --model)")
            name, path = Path(models[0]).name, spec
        out[name] = Path(path)
    return out


def _import_benchmarks():
    """The `benchmarks` package, installed beside improv (`pip install -e .` in the checkout)."""
    try:
        import benchmarks
    except ModuleNotFoundError as err:
        if err.name != "benchmarks":
            raise
        raise ImprovError("improv bench needs the benchmarks package of the improv repository; install the "
                          "checkout (pip install -e .)") from err
    return benchmarks
