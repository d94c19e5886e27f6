"""The `improv` command line. Thin: each command lives in improv/commands/<name>.py, keeps heavy
imports (training, torch, music21) inside its body, and calls one keyword-only function.

`ImprovError` is turned into one line on stderr and its exit code here, at the edge; set
IMPROV_VERBOSE=1 to see the traceback as well.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable

import typer

from improv.errors import ImprovError

COMMANDS = ("run", "ports", "calibrate", "demo", "generate", "train", "export", "eval", "models", "bench")

app = typer.Typer(
    name="improv",
    help="A real-time MIDI improviser: it listens to a player and answers in time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _one_line_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ImprovError as err:
            if os.environ.get("IMPROV_VERBOSE"):
                raise
            print(f"improv: {err}", file=sys.stderr)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            print("improv: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def _register() -> None:
    for name in COMMANDS:
        module = importlib.import_module(f"improv.commands.{name}")
        app.command(name, help=module.command.__doc__)(_one_line_errors(module.command))


_register()

if __name__ == "__main__":
    app()
