"""What both modes share to play: phrase generators forked from the context under the mask rules
of the settings and the key, and the hand-over of what they generate into a part and the dialogue.
Also the view of what improv played last (an answer, or the duet's recent line)."""

from __future__ import annotations

import math

from improv.context import Dialogue, TimedModel
from improv.listener import Listener
from improv.parts import Part
from improv.phrase import GenEvent, MaskRules, PhraseGenerator, PhraseSpec
from improv.sampling import Sampler, TokenMasks
from improv.tokens import Note

DUET_VIEW_NOTES = 64


class Performer:
    def __init__(self, model: TimedModel, listener: Listener, dialogue: Dialogue, sampler: Sampler) -> None:
        self.model = model
        self.listener = listener
        self.dialogue = dialogue
        self.sampler = sampler
        self.masks = TokenMasks(model.vocab)
        self.facts = self.masks.facts
        self._shown: list[Note] = []
        self._line: tuple[Part, float] | None = None  # (the duet's part, its frontier beats)

    def rules(self, reserve: int = 0) -> MaskRules:
        s = self.listener.settings.sampling
        key = self.listener.key
        return MaskRules(s.pitch_lo, s.pitch_hi, max(1, s.max_polyphony - reserve),
                         key.pitch_classes if key else None)

    def fork(self, start: float, end: float, *, first_on: bool, sounding: dict[int, float] | None = None,
             ending: dict[int, float] | None = None, reserve: int = 0) -> PhraseGenerator:
        """A generator from `start`; it starts no note while `max_polyphony - reserve` sound."""
        listener = self.listener
        self.dialogue.heard_until(listener.clock.beats_at(listener.now))
        spec = PhraseSpec(start, end, self.rules(reserve), first_on, dict(sounding or {}), dict(ending or {}),
                          listener.call_velocity(), listener.held.keys(),
                          max_steps=int(64 * min(end - start, 64) + 64) if end < math.inf else 10**12)
        return PhraseGenerator(self.model, self.masks, self.sampler, self.listener.context.fork(start), spec)

    def generate(self, gen: PhraseGenerator, part: Part, budget: int, until_beats: float = math.inf) -> int:
        """Run `gen` for up to `budget` steps into `part`; returns the model steps it took."""
        steps = self.model.steps
        self.queue(part, gen.run(budget, until_beats=until_beats))
        return self.model.steps - steps

    def queue(self, part: Part, events: list[GenEvent]) -> None:
        part.add(events)
        for ev in events:
            self.dialogue.planned(ev)
        part.prune(self.listener.now)

    # ------------------------------------------------------------------ the view

    def show(self, notes: list[Note]) -> None:
        """What improv played last: an answer's notes."""
        self._shown, self._line = notes, None

    def show_line(self, part: Part, frontier_beats: float) -> None:
        """What improv plays now: the duet's line, made into notes only when asked."""
        self._line = (part, frontier_beats)

    @property
    def shown(self) -> list[Note]:
        if self._line is not None:
            part, end_beats = self._line
            return part.notes(end_beats, last=DUET_VIEW_NOTES)
        return self._shown
