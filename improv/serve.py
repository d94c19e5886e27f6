"""`improv run`: the session from start to exit: settings, model and memory checked before any
port opens, ports, the daemon's threads, the main loop (view, port watch, timing log), signals,
and the shutdown that releases every note.

SIGINT / SIGTERM set one Event; the main thread then stops the engine thread, releases every
sounding note (note-offs + All Notes Off via `Engine.shutdown`), closes the ports, writes
`--record` and `--memory` and returns (exit 0). The same happens in `finally` on any other exit.
Start-up is measured from process start (Linux /proc; the command module's import elsewhere) to
"ports open and model loaded", printed as "ready" and written into `--ready-file` as JSON,
together with the engine's beat origin so scripts (and tests/test_jack.py) know the beat grid.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from improv.daemon import Daemon
from improv.errors import ImprovError
from improv.midi_in import MidiInput
from improv.timing_log import TimingLog

log = logging.getLogger("improv")

OUTPUT_DRAIN_S = 0.02  # after the last note-off, before closing the output (a few periods)
SWITCH_INTERVAL_S = 0.0005  # GIL hand-off: the callback and scheduler threads wait at most ~this


def process_age_s(fallback_start_s: float) -> float:
    """Seconds since this process started (Linux: /proc, 10 ms resolution), else since
    `fallback_start_s` on time.perf_counter()."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        return max(0.0, uptime_s - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - fallback_start_s


@dataclass(frozen=True)
class ServeOptions:
    """What `improv run` was asked for, beyond the settings (ports, files, logging)."""

    in_port: str | None = None  # exact name, substring or index; None: a virtual port
    out_port: str | None = None
    backend: str | None = None  # rtmidi API name; None: the platform's default
    model: str | Path | None = None  # None: the shipped default
    config: str | Path | None = None  # TOML settings file
    overrides: Mapping[str, Any] = field(default_factory=dict)  # "section.key" -> value, over the file
    record: str | Path | None = None  # --record FILE.mid
    quiet: bool = False  # no live view
    log_level: str = "warning"
    ready_file: str | Path | None = None  # JSON written once the ports are open
    timing_log: str | Path | None = None  # CSV of every send, planned vs actual
    memory: str | Path | None = None  # the session memory: loaded at start if there, saved at exit
    realtime: bool = False  # SCHED_FIFO for the scheduler and engine threads, memory locked (improv.realtime)
    start_s: float | None = None  # process start on time.perf_counter (start-up is measured from it)


def run_daemon(options: ServeOptions) -> None:
    """Run until SIGINT/SIGTERM. Errors before ports are open are raised (one line at the CLI)."""
    start_s = time.perf_counter() if options.start_s is None else options.start_s
    options = dataclasses.replace(options, start_s=start_s)
    _setup_logging(options.log_level)
    stop = threading.Event()
    restore = _install_signals(stop)
    osc = None
    try:
        from improv.settings import load_settings

        settings = load_settings(options.config, options.overrides)  # ConfigError: nothing opened yet
        _check_model_choice(options.model, settings.models.paths)
        log.info("start-up: settings at %.3f s", process_age_s(start_s))
        from improv.ports import choose_backend

        options = dataclasses.replace(options, backend=choose_backend(options.backend))
        log.info("start-up: MIDI backend %s at %.3f s", options.backend, process_age_s(start_s))
        step_models = load_live_models(options.model, settings.models.paths)  # ModelError: nothing opened yet
        log.info("start-up: %d model(s) loaded at %.3f s", len(step_models), process_age_s(start_s))
        memory = _open_memory(options.memory, step_models[0], settings)  # ModelError: nothing opened yet
        osc = _open_osc(settings)  # ConfigError (a port taken, a bad host): no MIDI port opened yet
        if stop.is_set():
            return
        _serve(step_models, settings, options, stop, memory, osc)
    finally:
        if osc is not None:
            osc.close()
        restore()


def _check_model_choice(model: str | Path | None, paths: tuple[str, ...]) -> None:
    """--model or --models (models.paths), never both: which would play first?"""
    if model is not None and paths:
        from improv.errors import ConfigError

        raise ConfigError(f"--model {model} and --models (models.paths) {','.join(paths)}: give one; "
                          "with --models the first listed plays first")


def load_live_models(model: str | Path | None, paths: tuple[str, ...]) -> list[Any]:
    """Each of --models / models.paths, else --model (every failure a `ModelError` naming the file)."""
    return [load_live_model(path) for path in paths] if paths else [load_live_model(model)]


def load_live_model(model: str | Path | None) -> Any:
    """`StepModel.load` (every failure a `ModelError` naming the file), then the live check."""
    from improv.model_step import StepModel

    step_model = StepModel.load(model)
    step_model.check_live()
    return step_model


