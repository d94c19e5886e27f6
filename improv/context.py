"""The model's running context: the dialogue so far as the model heard it, stepped token by token.

* `TimedModel` wraps a step model and remembers how long its steps took (the view, the bench,
  `improv generate`, the duet's re-plan guard).
* `ModelContext` is one `StreamEncoder` and one model state. Events go in time order (the player's
  notes, and improv's own once they have sounded); each becomes a few tokens, queued, and
  `catch_up` steps the model one cached step per token, a bounded number at a time, so the
  caller stays responsive. Nothing is ever recomputed from a window. `fork` gives a copy to
  generate from, so listening is never disturbed.
* The model hears the notes of one onset in its vocabulary's order, whatever order they came in
  (`improv.stream_encoder`). A note that sorts before notes already stepped sends the context
  back to its mark, the state (logits, memory cursor) kept before the onset's first step, and
  the onset is stepped again in order; tokens still queued are simply re-sorted. So that the
  memory learns the same order, the onset's lessons wait until a later onset begins (or `seal`).
* `Dialogue` holds improv's planned notes until they have sounded, then feeds them to the
  context: the model hears what was actually played, interruptions included.
* With a session memory (`improv.memory`) every token stepped is also learned (the player's at
  weight 1, improv's own at `own_weight`), and each of the player's tokens teaches the blend
  (`improv.blend`) which of the two predicted it better. The memory's cursor moves with each step,
  but the counting and the blend's lesson wait for `learn`, which the engine calls once what a
  note set off (a reaction) has gone out: the same lessons in the same order, off the reaction's path.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from improv.blend import Blend
from improv.memory import Cursor, SessionMemory
from improv.note_history import HeardNote, NoteHistory
from improv.phrase import Fork, GenEvent
from improv.token_facts import TokenFacts
from improv.stream_encoder import StreamEncoder
from improv.tokens import Vocabulary

LESSONS = 256  # tokens whose learning may wait for `learn` (more: learned at once)
MAX_GAP_BEATS = 8.0  # a longer silence reaches the model as this much: it is a boundary either way


class StepTally:
    """Steps counted and their recent wall times (ms), shared by the models that take turns playing."""

    def __init__(self, history: int = 2000) -> None:
        self.times_ms: deque[float] = deque(maxlen=history)
        self.steps = 0
        self.seconds = 0.0  # all steps together


class TimedModel:
    """A step model that counts its steps and keeps the recent ones' wall times (ms). Models
    switched live share one `StepTally`, so the engine's counts run on across a switch."""

    def __init__(self, model, history: int = 2000, tally: StepTally | None = None) -> None:
        self.model = model
        self.vocab: Vocabulary = model.vocab
        self.tally = tally if tally is not None else StepTally(history)
        self.writes_chords = True  # False: a melody model, its answers to chords voiced (improv.voicing)

    @property
    def name(self) -> str:
        return str(getattr(self.model, "name", ""))

    @property
    def steps(self) -> int:
        return self.tally.steps

    @property
    def seconds(self) -> float:
        return self.tally.seconds

    @property
    def times_ms(self) -> deque[float]:
        return self.tally.times_ms

    def new_state(self):
        return self.model.new_state()

    def step(self, token: int, state) -> np.ndarray:
        t0 = time.perf_counter()
        logits = self.model.step(int(token), state)
        elapsed = time.perf_counter() - t0
        tally = self.tally
        tally.times_ms.append(elapsed * 1000.0)
        tally.seconds += elapsed
        tally.steps += 1
        return logits

    def feed(self, tokens: Sequence[int], state) -> np.ndarray | None:
        """Step through `tokens`; the logits after the last (None if there were none)."""
        logits = None
        for token in tokens:
            logits = self.step(token, state)
        return logits


