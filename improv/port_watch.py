"""Notices a port opened by name going away and coming back, and reconnects to it.

A port opened by name belongs to another client (a keyboard, a synth) that may go away mid-set.
`PortWatch` polls the port list (the daemon's main thread, every `WATCH_INTERVAL_S`): when the
port is gone it reports it once, and when a port of that name (or one the user's spec matches)
is back it reconnects the same rtmidi client to it. Virtual ports own themselves: never watched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from improv.midi_port import OpenPort

WATCH_INTERVAL_S = 0.5  # how often a port opened by name is looked for


class PortWatch:
    """Notices a port opened by name going away and coming back; see the module docstring.

    `poll(now_s)` is cheap between intervals. It returns "lost" or "back" on a change (the caller
    releases notes, reconnects its state) and None otherwise, and logs each change in one line.
    """

    def __init__(self, port: OpenPort, direction: str, log: Any,
                 interval_s: float = WATCH_INTERVAL_S,
                 guard: Callable[[], Any] = contextlib.nullcontext) -> None:
        self.port, self.direction, self.log, self.interval_s = port, direction, log, interval_s
        self.guard = guard  # a context around reconnecting (the live input's callback paused)
        self.lost = False
        self.losses = 0
        self._next_s = -1.0

    def poll(self, now_s: float) -> str | None:
        if self.port.virtual or now_s < self._next_s:
            return None
        self._next_s = now_s + self.interval_s
        if not self.lost and not self.port.present():
            self.lost, self.losses = True, self.losses + 1
            self.log.warning("MIDI %s %r disappeared: releasing its notes; improv keeps running and "
                             "reconnects when it returns", self.direction, self.port.name)
            return "lost"
        if self.lost and self.port.present_again():
            with self.guard():
                back = self.port.reconnect()
            if not back:
                return None
            self.lost = False
            self.log.warning("MIDI %s %r is back; reconnected", self.direction, self.port.name)
            return "back"
        return None
