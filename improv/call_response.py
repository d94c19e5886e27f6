"""Mode "call": improv answers each phrase the player plays. Pure decisions, no threads, no I/O.

listening -> (last key released) waiting -> (phrase end) responding -> listening. A phrase ends
after `silence_beats` of silence with no key held, or at once on the end CC. The answer is
prepared as soon as the silence starts, from a fork of the context (the gap up to the answer's
start becomes SHIFT tokens), so at the phrase end it is committed with its first note due on the
next beat (or bar) grid point, never later because the model was slow: an answer not ready in
time moves to a later grid point. It lasts as long as the call (in whole grid units) or the set
length. A player note before the phrase end discards the prepared answer; one during the answer
interrupts it (a cancel for the scheduler and note-offs for what sounds) unless `overlap`.

The grid: when something audible defines the beat (metronome, clock out, MIDI clock) answers land
on that clock's grid. Otherwise (`TimeSettings.grid_follows_call`) the first note of a call made
while improv is idle becomes a bar line: the internal clock moves there (`BeatClock.anchor_at`)
and every beat position kept shifts with it. `answers` keeps where each answer was put.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field

from improv.clock import BeatTimeline, next_grid_beats
from improv.context import Dialogue
from improv.events import NoteOff
from improv.listener import Listener
from improv.parts import Part
from improv.performer import Performer
from improv.phrase import GenEvent, PhraseGenerator
from improv.scheduler import Planned

COMMIT_LEAD_S = 0.005  # an answer is committed this long before its phrase end
LATE_START_S = 0.003  # an answer committed later than this after its start moves to the next grid point


@dataclass
class Answer:
    """A response: prepared (speculative) until committed at the phrase end."""

    start_beats: float
    end_beats: float
    part: Part
    gen: PhraseGenerator | None = None
    buffer: list[GenEvent] = field(default_factory=list)  # generated before commit
    committed: bool = False


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """Where an answer was put (seconds on the engine clock), for the log, tests and the bench."""

    grid_origin_s: float | None  # a bar line of the grid it is on (see `CallAndResponse.grid_origin_s`)
    phrase_end_s: float
    start_s: float  # its first grid point: where its first note is due
    start_beats: float
    model: str = ""  # the model that made it


class CallAndResponse:
    def __init__(self, listener: Listener, dialogue: Dialogue, performer: Performer) -> None:
        self.listener = listener
        self.clock: BeatTimeline = listener.clock
        self.dialogue = dialogue
        self.performer = performer
        self.answer: Answer | None = None
        self.pending: Answer | None = None
        self.phrase_end_beats: float | None = None
        self._call_end_beats: float | None = None
        self._grid_free = True  # idle since the last answer: the next call may move the grid
        self.grid_anchor_s: float | None = None  # the call's first note that set the grid
        self.answers: deque[AnswerRecord] = deque(maxlen=64)
        self.responses = 0  # answers committed so far

    @property
    def state(self) -> str:
        """"listening" | "waiting" (silence: an answer is being prepared) | "responding"."""
        if self.answer is not None:
            return "responding"
        return "waiting" if self.phrase_end_beats is not None else "listening"

    @property
    def grid_follows_call(self) -> bool:
        return self.listener.settings.time.grid_follows_call and hasattr(self.clock, "anchor_at")

    @property
    def grid_origin_s(self) -> float | None:
        """A bar line of the grid answers start on (seconds): the first note of the call that set
        it when the grid follows the call (None before the first call), else the clock's beat 0."""
        return self.grid_anchor_s if self.grid_follows_call else self.clock.time_at(0.0)

    # ------------------------------------------------------------------ the player

    def before_note_on(self, now_s: float) -> list[Planned]:
        plans = self._interrupt(now_s) if self.answer is not None and not self.listener.settings.mode.overlap else []
        self._set_phrase_end(None)
        return plans

    def start_call(self, t_s: float) -> None:
        """The first note of a call; if improv is idle and the grid follows the call, it becomes a
        bar line: the clock moves there and every beat position kept shifts with it."""
        if self._grid_free and self.answer is None and self.grid_follows_call:
            old = self.clock.beats_at(t_s)
            new = next_grid_beats(old, float(self.listener.settings.mode.beats_per_bar))
            if new - old > 1e-9:  # (a note already on a bar line leaves the clock alone)
                self.clock.anchor_at(t_s, new)
                self.listener.context.shift(new - old)
                self.dialogue.shift(new - old)
                self.listener.shift(new - old)
            self._grid_free, self.grid_anchor_s = False, t_s

    def after_note_off(self, ev: NoteOff, in_call: bool) -> None:
        if in_call and not self.listener.held:
            beats = self.clock.beats_at(ev.t_s)
            self._call_end_beats = beats
            self._set_phrase_end(beats + self.listener.settings.mode.silence_beats)

    def end_phrase_now(self) -> None:
        """The end CC: the phrase ends now, keys still held included; the answer starts on the next grid point."""
        listener = self.listener
        if not (listener.call or listener.held):
            return
        beats = self.clock.beats_at(listener.now)
        listener.close_call_now(beats)
        self._call_end_beats = beats
        self._set_phrase_end(beats)

    def _set_phrase_end(self, beats: float | None) -> None:
        """A new (or no) phrase end: any answer prepared for another one is void."""
        self.phrase_end_beats, self.pending = beats, None

    # ------------------------------------------------------------------ time

    def tick(self, budget: int) -> list[Planned]:
        a = self.answer
        if a is not None and a.gen is not None and not a.gen.done:
            budget -= self.performer.generate(a.gen, a.part, budget)
        plans = self._finish_answer()
        if self.phrase_end_beats is not None and self.pending is None:
            self.pending = self._new_answer()
        p = self.pending
        if p is not None:
            if p.gen is None and self.listener.context.ready:
                p.gen = self.performer.fork(p.start_beats, p.end_beats, first_on=True, voiced=True)
            if p.gen is not None and not p.gen.done and budget > 0:
                p.buffer += p.gen.run(budget)
            plans += self._maybe_commit(p)
        return plans

    def release_due(self, now_s: float) -> list[Planned]:
        return self.answer.part.release_due(self.clock, now_s) if self.answer is not None else []

    def wakeups(self) -> list[float | None]:
        if self.answer is not None:
            return [self.clock.time_at(self.answer.end_beats), self.answer.part.next_release_s(self.clock)]
        if self.phrase_end_beats is not None:  # (with overlap, the next answer waits for this one)
            return [self.clock.time_at(self.phrase_end_beats) - COMMIT_LEAD_S]
        return []

    def busy(self) -> bool:
        """Model work to do: an answer still generating, or one being prepared."""
        if self.answer is not None and self.answer.gen is not None and not self.answer.gen.done:
            return True
        p = self.pending
        return p is not None and (p.gen is None or not p.gen.done)

    def _new_answer(self) -> Answer:
        m = self.listener.settings.mode
        end = self.phrase_end_beats
        call_end = self._call_end_beats if self._call_end_beats is not None else end
        call_start = self.listener.call_start_beats
        call_beats = max(0.0, call_end - (call_start if call_start is not None else call_end))
        after = max(end, self.answer.end_beats if self.answer is not None else end)
        start = next_grid_beats(after, m.grid_beats)
        return Answer(start, start + m.response_beats(call_beats), Part("response", self._channel))

    def _maybe_commit(self, p: Answer) -> list[Planned]:
        now = self.listener.now
        if now < self.clock.time_at(self.phrase_end_beats) - COMMIT_LEAD_S or self.answer is not None:
            return []
        ready = bool(p.buffer) or (p.gen is not None and p.gen.done)
        if not ready or now > self.clock.time_at(p.start_beats) + LATE_START_S:
            if now >= self.clock.time_at(p.start_beats) - COMMIT_LEAD_S:
                self._postpone(p)  # not ready, or woken too late: start on a later grid point, never late
            if not ready:
                return []
        self.answers.append(AnswerRecord(self.grid_origin_s, self.clock.time_at(self.phrase_end_beats),
                                         self.clock.time_at(p.start_beats), p.start_beats,
                                         p.gen.model.name if p.gen is not None else ""))
        self.answer, self.pending, self.phrase_end_beats = p, None, None
        p.committed = True
        self.responses += 1
        self.listener.call_answered()
        events, p.buffer = p.buffer, []
        self.performer.queue(p.part, events)
        return []

    def _postpone(self, p: Answer) -> None:
        grid, shift = self.listener.settings.mode.grid_beats, 0.0
        while self.clock.time_at(p.start_beats + shift) < self.listener.now + COMMIT_LEAD_S:
            shift += grid
        p.start_beats += shift
        p.end_beats += shift
        p.buffer = [dataclasses.replace(e, beats=e.beats + shift) for e in p.buffer]
        if p.gen is not None:
            p.gen.shift(shift)

    def _finish_answer(self) -> list[Planned]:
        a = self.answer
        now = self.listener.now
        if a is None or now < self.clock.time_at(a.end_beats) - 1e-9:
            return []
        if a.gen is not None and not a.gen.done:  # generation fell behind: end it now
            self.performer.queue(a.part, a.gen.finish())
        plans = a.part.release(self.clock, math.inf)  # what is left ends by now
        self.performer.show(a.part.notes(self.clock.beats_at(now)))
        self.answer, self._grid_free = None, True
        return plans

    def _interrupt(self, now_s: float) -> list[Planned]:
        a, self.answer = self.answer, None
        plans = [Planned(-math.inf, "cancel", source="response"), *a.part.stop(now_s)]
        self.performer.show(a.part.notes(self.clock.beats_at(now_s), played_by_s=now_s))
        self.dialogue.stopped_at(self.clock.beats_at(now_s))
        return plans

    def stop(self, now_s: float) -> list[Planned]:
        """Release what the answer sounds (cancel "response" in the scheduler too); prepare nothing."""
        plans: list[Planned] = []
        if self.answer is not None:
            plans += self.answer.part.stop(now_s)
            self.performer.show(self.answer.part.notes(self.clock.beats_at(now_s), played_by_s=now_s))
        self.answer, self._grid_free = None, True
        self._set_phrase_end(None)
        return plans

    @property
    def _channel(self) -> int:
        return self.listener.settings.output.channel - 1

