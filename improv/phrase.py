"""The model side of the improviser: the running context it listens with, and the phrases it plays.

* `ModelContext` is the dialogue so far as the model heard it: one `StreamEncoder` and one model
  state. Events go in time order (the player's notes, and improv's own notes once they have
  actually sounded); each becomes a few tokens, queued, and `catch_up` steps the model one cached
  step per token, a bounded number at a time, so the caller stays responsive. Nothing is ever
  recomputed from a window.
* `Dialogue` holds improv's planned notes until they have sounded, then feeds them to the context.
* `PhraseGenerator` samples from a *copy* of the context (`ModelContext.fork`), so listening is
  never disturbed. It runs in bounded slices (`run(max_steps, until_beats)`), emits note
  events in beats as it goes, and enforces the musical rules the sampler's masks do not:
  a phrase may be required to start with a note, an OFF only ends a note sounding for at least
  a tick (no zero-length notes, nor blips of an inherited note), no re-strike of
  a sounding or avoided pitch, at most `max_run` events without time moving, no note longer than
  `max_note_beats`, and every note ends by `end_beats`.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from improv.sampling import Sampler, TokenMasks
from improv.tokens import DEFAULT_VELOCITY, StreamEncoder, Vocabulary, bin_velocity

MAX_GAP_BEATS = 8.0  # a longer silence reaches the model as this much: it is a boundary either way
_OTHER, _SHIFT, _ON, _OFF, _VEL = range(5)


@dataclass(frozen=True, slots=True)
class GenEvent:
    beats: float  # absolute, on the beat clock in charge
    kind: str  # "on" | "off"
    pitch: int
    velocity: int = 0


class TimedModel:
    """A step model that remembers how long its recent steps took (ms), for the view and bench."""

    def __init__(self, model, history: int = 2000) -> None:
        self.model = model
        self.vocab: Vocabulary = model.vocab
        self.times_ms: deque[float] = deque(maxlen=history)
        self.steps = 0

    def new_state(self):
        return self.model.new_state()

    def step(self, token: int, state) -> np.ndarray:
        t0 = time.perf_counter()
        logits = self.model.step(int(token), state)
        self.times_ms.append((time.perf_counter() - t0) * 1000.0)
        self.steps += 1
        return logits


class TokenTable:
    """What each token id does, as arrays, plus reusable mask buffers (no allocation per step)."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.tpb = vocab.config.ticks_per_beat
        self.bins = vocab.config.velocity_bins
        size = len(vocab)
        self.kind = np.zeros(size, dtype=np.int8)
        self.value = np.zeros(size, dtype=np.int16)
        self.on_id = np.full(128, -1, dtype=np.int64)
        self.off_id = np.full(128, -1, dtype=np.int64)
        for i, name in enumerate(vocab.names):
            self._classify(i, name)
        self.is_shift = self.kind == _SHIFT
        self.is_on = self.kind == _ON
        self.starts = self.is_on | (self.kind == _VEL)
        self.off_ids = np.flatnonzero(self.kind == _OFF)
        self.masks = TokenMasks(vocab)
        self.bos = vocab.id("BOS") if "BOS" in vocab else 0

    def _classify(self, i: int, name: str) -> None:
        head, _, value = name.partition("_")
        if not value.isdigit():
            return
        kind = {"SHIFT": _SHIFT, "ON": _ON, "OFF": _OFF, "VEL": _VEL}.get(head, _OTHER)
        self.kind[i], self.value[i] = kind, int(value)
        if kind == _ON and int(value) < 128:
            self.on_id[int(value)] = i
        if kind == _OFF and int(value) < 128:
            self.off_id[int(value)] = i


@dataclass(frozen=True)
class MaskRules:
    pitch_lo: int = 0
    pitch_hi: int = 127
    max_polyphony: int = 4
    pitch_classes: frozenset[int] | None = None  # key lock; None: any pitch class