def _open_memory(path: str | Path | None, step_model: Any, settings: Any) -> Any:
    if path is None:
        return None
    from improv.errors import ConfigError
    from improv.memory import open_memory

    listen = settings.listen
    if not listen.memory:
        raise ConfigError(f"--memory {path}: listen.memory is false; set it true or leave --memory out")
    return open_memory(path, step_model.vocab.names, listen.order, listen.half_life_tokens)


def _open_osc(settings: Any) -> Any:
    if settings.osc.port is None:
        return None
    from improv.osc import OscServer

    server = OscServer(settings.osc)
    host, port = server.address
    log.info("OSC: listening on %s:%d%s", host, port,
             f", state to {settings.osc.target}" if settings.osc.target else "")
    return server


def _serve(step_models: list[Any], settings: Any, options: ServeOptions, stop: threading.Event, memory: Any,
           osc: Any) -> None:
    from improv.clock import MonotonicClock
    from improv.engine import Engine
    from improv.output_watch import OutputWatch
    from improv.port_watch import PortWatch
    from improv.record import Take
    from improv.reflex import Reflex
    from improv.view import make_view

    start_s, backend = options.start_s, options.backend
    log.info("start-up: engine modules imported at %.3f s", process_age_s(start_s))
    graph, in_port, before, out_port = open_ports(backend, options.in_port, options.out_port)
    out_watch = daemon = timings = None
    try:
        log.info("start-up: ports open at %.3f s", process_age_s(start_s))
        if graph is not None:  # before the input callback is set: opening the monitor holds the GIL
            out_watch = OutputWatch.attach(graph, out_port, before, log)
            if out_watch is not None:
                out_watch.check_start()
        midi_in = MidiInput(in_port.rt)
        engine = Engine(step_models[0], settings, MonotonicClock(), out_port, memory=memory,
                        more_models=step_models[1:], reflex=Reflex.between(in_port.rt, out_port))
        log.info("start-up: engine built at %.3f s", process_age_s(start_s))
        daemon = Daemon(engine, midi_in, take=Take() if options.record else None, in_name=in_port.name,
                        out_name=out_port.name, backend=backend, model_name=step_models[0].name)
        timings = TimingLog(options.timing_log, engine.scheduler.records) if options.timing_log else None
        watches = [PortWatch(in_port, "input", log, guard=midi_in.paused),
                   PortWatch(out_port, "output", log, guard=midi_in.paused)]
        failed: set[tuple[str, type]] = set()  # main-thread failures logged so far
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        daemon.start()
        if osc is not None:
            osc.deliver = daemon.remote
            osc.start()
        if options.realtime:
            _realtime(daemon)
        daemon.startup_s = process_age_s(start_s)
        _announce(daemon, settings, options.ready_file)
        with make_view(options.quiet) as view:
            while not stop.wait(1.0 / _refresh_hz()):
                _guard_main(failed, "the port watch", _watch, daemon, watches)
                if out_watch is not None:
                    _guard_main(failed, "the output watch", out_watch.poll, time.monotonic(), daemon)
                _guard_main(failed, "the view", lambda: view.update(daemon.snapshot()))
                if timings is not None:
                    _guard_main(failed, "the timing log", timings.drain)
                if osc is not None:
                    _guard_main(failed, "OSC", lambda: osc.publish(daemon.state()))
            _guard_main(failed, "the view", lambda: view.update(daemon.snapshot()))
    finally:
        if daemon is not None:
            daemon.stop()  # note-offs + All Notes Off go out before the port closes
        if timings is not None:
            timings.close()
        if out_port is not None:
            time.sleep(OUTPUT_DRAIN_S)  # JACK/CoreMIDI send from their own thread, later
            out_port.close()
        in_port.close()
        if out_watch is not None:
            out_watch.close()
        elif graph is not None:
            graph.close()
        if daemon is not None and daemon.take is not None and options.record:
            _write_record(daemon, settings, options.record)
        if memory is not None:
            _save_memory(memory, options.memory)
        if options.ready_file:
            Path(options.ready_file).unlink(missing_ok=True)


def open_ports(backend: str, in_spec: str | None, out_spec: str | None) -> tuple[Any, Any, set[str], Any]:
    """improv's MIDI clients in start-up order: (JACK graph client or None, input, the ports listed
    before the output opened, output). The order matters on JACK (issue 13, docs/LIVE.md): a
    client opened while it is the process's only one (improv in) can leave a closing client's
    futex under that client's number, and the next client opened gets that number and is never
    run; the graph client, opened next and never activated, takes it instead of improv out."""
    from improv.output_watch import open_graph
    from improv.ports import open_port

    in_port = open_port("in", in_spec, backend)
    graph = None
    try:
        graph = open_graph(backend, log)  # JACK: the output watch's view of the graph
        before = set(graph.ports()) if graph is not None else set()
        return graph, in_port, before, open_port("out", out_spec, backend)
    except BaseException:
        in_port.close()
        if graph is not None:
            graph.close()
        raise


