"""Listen on a MIDI input and answer in time on a MIDI output (the live daemon)."""

from __future__ import annotations

import time

_START_S = time.perf_counter()  # start-up is measured from here (the command module's import)

from pathlib import Path  # noqa: E402
from typing import Annotated, Any  # noqa: E402

import typer  # noqa: E402

from improv.errors import ConfigError  # noqa: E402

Opt = typer.Option
KEEP_WARM_MS = 1.0  # --keep-warm: a scratch step every millisecond while idle


def command(
    in_port: Annotated[str | None, Opt("--in", help="The MIDI input to listen to: an exact name, an index or a unique part of a name (see `improv ports`). Without it improv creates a virtual input called \"improv in\".", envvar="IMPROV_IN")] = None,
    out_port: Annotated[str | None, Opt("--out", help="The MIDI output to play on, named like --in. Without it improv creates a virtual output called \"improv out\".", envvar="IMPROV_OUT")] = None,
    backend: Annotated[str | None, Opt("--backend", help="The MIDI system: alsa, jack, coremidi or winmm. By default the platform's own (ALSA on Linux, falling back to a running JACK).", envvar="IMPROV_BACKEND")] = None,
    model: Annotated[str | None, Opt("--model", help="A model folder, its model.json, or a name under models/. By default the shipped default model.", envvar="IMPROV_MODEL")] = None,
    models: Annotated[str | None, Opt("--models", help="Several models to switch between live, comma-separated (e.g. bach-lstm,bach-wavenet): all are loaded at start, the first plays first, and MIDI Program Change N (or the model CC, or OSC) selects the model at position N (0 = the first). Instead of --model.")] = None,
    config: Annotated[Path | None, Opt("--config", help="A TOML settings file; options given here override it.", envvar="IMPROV_CONFIG")] = None,
    mode: Annotated[str | None, Opt("--mode", help="call: answer each phrase when the player stops; duet: play along all the time.")] = None,
    clock: Annotated[str | None, Opt("--clock", help="internal: improv keeps the tempo (--bpm); midi: follow the MIDI clock arriving on the input.")] = None,
    bpm: Annotated[float | None, Opt("--bpm", help="Tempo in beats per minute for the internal clock (and the starting guess when following MIDI clock).")] = None,
    metronome: Annotated[bool | None, Opt("--metronome/--no-metronome", help="Click every beat on the metronome channel (GM drums, channel 10).")] = None,
    send_clock: Annotated[bool | None, Opt("--send-clock/--no-send-clock", help="Be the clock master: send 24-ppqn MIDI clock with Start and Stop on the output (internal clock only).")] = None,
    latency_ms: Annotated[float | None, Opt("--latency-ms", help="Send what improv plans (answers, the duet's line, the metronome, clock out) this many milliseconds early, so it lands on the grid after the MIDI system's delay (with --clock midi this covers the clock's way in too); negative values delay. Measure it with `improv calibrate`. Reactions to the player's notes cannot be sent before those notes: they are not moved.", envvar="IMPROV_LATENCY_MS")] = None,
    keep_warm: Annotated[bool | None, Opt("--keep-warm/--no-keep-warm", help="While nothing is happening, step the model on a scratch state every millisecond (time.keep_warm_ms = 1), so a reaction's first step finds the CPU awake rather than waking it: shorter reactions on machines whose idle CPUs sleep deeply (virtual machines, laptops), for about a fifth of a core while idle (README, \"Keep warm\").")] = None,
    thru: Annotated[bool | None, Opt("--thru/--no-thru", help="Echo what the player plays to the output.")] = None,
    record: Annotated[Path | None, Opt("--record", help="On exit, write the session to this MIDI file: the player's part and improv's part as two tracks, at the times they sounded.")] = None,
    temperature: Annotated[float | None, Opt("--temperature", help="Sampling temperature: lower is safer, higher is wilder (e.g. 0.9).")] = None,
    top_p: Annotated[float | None, Opt("--top-p", help="Nucleus sampling: sample only from the most likely tokens that together hold this probability (e.g. 0.95).")] = None,
    pitch_range: Annotated[str | None, Opt("--range", help="Lowest and highest MIDI pitch improv may play, as LO-HI, e.g. 36-96.")] = None,
    max_polyphony: Annotated[int | None, Opt("--max-polyphony", help="At most this many of improv's notes sound at once.")] = None,
    key: Annotated[str | None, Opt("--key", help="Keep to a key: auto (detected from the player), off, or a key such as \"A minor\" or F#m.")] = None,
    seed: Annotated[int | None, Opt("--seed", help="A random seed: the same calls get the same answers.")] = None,
    channel: Annotated[str | None, Opt("--channel", help="Listen only to this input channel (1..16), or omni for all.")] = None,
    out_channel: Annotated[int | None, Opt("--out-channel", help="The channel improv plays on (1..16).")] = None,
    quiet: Annotated[bool, Opt("--quiet", help="Plain log lines instead of the live terminal view.")] = False,
    log_level: Annotated[str, Opt("--log-level", help="Logging detail on stderr: debug, info, warning or error.", envvar="IMPROV_LOG_LEVEL")] = "warning",
    ready_file: Annotated[Path | None, Opt("--ready-file", help="Create this file once the ports are open and the model is loaded (for scripts and tests).")] = None,
    memory: Annotated[Path | None, Opt("--memory", help="A session memory file: what improv learned of your playing is loaded from it at start (if it exists) and saved to it at exit, so your style carries across sessions.")] = None,
    osc: Annotated[int | None, Opt("--osc", help="Listen for OSC control on this UDP port (every setting a CC changes, the model, the mode, panic; see the README). Only this machine can reach it unless --osc-host says otherwise.")] = None,
    osc_host: Annotated[str | None, Opt("--osc-host", help="The address the OSC port listens on. The default, 127.0.0.1, admits this machine only. 0.0.0.0 opens it to every network this machine is on, with no password: anyone who can reach the port can change settings, switch models and silence improv.")] = None,
    osc_target: Annotated[str | None, Opt("--osc-target", help="HOST:PORT to send improv's state to over OSC (mode, model, key, tempo, answers), as it changes.")] = None,
    realtime: Annotated[bool, Opt("--realtime", help="Run improv's scheduler and engine threads on realtime scheduling (SCHED_FIFO, below a realtime JACK server's priority) and lock its memory, where the system allows it (and keep its start-up objects out of the garbage collector's passes); where it does not, one line says how to allow it (rtprio and memlock limits, the audio group) and improv carries on.", envvar="IMPROV_REALTIME")] = False,
    timing_log: Annotated[Path | None, Opt("--timing-log", help="Write every message improv sends to this CSV file as the session goes: when it was planned and when it went out (seconds, time.perf_counter), its kind, channel, pitch or controller, and source.")] = None,
) -> None:
    """Listen on a MIDI input and answer in time on a MIDI output; Ctrl-C releases every note and stops."""
    overrides = build_overrides(
        mode=mode, clock=clock, bpm=bpm, metronome=metronome, send_clock=send_clock, thru=thru,
        latency_ms=latency_ms, keep_warm_ms=None if keep_warm is None else KEEP_WARM_MS * keep_warm,
        temperature=temperature, top_p=top_p, pitch_range=pitch_range,
        max_polyphony=max_polyphony, key=key, seed=seed, channel=channel, out_channel=out_channel,
        models=models, osc=osc, osc_host=osc_host, osc_target=osc_target)
    from improv.serve import ServeOptions, run_daemon

    run_daemon(ServeOptions(in_port=in_port, out_port=out_port, backend=backend, model=model, config=config,
                            overrides=overrides or {}, record=record, quiet=quiet, log_level=log_level,
                            ready_file=ready_file, timing_log=timing_log, memory=memory, realtime=realtime,
                            start_s=_START_S))