class ModelContext:
    """The dialogue as the model heard it; see the module docstring."""

    def __init__(self, model: TimedModel) -> None:
        self.model = model
        self.encoder = StreamEncoder(model.vocab)
        self.state = model.new_state()
        self.logits = model.step(TokenTable(model.vocab).bos if "BOS" in model.vocab else 0, self.state)
        self.pos_beats: float | None = None  # time of the latest event fed
        self._queue: deque[int] = deque()

    @property
    def ready(self) -> bool:
        return not self._queue

    @property
    def queued(self) -> int:
        return len(self._queue)

    def note_on(self, beats: float, pitch: int, velocity: int) -> None:
        self._queue.extend(self.encoder.note_on(self._elapsed(beats), pitch, velocity))

    def note_off(self, beats: float, pitch: int) -> None:
        self._queue.extend(self.encoder.note_off(self._elapsed(beats), pitch))

    def push(self, event: GenEvent) -> None:
        if event.kind == "on":
            self.note_on(event.beats, event.pitch, event.velocity)
        else:
            self.note_off(event.beats, event.pitch)

    def catch_up(self, max_steps: int) -> int:
        """Step the model through up to `max_steps` queued tokens; returns how many."""
        n = 0
        while self._queue and n < max_steps:
            self.logits = self.model.step(self._queue.popleft(), self.state)
            n += 1
        return n

    def fork(self, at_beats: float) -> tuple[object, np.ndarray, list[int]]:
        """(state copy, its logits, the SHIFT tokens from the latest event to `at_beats`).

        Call when `ready`. The tokens are for the copy to consume first (`PhraseGenerator` does).
        """
        encoder = copy.copy(self.encoder)
        gap = 0.0 if self.pos_beats is None else min(max(0.0, at_beats - self.pos_beats), MAX_GAP_BEATS)
        return self.state.copy(), self.logits.copy(), encoder.advance(gap)

    def shift(self, beats: float) -> None:
        """The beat clock moved by `beats` (the grid was re-anchored): so does the latest event."""
        if self.pos_beats is not None:
            self.pos_beats += beats

    def _elapsed(self, beats: float) -> float:
        if self.pos_beats is None:
            self.pos_beats = beats
            return 0.0
        elapsed = min(max(0.0, beats - self.pos_beats), MAX_GAP_BEATS)
        self.pos_beats = max(self.pos_beats, beats)
        return elapsed


class Dialogue:
    """The context plus improv's own planned notes, which join it only once they have sounded
    (in time order): so the model hears what was actually played, interruptions included."""

    def __init__(self, context: ModelContext) -> None:
        self.context = context
        self._outbox: list[GenEvent] = []  # planned, not yet heard; sorted by time
        self._sounding: set[int] = set()  # improv pitches the context has heard start, not end

    def planned(self, event: GenEvent) -> None:
        bisect.insort(self._outbox, event, key=_beats)  # after a re-plan, kept note-offs lie ahead

    def unplanned(self, event: GenEvent) -> bool:
        """A planned event that will not happen (a note ended earlier than planned); False if
        it is not waiting to be heard (the context heard it already)."""
        i = bisect.bisect_left(self._outbox, event.beats, key=_beats)
        while i < len(self._outbox) and self._outbox[i].beats == event.beats:
            if self._outbox[i] == event:
                del self._outbox[i]
                return True
            i += 1
        return False

    def heard_until(self, beats: float) -> None:
        n = 0
        for event in self._outbox:
            if event.beats > beats:
                break
            self.context.push(event)
            (self._sounding.add if event.kind == "on" else self._sounding.discard)(event.pitch)
            n += 1
        del self._outbox[:n]

    def stopped_at(self, beats: float) -> None:
        """Improv stopped at `beats`: the context hears its notes end there, and nothing after."""
        self.heard_until(beats)
        for pitch in sorted(self._sounding):
            self.context.note_off(beats, pitch)
        self._sounding.clear()
        self._outbox.clear()

    def shift(self, beats: float) -> None:
        """The beat clock moved by `beats`: so do the notes still to be heard."""
        self._outbox = [dataclasses.replace(e, beats=e.beats + beats) for e in self._outbox]

    def replanned(self, cutoff_beats: float, kept_ends: set[tuple[int, float]]) -> None:
        """A re-plan from `cutoff_beats`: later plans are void except the kept notes' ends."""
        self._outbox = [e for e in self._outbox
                        if e.beats < cutoff_beats or (e.kind == "off" and (e.pitch, e.beats) in kept_ends)]
        self.heard_until(cutoff_beats)


def _beats(event: GenEvent) -> float:
    return event.beats


