"""Live model switching (`--models a,b,c`): every model preloaded, one playing at a time.

A request (Program Change, the model CC, OSC) names a model by position. Priming it costs model
steps: a fresh context of that model stepped through the dialogue's recent notes (`NoteHistory`,
re-tokenised for its own vocabulary), so it answers the phrase being played, not from silence.
That runs on a worker thread (`start`; without one, as in the demo and on a ManualClock, at the
engine's next tick), never inside the engine's reaction to a note. The engine then takes the
primed context over (`Improviser.take_over`): the notes heard while it primed are queued for it,
and the mode decides where the new model starts playing (the next answer, the duet's re-plan).

Session memory: one per vocabulary (models that share one share it; the shipped two do) and a
blend per model. The memory of the playing model's vocabulary has heard everything already, so
priming does not teach it again; a memory of another vocabulary learns the recent notes at the
take-over (on the engine thread: the worker touches no memory an old phrase may still read) and,
from then on, the rest of the session.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from improv.blend import Blend
from improv.context import ModelContext, StepTally, TimedModel
from improv.memory import SessionMemory
from improv.note_history import HeardNote, NoteHistory
from improv.settings import ListenSettings

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One preloaded model, ready to play."""

    name: str
    model: TimedModel  # the engine's: every slot shares the engine's StepTally
    memory: SessionMemory | None
    blend: Blend | None


@dataclass
class Primed:
    """A context of `index`'s model that has heard the history up to `count` events."""

    index: int
    ticket: int
    context: ModelContext | None  # None: priming failed (logged)
    count: int  # NoteHistory.count at the snapshot
    shifted: float  # NoteHistory.shifted at the snapshot
    learn: bool  # its memory is not the playing model's: it learns what the context heard
    heard: list[tuple[int, bool | None]]  # the tokens primed (token, improv's own), for that memory


@dataclass(frozen=True)
class _Job:
    index: int
    ticket: int
    notes: tuple[HeardNote, ...]
    count: int
    shifted: float
    learn: bool


def make_slots(models: Sequence, listen: ListenSettings, memory: SessionMemory | None) -> list[Slot]:
    """A slot per model; `memory` (if any) is the first model's, shared by its vocabulary."""
    tally = StepTally()
    memories: dict[tuple[str, ...], SessionMemory | None] = {}
    if memory is not None:
        memories[tuple(models[0].vocab.names)] = memory
    slots = []
    for model in models:
        names = tuple(model.vocab.names)
        if names not in memories:
            memories[names] = SessionMemory(names, listen.order, listen.half_life_tokens) if listen.memory else None
        mem = memories[names]
        blend = Blend(mem.order, listen.follow) if mem is not None else None
        timed = TimedModel(model, tally=tally)
        timed.writes_chords = bool(getattr(model, "writes_chords", True))  # StepModel: probed (improv.voicing)
        slots.append(Slot(str(getattr(model, "name", "")), timed, mem, blend))
    return slots


def prime(slot: Slot, notes: Sequence[HeardNote], own_weight: float) -> tuple[ModelContext, list]:
    """A fresh context of `slot`'s model that has heard `notes`, and the tokens it stepped (the
    worker's part of a switch: no memory, no blend, a tally of its own)."""
    context = ModelContext(TimedModel(slot.model.model), None, None, own_weight)
    for note in notes:
        context.replay(note, learn=True)
    heard = context.queued_tokens()
    context.catch_up(context.queued)
    context.model = slot.model
    return context, heard


class ModelSwitch:
    """The slots, the one playing (`active`), and the switch under way (see the module doc)."""

    def __init__(self, slots: list[Slot], own_weight: float) -> None:
        self.slots, self.own_weight = slots, own_weight
        self.active = 0
        self.wanted: int | None = None  # a switch requested, not yet taken over
        self._tickets = itertools.count(1)
        self._ticket = 0  # the latest request's
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Primed] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def playing(self) -> Slot:
        return self.slots[self.active]

    def label(self) -> str:
        """The active model's name, and the one coming if a switch is under way (the view)."""
        wanted = self.wanted
        name = self.playing.name
        return name if wanted is None else f"{name} (switching to {self.slots[wanted].name})"

    def select(self, index: int | str, history: NoteHistory) -> str | None:
        """Ask for the model at `index`, or of that name (engine thread); a one-line reason when
        there is none."""
        if isinstance(index, str):
            named = [i for i, slot in enumerate(self.slots) if slot.name == index]
            index = named[0] if named else index
        if not isinstance(index, int) or not 0 <= index < len(self.slots):
            names = ", ".join(f"{i}: {s.name}" for i, s in enumerate(self.slots))
            where = f"named {index!r}" if isinstance(index, str) else f"at position {index}"
            return f"no model {where} (loaded: {names}); ignored"
        if index == (self.active if self.wanted is None else self.wanted):
            return None  # playing, or on its way
        self._ticket = next(self._tickets)
        if index == self.active:  # back to the one playing: the switch under way is void
            self.wanted = None
            return None
        self.wanted = index
        slot = self.slots[index]
        learn = slot.memory is not None and slot.memory is not self.playing.memory
        self._jobs.put(_Job(index, self._ticket, tuple(history.events), history.count, history.shifted, learn))
        return None

    def poll(self) -> Primed | None:
        """The primed context of the switch requested last, once ready (engine thread). Without
        a worker thread the priming runs here."""
        if self._thread is None:
            while (job := _get(self._jobs)) is not None:
                self._done.put(self._prime(job))
        primed = None
        while (done := _get(self._done)) is not None:
            if done.ticket == self._ticket and self.wanted == done.index:
                primed = done
        if primed is not None and primed.context is None:
            self.wanted = None  # it failed (logged): the model playing goes on
            return None
        return primed

    def due(self) -> bool:
        """Whether a tick should come now: a switch to prime without a worker thread."""
        return self.wanted is not None and self._thread is None

    def taken_over(self, primed: Primed) -> None:
        self.active, self.wanted = primed.index, None
        log.info("model %s plays from now (position %d)", self.playing.name, primed.index)

    def start(self) -> None:
        """Prime on a worker thread from now on (the daemon)."""
        if self._thread is None and len(self.slots) > 1:
            self._thread = threading.Thread(target=self._work, name="improv-switch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=2.0)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._done.put(self._prime(job))

    def _prime(self, job: _Job) -> Primed:
        if job.ticket != self._ticket:  # another request came since: not worth the steps
            return Primed(job.index, job.ticket, None, job.count, job.shifted, job.learn, [])
        try:
            context, heard = prime(self.slots[job.index], job.notes, self.own_weight)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types; nothing stops
            log.error("could not switch to model %s (%s: %s); the model playing goes on",
                      self.slots[job.index].name, type(err).__name__, err)
            context, heard = None, []
        return Primed(job.index, job.ticket, context, job.count, job.shifted, job.learn,
                      heard if job.learn else [])


def _get(q: queue.SimpleQueue):
    try:
        return q.get_nowait()
    except queue.Empty:
        return None
