"""List MIDI inputs and outputs for each MIDI backend (ALSA, JACK, CoreMIDI, Windows MM), and say
why a backend cannot be used."""

from __future__ import annotations

from typing import Annotated

import typer

from improv.errors import MidiPortError


def command(
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Only this backend: alsa, jack, coremidi or winmm. By default every backend "
            "compiled into python-rtmidi is listed.",
            envvar="IMPROV_BACKEND",
        ),
    ] = None,
) -> None:
    """List MIDI ports per backend; a backend that cannot be opened is shown with the reason."""
    list_ports(backend=backend)


def list_ports(*, backend: str | None) -> None:
    from improv.ports import list_all

    statuses = list_all(backend)
    for status in statuses:
        if not status.usable:
            print(f"{status.name}: unusable: {status.reason}")
            continue
        print(f"{status.name}:")
        for title, names in (("inputs", status.inputs), ("outputs", status.outputs)):
            print(f"  {title}:" + ("" if names else " none"))
            for index, name in enumerate(names):
                print(f"    {index}: {name}")
    if not any(s.usable for s in statuses):
        raise MidiPortError("no usable MIDI backend" + (f" ({statuses[0].reason})"
                                                          if len(statuses) == 1 else ""))
