"""`--record FILE.mid`: the session as it was heard, the player's part and improv's part.

Times are the recorded ones: the player's notes as stamped on arrival (`improv.midi_in`), improv's
as actually sent (the scheduler's actual times), never the planned ones. On exit they become beats
at the session tempo and go to `improv.midifile.write_midi`, which writes the tempo meta event and
ticks at `TICKS_PER_BEAT` per beat (960: 0.52 ms at 120 bpm), so playback reproduces the timing
to the tick. Appending is thread-safe (list.append under the GIL): the engine thread records the
player, the scheduler thread records improv.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from improv.pairing import pair_messages
from improv.tokens import Note

TICKS_PER_BEAT = 960
PARTS = ("player", "improv")


class Take:
    """The messages of each part as they were heard, paired into notes when written."""

    def __init__(self) -> None:
        self.messages: dict[str, list[tuple[float, list[int]]]] = {part: [] for part in PARTS}

    def note_on(self, part: str, t_s: float, channel: int, pitch: int, velocity: int) -> None:
        self.messages[part].append((t_s, [0x90 | channel, pitch, velocity]))

    def note_off(self, part: str, t_s: float, channel: int, pitch: int) -> None:
        self.messages[part].append((t_s, [0x80 | channel, pitch, 0]))

    def feed_bytes(self, part: str, t_s: float, data: list[int] | bytes) -> None:
        """Record one raw channel message (note on/off, All Notes Off); others are ignored."""
        if len(data) == 3 and data[0] & 0xF0 in (0x80, 0x90, 0xB0):
            self.messages[part].append((t_s, list(data)))

    def first_s(self) -> float | None:
        times = [t for messages in self.messages.values() for t, _ in messages]
        return min(times) if times else None

    def notes(self, part: str, origin_s: float, bpm: float, end_s: float | None = None) -> list[Note]:
        """The part's notes in beats from `origin_s`; notes never released end at `end_s`."""
        beats_per_s = bpm / 60.0
        messages = sorted(self.messages[part], key=lambda m: m[0])
        last_s = end_s if end_s is not None else (messages[-1][0] if messages else origin_s)
        notes, _ = pair_messages(messages, end=last_s)
        return [Note((n.start - origin_s) * beats_per_s, max(0.0, n.end - n.start) * beats_per_s, n.pitch, n.velocity)
                for n in notes]

    def write(self, path: str | Path, bpm: float, origin_s: float | None = None) -> Path:
        """Write a type-1 file: tempo track, then "player" and "improv" tracks."""
        from improv.midifile import write_midi

        first = self.first_s()
        if origin_s is None:
            origin_s = first if first is not None else 0.0
        elif first is not None and first < origin_s:  # never a negative time: back up whole beats
            origin_s -= math.ceil((origin_s - first) * bpm / 60.0) * 60.0 / bpm
        tracks = {part: self.notes(part, origin_s, bpm) for part in PARTS}
        return write_midi(path, tracks, bpm=bpm, ticks_per_beat=TICKS_PER_BEAT)


OWN_SOURCES = frozenset({"response", "duet", "panic"})  # scheduler sources that are improv's part


class Taps:
    """Where the daemon's threads hand notes to a `Take`.

    `player(event)` (engine thread): the player's notes on the channel improv listens to.
    `record(rec)` (scheduler thread, as `Scheduler.on_record`): improv's part exactly - what the
    scheduler sent for the answer or the duet, and what a panic released - chosen by the source
    each `SendRecord` carries, so the player's echo (--thru) and the metronome never enter it,
    even on the same channel and pitch.
    """

    def __init__(self, take: Take, settings: Any) -> None:
        self.take = take
        self.settings = settings

    def player(self, event: Any) -> None:
        from improv.events import NoteOff, NoteOn

        if not isinstance(event, (NoteOn, NoteOff)) or not self.settings.output.listens_to(event.channel):
            return
        if isinstance(event, NoteOn):
            self.take.note_on("player", event.t_s, event.channel, event.pitch, event.velocity)
        else:
            self.take.note_off("player", event.t_s, event.channel, event.pitch)

    def record(self, rec: Any) -> None:
        """A `SendRecord` from the scheduler: improv's own notes at their actual send time."""
        if rec.source in OWN_SOURCES:
            self.take.feed_bytes("improv", rec.actual_s, rec.message.bytes())
