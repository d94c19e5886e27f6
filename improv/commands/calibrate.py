"""Measure the MIDI round trip through a loopback and say what to set time.latency_ms to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def command(
    in_port: Annotated[str | None, Opt("--in", help="The MIDI input the loopback comes back on (the port your cable or connection leads to), named as in `improv ports`.")] = None,
    out_port: Annotated[str | None, Opt("--out", help="The MIDI output the probes go out on (the start of the cable or connection).")] = None,
    backend: Annotated[str | None, Opt("--backend", help="The MIDI system: alsa, jack, coremidi or winmm (the one improv run will use).", envvar="IMPROV_BACKEND")] = None,
    loopback: Annotated[bool, Opt("--loopback", help="Wire improv's output to its own input on the MIDI system (JACK or ALSA) instead of --in/--out: measures the system's own delay.")] = False,
    probes: Annotated[int, Opt("--probes", help="How many probe notes to time (one at a time, a few milliseconds apart).")] = 300,
    write: Annotated[Path | None, Opt("--write", help="Write the result as time.latency_ms into this TOML settings file, keeping everything else in it (created if missing).")] = None,
) -> None:
    """Time probe notes through a loopback (improv's output wired to its input): median, p99 and spread of the round trip, and the time.latency_ms to set so improv's planned notes land on the grid."""
    from improv.calibration import calibrate
    from improv.settings_file import write_setting

    result = calibrate(in_spec=in_port, out_spec=out_port, backend=backend, loopback=loopback, probes=probes)
    print(result.report())
    if write is not None:
        write_setting(write, "time", "latency_ms", result.latency_ms)
        print(f"wrote time.latency_ms = {result.latency_ms:g} to {write}")
