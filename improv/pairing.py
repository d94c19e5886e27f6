"""Note-ons matched with their note-offs: the one place improv turns MIDI messages into notes.

Two conventions, both common: a file reader ends a sounding note when its key is struck again
(`restrike_ends=True`, what sequencers write), while a check for stuck notes keeps every strike
open until a note-off of its own (`restrike_ends=False`, first in first out: a synth that starts a
second voice needs a second note-off). A velocity-0 note-on is a note-off; All Notes Off (CC 123)
and All Sound Off (CC 120) end everything on their channel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ALL_SOUND_OFF_CC = 120
ALL_NOTES_OFF_CC = 123


@dataclass(frozen=True, slots=True)
class Sounded:
    """One note as it sounded: `start` and `end` in whatever unit the caller feeds (s, ticks)."""

    start: float
    end: float
    channel: int
    pitch: int
    velocity: int


class NotePairer:
    def __init__(self, restrike_ends: bool = True) -> None:
        self.restrike_ends = restrike_ends
        self._open: dict[tuple[int, int], deque[tuple[float, int]]] = {}  # (channel, pitch) -> (start, velocity)
        self.closed: list[Sounded] = []

    def on(self, t: float, channel: int, pitch: int, velocity: int) -> None:
        if velocity == 0:
            self.off(t, channel, pitch)
            return
        if self.restrike_ends:
            self.off(t, channel, pitch)
        self._open.setdefault((channel, pitch), deque()).append((t, velocity))

    def off(self, t: float, channel: int, pitch: int) -> None:
        """Ends the oldest sounding strike of the key; a note-off for a key not sounding is ignored."""
        strikes = self._open.get((channel, pitch))
        if strikes:
            start, velocity = strikes.popleft()
            self.closed.append(Sounded(start, t, channel, pitch, velocity))

    def all_off(self, t: float, channel: int | None = None) -> None:
        for (ch, pitch), strikes in self._open.items():
            while strikes and (channel is None or ch == channel):
                start, velocity = strikes.popleft()
                self.closed.append(Sounded(start, t, ch, pitch, velocity))

    def feed(self, t: float, message: Sequence[int] | object) -> None:
        """One message: raw bytes (a list of ints) or a mido Message; anything else is ignored."""
        data = message.bytes() if hasattr(message, "bytes") else message
        if len(data) != 3:
            return
        status, channel = data[0] & 0xF0, data[0] & 0x0F
        if status == 0x90:
            self.on(t, channel, data[1], data[2])
        elif status == 0x80:
            self.off(t, channel, data[1])
        elif status == 0xB0 and data[1] in (ALL_SOUND_OFF_CC, ALL_NOTES_OFF_CC):
            self.all_off(t, channel)

    @property
    def hanging(self) -> list[Sounded]:
        """The strikes still sounding, each with `end` = its start (not yet ended)."""
        return sorted((Sounded(start, start, ch, pitch, vel) for (ch, pitch), strikes in self._open.items()
                       for start, vel in strikes), key=_order)

    def notes(self, end: float | None = None) -> list[Sounded]:
        """Every note, sorted by start then pitch; with `end`, the hanging ones end there."""
        if end is not None:
            self.all_off(end)
        return sorted(self.closed, key=_order)


def pair_messages(timed: Iterable[tuple[float, Sequence[int] | object]], *, restrike_ends: bool = True,
                  end: float | None = None) -> tuple[list[Sounded], list[Sounded]]:
    """(notes, strikes never released) of `(t, message)` pairs; with `end`, the unreleased end there."""
    pairer = NotePairer(restrike_ends)
    for t, message in timed:
        pairer.feed(t, message)
    hanging = pairer.hanging
    return pairer.notes(end), ([] if end is not None else hanging)


def _order(note: Sounded) -> tuple[float, int]:
    return note.start, note.pitch