class PhraseGenerator:
    """Samples one phrase (or an endless duet part) from a forked context; see the module doc."""

    def __init__(self, model: TimedModel, table: TokenTable, sampler: Sampler, fork: tuple,
                 start_beats: float, end_beats: float = math.inf, *, rules: MaskRules,
                 first_on: bool = True, sounding: dict[int, float] | None = None,
                 ending: dict[int, float] | None = None, velocity: int = DEFAULT_VELOCITY, avoid: Collection[int] = (),
                 max_note_beats: float = 4.0, max_steps: int = 100_000) -> None:
        self.model, self.table, self.sampler, self.rules = model, table, sampler, rules
        self.state, self.logits, prefix = fork
        self._prefix = deque(prefix)
        self.start_beats, self.end_beats = start_beats, end_beats
        self.tick = 0  # ticks since start_beats
        self.sounding: dict[int, float] = dict(sounding or {})  # pitch -> onset beats; this phrase ends them
        self.ending: dict[int, float] = dict(ending or {})  # pitch -> planned end beats; not ours to end
        self.velocity = velocity
        self.avoid = avoid  # pitches not to start (e.g. keys the player holds); may be a live view
        self.max_note_beats = max_note_beats
        self.max_run = 2 * rules.max_polyphony + 2
        self.need_on = first_on
        self.done = False
        self.steps_left = max_steps
        self._run = 0  # events since time last moved
        self._mask = np.empty(len(table.kind), dtype=bool)

    def shift(self, beats: float) -> None:
        """Move the whole phrase later (it was not ready in time for its grid point)."""
        self.start_beats += beats
        self.end_beats += beats
        self.sounding = {p: onset + beats for p, onset in self.sounding.items()}
        self.ending = {p: end + beats for p, end in self.ending.items()}

    @property
    def frontier_beats(self) -> float:
        """How far the phrase has been generated."""
        return self.start_beats + self.tick / self.table.tpb

    def run(self, max_steps: int, until_beats: float = math.inf) -> list[GenEvent]:
        """Up to `max_steps` model steps, stopping early at the end or once `until_beats` is reached."""
        events: list[GenEvent] = []
        if self.done:
            return events
        for _ in range(max_steps):
            if self._prefix:
                self.logits = self.model.step(self._prefix.popleft(), self.state)
                continue
            if self.frontier_beats >= self.end_beats - 1e-9 or self.steps_left <= 0:
                events += self.finish()
                break
            if self.frontier_beats >= until_beats - 1e-9:
                break
            token = self._next_token()
            self._apply(token, events)
            self.logits = self.model.step(token, self.state)
            self.steps_left -= 1
        return events

    def finish(self) -> list[GenEvent]:
        """End the phrase now: note-offs for what sounds, at min(frontier, end)."""
        at = min(self.frontier_beats, self.end_beats)
        events = [GenEvent(at, "off", p) for p in sorted(self.sounding)]
        self.sounding.clear()
        self.done = True
        return events

    def _next_token(self) -> int:
        for pitch, onset in self.sounding.items():
            if self.frontier_beats - onset >= self.max_note_beats - 1e-9 and self.table.off_id[pitch] >= 0:
                return int(self.table.off_id[pitch])  # a note held too long ends here
        return self.sampler.sample(self.logits, self._build_mask())

    def _build_mask(self) -> np.ndarray:
        r, t, mask = self.rules, self.table, self._mask
        now = self.frontier_beats
        for pitch in [p for p, end in self.ending.items() if end <= now + 1e-9]:
            del self.ending[pitch]
        allowed = t.masks.allowed(pitch_range=(r.pitch_lo, r.pitch_hi), pitch_classes=r.pitch_classes,
                                  sounding=len(self.sounding) + len(self.ending), max_polyphony=r.max_polyphony)
        np.copyto(mask, allowed)
        mask[t.off_ids] = False
        for pitch, onset in self.sounding.items():
            if t.off_id[pitch] >= 0 and now - onset >= 1.0 / t.tpb - 1e-9:  # no note shorter than a tick
                mask[t.off_id[pitch]] = allowed[t.off_id[pitch]]
            if t.on_id[pitch] >= 0:
                mask[t.on_id[pitch]] = False
        for pitch in (*self.avoid, *self.ending):
            if 0 <= pitch < 128 and t.on_id[pitch] >= 0:
                mask[t.on_id[pitch]] = False
        if self.need_on:
            mask &= t.starts
        elif self._run >= self.max_run:
            mask &= t.is_shift
        return mask

    def _apply(self, token: int, events: list[GenEvent]) -> None:
        kind, value = int(self.table.kind[token]), int(self.table.value[token])
        at = self.frontier_beats
        if kind == _SHIFT:
            self.tick += value
            self._run = 0
        elif kind == _VEL and self.table.bins:
            self.velocity = bin_velocity(value, self.table.bins)
        elif kind == _ON and value not in self.sounding and value not in self.ending:
            self.sounding[value] = at
            self.need_on = False
            self._run += 1
            events.append(GenEvent(at, "on", value, self.velocity))
        elif kind == _OFF and value in self.sounding:
            del self.sounding[value]
            self._run += 1
            events.append(GenEvent(at, "off", value))
