"""What went over a port, as notes: note-ons, note events, and the notes left sounding.

"Left sounding" is `improv.pairing`'s stuck-note convention (`restrike_ends=False`): every strike
needs a note-off of its own, and All Notes Off (CC 123) or All Sound Off (CC 120) ends everything
on its channel. Messages are `(seconds, raw bytes)` as the clients record them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from improv.pairing import Sounded, pair_messages
from improv.timing_log import TimingRow

Message = tuple[float, Sequence[int]]

# The start of the failure message of a session in which improv sent notes and nothing at all
# arrived: tests/conftest.py never reruns such a failure (pytest-rerunfailures' rerun_except).
SILENT_SESSION = "silent session"


def note_ons(messages: Iterable[Message]) -> list[Message]:
    """The note-ons (velocity > 0) among `messages`."""
    return [(t, m) for t, m in messages if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2] > 0]


def note_events(messages: Iterable[Message]) -> int:
    """How many note-ons and note-offs."""
    return sum(1 for _, m in messages if len(m) == 3 and m[0] & 0xE0 == 0x80)


def sounding(messages: Iterable[Message]) -> list[Sounded]:
    """The strikes no note-off (or All Notes Off) ended."""
    return pair_messages(messages, restrike_ends=False)[1]


def sounding_in_log(rows: Iterable[TimingRow], before_s: float = math.inf) -> list[Sounded]:
    """The notes improv turned on and never off, in its timing log, among what it sent before `before_s`."""
    return sounding((row.actual_s, row.midi_bytes()) for row in rows if row.actual_s < before_s)


def silence(sent: int, received: Sequence[Message], what: str = "note-ons") -> str:
    """SILENT_SESSION's words (to start a failure message) when improv sent something (`sent`
    `what`) and `received` holds nothing at all, else "". A lossy transport loses some, never all."""
    if sent and not received:
        return f"{SILENT_SESSION}: improv sent {sent} {what} and nothing at all arrived; "
    return ""