def _realtime(daemon: Daemon) -> None:
    from improv.realtime import go_realtime

    refused = go_realtime(daemon.thread_ids())
    for line in refused:
        log.warning("%s", line)
    if not refused:
        log.info("--realtime: scheduler and engine threads on SCHED_FIFO, memory locked")


def _guard_main(failed: set, what: str, fn: Any, *args: Any) -> None:
    """The main thread's chores (view, port watch, timing log) must never stop the music: a
    failure is logged once per chore and error type, and the loop goes on."""
    try:
        fn(*args)
    except Exception as err:  # noqa: BLE001
        if (what, type(err)) not in failed:
            failed.add((what, type(err)))
            log.error("%s failed (%s: %s); still playing", what, type(err).__name__, err)


def _watch(daemon: Daemon, watches: list[Any]) -> None:
    """Poll the ports opened by name (each at most every WATCH_INTERVAL_S); hand changes on."""
    for watch in watches:
        change = watch.poll(time.monotonic())
        if change == "back" and watch.direction == "input":
            daemon.midi_in.listen()  # reopening the port dropped the callback
        if change is not None:
            daemon.port_changed(f"{watch.direction} {change}")
            if change == "lost":
                daemon.last_error = f"MIDI {watch.direction} {watch.port.name!r} disappeared"
            elif daemon.last_error.startswith(f"MIDI {watch.direction} "):
                daemon.last_error = ""


def _refresh_hz() -> float:
    from improv.view import REFRESH_HZ

    return REFRESH_HZ


def _announce(daemon: Daemon, settings: Any, ready_file: str | Path | None) -> None:
    in_name, out_name, backend, model_name = daemon.names
    t = settings.time
    print(f"improv: ready in {daemon.startup_s:.2f} s: {backend} {in_name!r} -> {out_name!r}, "
          f"model {model_name}, {t.bpm:g} bpm {t.clock} clock, {settings.mode.mode} mode "
          "(Ctrl-C stops)", flush=True)
    if ready_file:
        info = {"pid": os.getpid(), "startup_s": daemon.startup_s, "backend": backend,
                "in_port": in_name, "out_port": out_name, "model": model_name,
                "models": [slot.name for slot in daemon.engine.improviser.switch.slots],
                "bpm": t.bpm, "clock": t.clock, "beat_origin_s": daemon.beat_origin_s(),
                # "call": the grid moves to each call's first note made while improv is idle, so
                # beat_origin_s holds only until then; "clock": a clock the player hears sets it
                "grid_anchor": "call" if daemon.engine.improviser.grid_follows_call else "clock",
                "clock_source": "time.perf_counter", "threads": daemon.thread_ids()}
        path = Path(ready_file)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)  # appears complete or not at all


def _save_memory(memory: Any, path: str | Path) -> None:
    try:
        memory.save(path)
        print(f"improv: saved the session memory to {path} ({memory.tokens_seen} tokens heard)", flush=True)
    except OSError as err:
        log.error("could not save the session memory to %s (%s); the file keeps what it had", path, err)


def _write_record(daemon: Daemon, settings: Any, record: str | Path) -> None:
    try:
        origin = None
        first = daemon.take.first_s()
        if first is not None and settings.time.clock == "internal":
            clock = daemon.engine.beat_clock  # start the file on the beat before the first note
            origin = clock.time_at(float(math.floor(clock.beats_at(first))))
        path = daemon.take.write(record, bpm=daemon.engine.beat_clock.bpm, origin_s=origin)
        print(f"improv: wrote {path} (tracks: player, improv)", flush=True)
    except (OSError, ValueError, ImprovError) as err:
        log.error("could not write %s: %s", record, err)


def _setup_logging(level: str) -> None:
    from improv.errors import ConfigError

    value = getattr(logging, level.upper(), None)
    if not isinstance(value, int):
        raise ConfigError(f"--log-level {level!r}: use debug, info, warning or error")
    logging.basicConfig(level=value, stream=sys.stderr, format="improv: %(levelname)s: %(message)s")
    logging.getLogger().setLevel(value)


def _install_signals(stop: threading.Event) -> Any:
    """SIGINT and SIGTERM set `stop` (main thread only); returns a function restoring the old ones."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = [signal.SIGINT, signal.SIGTERM]
    old = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("stopping (releasing notes)...")
        stop.set()

    for sig in signals:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, previous in old.items():
            signal.signal(sig, previous)

    return restore