def parse_range(text: str) -> tuple[int, int]:
    """"36-96" -> (36, 96)."""
    lo, sep, hi = text.replace(" ", "").partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        raise ConfigError(f"--range {text!r}: use LO-HI with MIDI pitches, e.g. 36-96")
    return int(lo), int(hi)


def parse_channel(text: str) -> int | None:
    """"omni" -> None, "1".."16" -> the same int (settings are 1-based)."""
    if text.strip().lower() in ("omni", "all", "off"):
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= 16:
        raise ConfigError(f"--channel {text!r}: use 1..16 or omni")
    return int(text)


def build_overrides(**options: Any) -> dict[str, Any]:
    """Only the options the user gave, as settings keys ("sampling.temperature": 0.8)."""
    keys = {"mode": "mode.mode", "clock": "time.clock", "bpm": "time.bpm",
            "metronome": "time.metronome", "send_clock": "time.send_clock",
            "latency_ms": "time.latency_ms", "keep_warm_ms": "time.keep_warm_ms",
            "thru": "output.thru", "temperature": "sampling.temperature",
            "top_p": "sampling.top_p", "max_polyphony": "sampling.max_polyphony",
            "key": "sampling.key", "seed": "sampling.seed", "out_channel": "output.channel",
            "osc": "osc.port", "osc_host": "osc.host", "osc_target": "osc.target"}
    overrides = {keys[name]: value for name, value in options.items()
                 if name in keys and value is not None}
    if options.get("pitch_range") is not None:
        lo, hi = parse_range(options["pitch_range"])
        overrides["sampling.pitch_lo"], overrides["sampling.pitch_hi"] = lo, hi
    if options.get("channel") is not None:
        overrides["output.input_channel"] = parse_channel(options["channel"])
    if options.get("models") is not None:
        overrides["models.paths"] = parse_models(options["models"])
    return overrides


def parse_models(text: str) -> list[str]:
    """"bach-lstm, bach-wavenet" -> ["bach-lstm", "bach-wavenet"]."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ConfigError(f"--models {text!r}: give model folders or names separated by commas, e.g. bach-lstm,bach-wavenet")
    return names
