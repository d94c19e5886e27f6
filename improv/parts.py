"""The hand-over of improv's own notes from the model to the scheduler: kept in beats, handed over late.

A `Part` is one stream of improv's notes (an answer, or the duet). The generator's events
(`GenEvent`, in beats) wait in it and become `Planned` (seconds) only `LOOKAHEAD_S` before they
are due, converted with the beat clock as it is then: a tempo change of a followed MIDI clock
re-times everything not yet handed over, and what was handed over is at most `LOOKAHEAD_S` of
music. A note-off is never due before its note-on, and every note-on handed over gets its
note-off: later from the queue, or at once from `stop` (the caller also cancels the source in the
scheduler), or, after `cut`, from the queue for the notes that started before the cut. A note
handed over at once by `sound` (the duet's reaction) has no end yet: the generator that inherits
it ends it through the queue, or `end` / `stop` do.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from improv.clock import BeatTimeline
from improv.phrase import GenEvent
from improv.scheduler import Planned
from improv.tokens import Note

LOOKAHEAD_S = 0.1  # plans reach the scheduler this long before they are due


@dataclass
class Voice:
    """A note improv planned: beats when generated, seconds once handed to the scheduler."""

    pitch: int
    velocity: int
    on_beats: float
    off_beats: float | None = None
    on_s: float | None = None  # None: the note-on still waits in its part
    off_s: float | None = None

    def sounding_at(self, t_s: float) -> bool:
        return self.on_s is not None and self.on_s <= t_s and (self.off_s is None or self.off_s > t_s)


class Part:
    """One stream of improv's notes; see the module docstring."""

    def __init__(self, source: str, channel: int) -> None:
        self.source = source
        self.channel = channel
        self.voices: list[Voice] = []
        self._queue: list[tuple[float, int, str, Voice]] = []  # heap of (beats, order, kind, voice)
        self._order = itertools.count()

    @property
    def waiting(self) -> bool:
        return bool(self._queue)

    def add(self, events: Iterable[GenEvent]) -> None:
        for ev in events:
            if ev.kind == "on":
                voice = Voice(ev.pitch, ev.velocity, ev.beats)
                self.voices.append(voice)
            else:
                voice = next((v for v in reversed(self.voices) if v.pitch == ev.pitch and v.off_beats is None), None)
                if voice is None:
                    continue  # not ours to end (a generator only ends what it started)
                voice.off_beats = ev.beats
            heapq.heappush(self._queue, (ev.beats, next(self._order), ev.kind, voice))

    def sound(self, pitch: int, velocity: int, on_beats: float, on_s: float) -> Planned:
        """A note that starts at `on_s`, handed over at once (the duet's reaction): a voice with
        no end yet, which a generator that inherits it ends (or `end`, `stop`)."""
        self.voices.append(Voice(pitch, velocity, on_beats, on_s=on_s))
        return Planned(on_s, "on", pitch, velocity, self.channel, self.source)

    def end(self, voice: Voice, off_beats: float, off_s: float) -> Planned:
        """End a handed-over voice at `off_s`, earlier than planned. Its note-off still waiting
        here is dropped; one already handed over finds nothing to release when it comes (the
        scheduler's holds), unless the pitch started again in between: don't, before then."""
        if voice.on_s is None:
            raise ValueError("only a voice handed over can end early")
        if voice.off_s is None and voice.off_beats is not None:
            self._queue = [e for e in self._queue if e[3] is not voice]
            heapq.heapify(self._queue)
        voice.off_beats, voice.off_s = off_beats, max(off_s, voice.on_s)
        return Planned(voice.off_s, "off", voice.pitch, 0, self.channel, self.source)

    def release(self, clock: BeatTimeline, until_beats: float) -> list[Planned]:
        """Hand over everything due at or before `until_beats`, timed by the clock as it is now."""
        plans = []
        while self._queue and self._queue[0][0] <= until_beats + 1e-9:
            beats, _, kind, v = heapq.heappop(self._queue)
            due = clock.time_at(beats)
            if kind == "on":
                v.on_s = due
            else:
                due = v.off_s = max(due, v.on_s if v.on_s is not None else due)
            plans.append(Planned(due, kind, v.pitch, v.velocity if kind == "on" else 0, self.channel, self.source))
        return plans

    def release_due(self, clock: BeatTimeline, now_s: float) -> list[Planned]:
        return self.release(clock, clock.beats_at(now_s + LOOKAHEAD_S))

    def next_release_s(self, clock: BeatTimeline) -> float | None:
        """When `release_due` has something to hand over."""
        return clock.time_at(self._queue[0][0]) - LOOKAHEAD_S if self._queue else None

    def stop(self, now_s: float) -> list[Planned]:
        """Drop what waits; note-offs at `now_s` for what sounds. (Cancel the source too.)"""
        self._queue.clear()
        plans = []
        for v in self.voices:
            if v.sounding_at(now_s):
                plans.append(Planned(now_s, "off", v.pitch, 0, self.channel, self.source))
                v.off_s = now_s
        return plans

    def cut(self, clock: BeatTimeline, cutoff_s: float) -> tuple[list[Planned], set[tuple[int, float]]]:
        """A re-plan from `cutoff_s`: notes starting before it are handed over and keep their
        planned ends; later ones are forgotten (cancel the scheduler's from `cutoff_s` too).
        Returns the plans and the kept notes' ends as (pitch, off beats)."""
        cutoff_beats = clock.beats_at(cutoff_s)
        plans = self.release(clock, cutoff_beats - 2e-9)
        self.voices = [v for v in self.voices if _started_before(v, cutoff_s)]
        self._queue = [e for e in self._queue if e[2] == "off" and _started_before(e[3], cutoff_s)]
        heapq.heapify(self._queue)
        return plans, {(v.pitch, v.off_beats) for v in self.voices
                       if v.off_beats is not None and v.off_beats > cutoff_beats - 1e-6}

    def prune(self, now_s: float, keep: int = 64) -> None:
        """Forget old voices: keep the last `keep` and any that may still sound. (Every note a
        re-plan or a reaction makes scans the voices: keep them few.)"""
        if len(self.voices) > 2 * keep:
            old = [v for v in self.voices[:-keep] if v.off_s is None or v.off_s > now_s]
            self.voices = old + self.voices[-keep:]

    def notes(self, end_beats: float, played_by_s: float = math.inf, last: int | None = None) -> list[Note]:
        """The voices as notes (beats), those started by `played_by_s`; open ones end at `end_beats`."""
        voices = self.voices[-last:] if last else self.voices
        out = []
        for v in voices:
            if played_by_s < math.inf and (v.on_s is None or v.on_s > played_by_s):
                continue  # never sounded
            off = min(v.off_beats if v.off_beats is not None else end_beats, max(end_beats, v.on_beats))
            out.append(Note(v.on_beats, max(0.0, off - v.on_beats), v.pitch, v.velocity))
        return out


def _started_before(voice: Voice, t_s: float) -> bool:
    return voice.on_s is not None and voice.on_s < t_s
