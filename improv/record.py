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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from improv.tokens import Note

TICKS_PER_BEAT = 960
PARTS = ("player", "improv")


@dataclass(frozen=True, slots=True)
class Mark:
    t_s: float
    on: bool
    channel: int
    pitch: int  # -1: every pitch on the channel (All Notes Off, panic)
    velocity: int = 0


class Take:
    """Note-on / note-off marks per part, paired into notes when written."""

    def __init__(self) -> None:
        self.marks: dict[str, list[Mark]] = {part: [] for part in PARTS}

    def note_on(self, part: str, t_s: float, channel: int, pitch: int, velocity: int) -> None:
        self.marks[part].append(Mark(t_s, True, channel, pitch, velocity))

    def note_off(self, part: str, t_s: float, channel: int, pitch: int) -> None:
        self.marks[part].append(Mark(t_s, False, channel, pitch))

    def all_off(self, part: str, t_s: float, channel: int) -> None:
        self.marks[part].append(Mark(t_s, False, channel, -1))

    def feed_bytes(self, part: str, t_s: float, data: list[int] | bytes) -> None:
        """Record one raw channel message (note on/off, All Notes Off); others are ignored."""
        if len(data) != 3:
            return
        kind, channel = data[0] & 0xF0, data[0] & 0x0F
        if kind == 0x90 and data[2] > 0:
            self.note_on(part, t_s, channel, data[1], data[2])
        elif kind in (0x80, 0x90):
            self.note_off(part, t_s, channel, data[1])
        elif kind == 0xB0 and data[1] in (120, 123):
            self.all_off(part, t_s, channel)

    def first_s(self) -> float | None:
        times = [m.t_s for marks in self.marks.values() for m in marks]
        return min(times) if times else None

    def notes(self, part: str, origin_s: float, bpm: float, end_s: float | None = None) -> list[Note]:
        """The part's notes in beats from `origin_s`; notes never released end at `end_s`."""
        beats_per_s = bpm / 60.0
        sounding: dict[tuple[int, int], list[Mark]] = {}
        spans: list[tuple[Mark, float]] = []
        marks = sorted(self.marks[part], key=lambda m: m.t_s)
        for mark in marks:
            if mark.on:
                sounding.setdefault((mark.channel, mark.pitch), []).append(mark)
                continue
            keys = [k for k in sounding if k[0] == mark.channel and mark.pitch in (-1, k[1])]
            for key in keys:
                spans += [(start, mark.t_s) for start in sounding.pop(key)]
        last_s = end_s if end_s is not None else (marks[-1].t_s if marks else origin_s)
        spans += [(start, last_s) for starts in sounding.values() for start in starts]
        spans.sort(key=lambda s: s[0].t_s)
        return [
            Note((on.t_s - origin_s) * beats_per_s, max(0.0, off_s - on.t_s) * beats_per_s,
                 on.pitch, on.velocity)
            for on, off_s in spans
        ]

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
    `sent(t_s, bytes)` (the output port's send hook): the fallback where only raw bytes are at
    hand; they carry no source, so it drops the metronome's channel and, with --thru, notes on a
    pitch the player holds (a guess). Wire one of the two, never both
    (`improv.daemon.Daemon.tap_output`): each would take the same note.
    """

    def __init__(self, take: Take, settings: Any) -> None:
        self.take = take
        self.settings = settings
        self._held: set[int] = set()  # pitches the player holds (for the --thru guess)

    def player(self, event: Any) -> None:
        from improv.events import NoteOff, NoteOn

        if not isinstance(event, (NoteOn, NoteOff)) or not self._listens(event.channel):
            return
        if isinstance(event, NoteOn):
            self.take.note_on("player", event.t_s, event.channel, event.pitch, event.velocity)
            self._held.add(event.pitch)
        else:
            self.take.note_off("player", event.t_s, event.channel, event.pitch)
            self._held.discard(event.pitch)

    def record(self, rec: Any) -> None:
        """A `SendRecord` from the scheduler: improv's own notes at their actual send time."""
        if rec.source in OWN_SOURCES:
            self.take.feed_bytes("improv", rec.actual_s, rec.message.bytes())

    def sent(self, t_s: float, data: list[int]) -> None:
        if len(data) != 3:
            return  # clock, start, stop
        out, time = self.settings.output, self.settings.time
        channel, status = data[0] & 0x0F, data[0] & 0xF0
        click = time.metronome_channel - 1
        if time.metronome and channel == click and click != out.channel - 1:
            return
        if out.thru and status in (0x80, 0x90) and data[1] in self._held:
            return
        self.take.feed_bytes("improv", t_s, data)

    def _listens(self, channel: int) -> bool:
        wanted = self.settings.output.input_channel
        return wanted is None or channel == wanted - 1
