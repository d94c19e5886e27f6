"""What the musician sees: a rich Live view in a terminal, plain log lines otherwise.

The daemon hands the view a `Snapshot` (an immutable copy, built on the main thread from numbers
the engine and scheduler threads publish), so drawing never takes a lock the engine needs and
never slows it. The main thread refreshes at `REFRESH_HZ`; with `--quiet` or when stdout is not a
terminal, `LogView` prints one line per change of state instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from improv.tokens import Note

REFRESH_HZ = 4.0
ROLL_ROWS = 20  # the piano roll's height at most, in pitches


@dataclass(frozen=True)
class Snapshot:
    backend: str = ""
    in_port: str = ""
    out_port: str = ""
    model: str = ""
    bpm: float = 0.0
    clock: str = "internal"  # "internal" | "midi"
    clock_running: bool = True
    sending_clock: bool = False
    mode: str = "call"
    state: str = "listening"  # "listening" | "responding" | "playing" (duet)
    call: Sequence[Note] = field(default_factory=tuple)  # beats from the call's first note
    response: Sequence[Note] = field(default_factory=tuple)  # beats from the same origin
    step_ms_p50: float | None = None
    step_ms_p99: float | None = None
    late_ms_p50: float | None = None  # actual - planned send time of improv's notes
    late_ms_p99: float | None = None
    notes_in: int = 0
    notes_out: int = 0
    responses: int = 0
    errors: int = 0
    last_error: str = ""
    startup_s: float | None = None
    key: str = ""  # the key the lock uses now ("" : none)
    following: float | None = None  # how much the answers follow the session memory (0..1); None: no memory


def listening(s: Snapshot) -> str:
    """The key and how much the answers follow the player, e.g. "D minor, following 62 %"."""
    key = s.key or "no key yet"
    follow = "no memory" if s.following is None else f"following {100 * s.following:.0f} %"
    return f"{key}, {follow}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def summary(s: Snapshot) -> str:
    """One line: the log view's line and the live view's footer."""
    clock = f"{s.bpm:.1f} bpm {s.clock}" + ("" if s.clock_running else " (stopped)")
    return (f"{s.state}: {s.mode} mode, model {s.model}, {clock}, {listening(s)}, in {s.notes_in} / out {s.notes_out} notes, "
            f"{s.responses} responses, step {_ms(s.step_ms_p50)} p50 {_ms(s.step_ms_p99)} p99, "
            f"timing error {_ms(s.late_ms_p50)} p50 {_ms(s.late_ms_p99)} p99")


class LogView:
    """Plain lines on stdout when something a musician cares about changes."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream or sys.stdout
        self._last: tuple | None = None

    def __enter__(self) -> LogView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, s: Snapshot) -> None:
        # not every note (listening <-> waiting): answers, model, tempo, clock, mode and errors
        key = (s.state == "responding", s.mode, s.model, round(s.bpm), s.clock_running, s.responses,
               s.errors)
        if key != self._last:
            self._last = key
            print(f"improv: {summary(s)}", file=self._stream, flush=True)


class LiveView:
    """A rich Live panel: ports, model, tempo, mode/state, last call + response, timing."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console()
        self._live = Live(console=self._console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, s: Snapshot) -> None:
        self._live.update(render(s), refresh=True)


def render(s: Snapshot) -> Any:
    """The panel for one snapshot (a rich renderable)."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from improv.pianoroll import rich_roll

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("ports", f"{s.in_port} -> {s.out_port} ({s.backend})")
    info.add_row("model", s.model)
    clock = f"{s.bpm:.1f} bpm, {s.clock} clock" + ("" if s.clock_running else " (stopped)")
    info.add_row("tempo", clock + (", sending clock" if s.sending_clock else ""))
    state_style = "bold green" if s.state == "listening" else "bold magenta"
    info.add_row("mode", Text.assemble(f"{s.mode}, ", (s.state, state_style)))
    info.add_row("listening", listening(s))
    info.add_row("model step", f"{_ms(s.step_ms_p50)} p50, {_ms(s.step_ms_p99)} p99")
    info.add_row("timing error", f"{_ms(s.late_ms_p50)} p50, {_ms(s.late_ms_p99)} p99")
    info.add_row("notes", f"{s.notes_in} in, {s.notes_out} out, {s.responses} responses")
    if s.errors:
        info.add_row("errors", Text(f"{s.errors}: {s.last_error}", style="red"))
    parts: list[Any] = [info]
    if s.call or s.response:
        lo, hi = pitch_window([n.pitch for n in (*s.call, *s.response)])
        parts += [Text("last call (cyan) and response (magenta)", style="dim"),
                  rich_roll([list(s.call), list(s.response)], steps_per_beat=4, lo=lo, hi=hi)]
    return Panel(Group(*parts), title="improv", subtitle="Ctrl-C stops (all notes off)")


def call_and_response(call: list[Note], response: list[Note],
                      max_beats: float = 16.0) -> tuple[tuple[Note, ...], tuple[Note, ...]]:
    """Both moved to start at the call's first note (beats), cut after `max_beats`."""
    if not call and not response:
        return (), ()
    origin = min(n.onset_beats for n in (call or response))

    def shift(notes: list[Note]) -> tuple[Note, ...]:
        return tuple(Note(n.onset_beats - origin, n.duration_beats, n.pitch, n.velocity)
                     for n in notes if n.onset_beats - origin < max_beats)

    return shift(call), shift(response)


def pitch_window(pitches: Sequence[int], rows: int = ROLL_ROWS) -> tuple[int, int]:
    """At most `rows` pitch rows, centred on the median pitch, so the view fits a terminal."""
    lo, hi = min(pitches), max(pitches)
    if hi - lo < rows:
        return lo, hi
    middle = sorted(pitches)[len(pitches) // 2]
    lo = max(lo, min(middle - rows // 2, hi - rows + 1))
    return lo, lo + rows - 1


def make_view(quiet: bool, stream: Any = None) -> LogView | LiveView:
    """The live view on a terminal, the log view with --quiet or when piped."""
    stream = stream or sys.stdout
    if quiet or not getattr(stream, "isatty", lambda: False)():
        return LogView(stream)
    return LiveView()
