"""The dialogue's recent notes as the model's context heard them, in beats and free of any
vocabulary, so a model switched in live (`improv.switch`) can be primed on them: it answers the
phrase being played, not from silence, whatever its tokens.

`count` numbers every note event ever added, so a priming made from a snapshot knows which
events came after it; `shifted` adds up the grid's moves (`shift`), so its beats can follow.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

HISTORY_EVENTS = 256  # note-ons and note-offs kept: ~128 notes, ~400 tokens to prime (a WaveNet's field is 255)


@dataclass(frozen=True, slots=True)
class HeardNote:
    beats: float  # on the beat clock in charge when it was heard
    kind: str  # "on" | "off"
    pitch: int
    velocity: int = 0
    own: bool = False  # improv's own note (the player's: False)


class NoteHistory:
    def __init__(self, size: int = HISTORY_EVENTS) -> None:
        self.events: deque[HeardNote] = deque(maxlen=size)
        self.count = 0  # events added, ever
        self.shifted = 0.0  # beats the grid moved, ever

    def add(self, note: HeardNote) -> None:
        self.events.append(note)
        self.count += 1

    def shift(self, beats: float) -> None:
        """The beat clock moved by `beats`: so do the notes kept."""
        self.events = deque((dataclasses.replace(e, beats=e.beats + beats) for e in self.events),
                            maxlen=self.events.maxlen)
        self.shifted += beats

    def since(self, count: int) -> list[HeardNote]:
        """The events added after the first `count` (as many as are still kept)."""
        new = self.count - count
        return list(self.events)[-new:] if new > 0 else []