class ModelContext:
    """The dialogue as the model heard it; see the module docstring."""

    def __init__(self, model: TimedModel, memory: SessionMemory | None = None, blend: Blend | None = None,
                 own_weight: float = 0.3, history: NoteHistory | None = None) -> None:
        self.model = model
        self.memory, self.blend, self.own_weight = memory, blend, own_weight
        self.history = history  # every note heard is kept there too (a model switched in is primed on it)
        self.encoder = StreamEncoder(model.vocab)
        self.state = model.new_state()
        self.bos = TokenFacts(model.vocab).bos if "BOS" in model.vocab else 0
        self.logits = model.step(self.bos, self.state)
        self.pos_beats: float | None = None  # time of the latest event fed
        self.stepped = 0  # tokens stepped so far (the logits changed at each)
        self._queue: deque[tuple[int, bool | None]] = deque()  # (token, improv's own; None: not to learn)
        self._lessons: deque[tuple[int, bool, Cursor, int]] = deque()  # stepped, not yet learned: (token,
        # own, the memory's cursor before it, row of `_lesson_logits` holding the logits before it)
        self._lesson_logits = np.empty((LESSONS, len(model.vocab)), dtype=np.float32)  # (LESSONS, V) ring
        self._next_row = 0
        self._onset_size = 0  # tokens of the latest onset (the encoder's), stepped or queued
        self._onset_stepped = 0  # of them, stepped since the mark
        self._onset_lessons = 0  # of them, lessons put off (not learned while the onset may change)
        self._mark_state = self.state.copy()  # the mark: what stood before the onset's first step
        self._mark_logits = np.array(self.logits, copy=True)
        self._mark_cursor = Cursor()

    @property
    def ready(self) -> bool:
        return not self._queue

    @property
    def queued(self) -> int:
        return len(self._queue)

    def note_on(self, beats: float, pitch: int, velocity: int, own: bool = False) -> None:
        self._heard(HeardNote(beats, "on", pitch, velocity, own), own)

    def note_off(self, beats: float, pitch: int, own: bool = False) -> None:
        self._heard(HeardNote(beats, "off", pitch, 0, own), own)

    def replay(self, note: HeardNote, learn: bool) -> None:
        """A note heard before this context took over (a model switched in): its tokens queued,
        not kept in the history again, and learned by the memory only if `learn`."""
        self._heard(note, note.own if learn else None, keep=False)

    def _heard(self, note: HeardNote, own: bool | None, keep: bool = True) -> None:
        if keep and self.history is not None:
            self.history.add(note)
        encoder = self.encoder
        tokens = encoder.event(self._elapsed(note.beats), note.kind == "on", note.pitch, note.velocity, own)
        if encoder.new_onset:
            self._onset_stepped = self._onset_lessons = 0
        elif encoder.taken_back:
            self._take_back(encoder.taken_back)
        self._queue.extend(tokens)
        self._onset_size = len(encoder.onset)

    def _take_back(self, n: int) -> None:
        """The onset's last `n` tokens are replaced: those still queued are dropped; if any was
        stepped, back to the mark, with the onset's tokens before them queued again."""
        queued = self._onset_size - self._onset_stepped
        for _ in range(min(n, queued)):
            self._queue.pop()
        if n <= queued:
            return
        self._mark_state.copy_into(self.state)
        self.logits = self._mark_logits.copy()
        if self.memory is not None:
            self._mark_cursor.copy_into(self.memory.cursor)
            for _ in range(self._onset_lessons):
                self._lessons.pop()
            self._next_row = (self._next_row - self._onset_lessons) % LESSONS
        self._onset_stepped = self._onset_lessons = 0
        self._queue.extend(self.encoder.onset[: self._onset_size - n])

    def _mark(self) -> None:
        self.state.copy_into(self._mark_state)
        np.copyto(self._mark_logits, self.logits)
        if self.memory is not None:
            self.memory.cursor.copy_into(self._mark_cursor)

    def seal(self) -> None:
        """What was heard is final: a later note of the same tick comes after it, and every
        lesson put off may be learned (before a switch; offline tokens)."""
        self.encoder.seal()
        self._onset_size = self._onset_stepped = self._onset_lessons = 0

    def queued_tokens(self) -> list[tuple[int, bool | None]]:
        """The tokens waiting to be stepped: (token, improv's own; None: not to learn)."""
        return list(self._queue)

    def learn_heard(self, heard: Sequence[tuple[int, bool | None]]) -> None:
        """The memory learns tokens this context heard before it had one (a model switched in)."""
        self.seal()
        if self.memory is not None:
            for token, own in heard:
                if own is not None:
                    self.memory.observe(token, self.own_weight if own else 1.0)

    def push(self, event: GenEvent) -> None:
        """One of improv's own notes, as it sounded."""
        if event.kind == "on":
            self.note_on(event.beats, event.pitch, event.velocity, own=True)
        else:
            self.note_off(event.beats, event.pitch, own=True)

    def hear(self, token: int, own: bool = False, learn: bool = True) -> None:
        """One token as it is (offline: a piece streamed token by token, `improv eval --adapt`);
        with `learn=False` its lesson waits for `learn`, as on the live path."""
        if self._onset_size:
            self.seal()
        self._queue.append((int(token), own))
        self.catch_up(len(self._queue))
        if learn:
            self.learn()

    def catch_up(self, max_steps: int) -> int:
        """Step the model through up to `max_steps` queued tokens; returns how many."""
        n = 0
        while self._queue and n < max_steps:
            in_onset = len(self._queue) <= self._onset_size - self._onset_stepped  # the latest onset's
            if in_onset:
                if not self._onset_stepped:
                    self._mark()
                self._onset_stepped += 1
            token, own = self._queue.popleft()
            if self.memory is not None and own is not None:
                self._put_off(token, own)
                self._onset_lessons += in_onset
            self.logits = self.model.step(token, self.state)
            n += 1
        self.stepped += n
        return n

    def _put_off(self, token: int, own: bool) -> None:
        """Keep what learning `token` needs (the cursor and logits before it); move the cursor."""
        if len(self._lessons) == LESSONS:
            self.learn()
        row = self._next_row
        self._next_row = (row + 1) % LESSONS
        self._lesson_logits[row] = self.logits
        self._lessons.append((token, own, self.memory.cursor.copy(), row))
        self.memory.advance(self.memory.cursor, token)

    def learn(self) -> int:
        """The lessons put off, in order: the blend learns from the player's tokens whom to follow,
        the memory counts every token. The latest onset's wait (a note may yet join it). Returns
        how many."""
        n = len(self._lessons) - self._onset_lessons
        for _ in range(n):
            token, own, cursor, row = self._lessons.popleft()
            if not own:
                p_memory, depth = self.memory.prob(token, cursor)
                self.blend.learn(self._lesson_logits[row], token, p_memory, depth)
            self.memory.count(cursor, token, self.own_weight if own else 1.0)
        return n

    def mixed_logits(self) -> np.ndarray:
        """The next token's logits, the session memory mixed in (the context's own, without one)."""
        if self.memory is None:
            return self.logits
        p, depth = self.memory.predict()
        return self.blend.mix(self.logits, p, depth)

    def fork(self, at_beats: float) -> Fork:
        """A copy to generate from: the state, its logits, the SHIFT tokens from the latest event
        to `at_beats` (for the copy to consume first) and the memory's running context.

        Call when `ready`."""
        encoder = copy.copy(self.encoder)
        gap = 0.0 if self.pos_beats is None else min(max(0.0, at_beats - self.pos_beats), MAX_GAP_BEATS)
        cursor = self.memory.cursor.copy() if self.memory is not None else None
        return Fork(self.state.copy(), self.logits.copy(), encoder.advance(gap), cursor, self.memory, self.blend)

    def shift(self, beats: float) -> None:
        """The beat clock moved by `beats` (the grid was re-anchored): so do the latest event and the history."""
        if self.pos_beats is not None:
            self.pos_beats += beats
        if self.history is not None:
            self.history.shift(beats)

    def _elapsed(self, beats: float) -> float:
        if self.pos_beats is None:
            self.pos_beats = beats
            return 0.0
        elapsed = min(max(0.0, beats - self.pos_beats), MAX_GAP_BEATS)
        self.pos_beats = max(self.pos_beats, beats)
        return elapsed


class Dialogue:
    """The context plus improv's own planned notes, which join it only once they have sounded."""

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
            self.context.note_off(beats, pitch, own=True)
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
