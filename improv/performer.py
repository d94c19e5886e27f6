"""What both modes share to play: phrase generators forked from the context under the mask rules
of the settings and the key, and the hand-over of what they generate into a part and the dialogue.
Also the view of what improv played last (an answer, or the duet's recent line)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from improv.context import Dialogue, TimedModel
from improv.figures import Figures, top_line
from improv.listener import Listener
from improv.parts import Part
from improv.phrase import Following, GenEvent, MaskRules, PhraseGenerator, PhraseSpec
from improv.phrase_shape import PhraseShape
from improv.sampling import Sampler, TokenMasks
from improv.tokens import Note
from improv.voicing import Texture, Voicer

DUET_VIEW_NOTES = 64
FOLLOW_POLYPHONY = 4  # chords answered by chords of at most this many notes (sampling.max_polyphony = "call")
REGISTER_SPAN = 7  # semitones either side of the call's median pitch the answer may always use
REGISTER_MARGIN = 2  # and this much beyond the call's own lowest and highest notes


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

    def use(self, model: TimedModel) -> None:
        """Another model plays from now (`improv.switch`): its masks are its vocabulary's."""
        self.model = model
        self.masks = TokenMasks(model.vocab)
        self.facts = self.masks.facts

    def rules(self, reserve: int = 0, call: PhraseShape | None = None, line: Sequence[int] = ()) -> MaskRules:
        """The masks' rules: the settings, the key, and what follows the call (texture, register).
        `line`: the call's top line, where a melody model's line goes when chords are voiced under
        it (improv.voicing): a single line in that register."""
        s, listen = self.listener.settings.sampling, self.listener.settings.listen
        key = self.listener.key
        polyphony = s.max_polyphony
        if polyphony is None:  # follow the call's texture: a single line for a single line
            polyphony = 1 + reserve if line or (call is not None and call.single_line) else FOLLOW_POLYPHONY
        if line and call is not None:
            call = dataclasses.replace(call, median_pitch=float(np.median(line)), low=min(line), high=max(line))
        lo, hi = s.pitch_lo, s.pitch_hi
        if listen.register and call is not None:
            lo = max(lo, min(call.low, round(call.median_pitch) - REGISTER_SPAN) - REGISTER_MARGIN)
            hi = min(hi, max(call.high, round(call.median_pitch) + REGISTER_SPAN) + REGISTER_MARGIN)
            if lo > hi:  # the call lies outside the range: the range's edge nearest to it
                lo = hi = s.pitch_hi if call.median_pitch > s.pitch_hi else s.pitch_lo
        return MaskRules(lo, hi, max(1, polyphony - reserve), key.pitch_classes if key else None)

    def call_shape(self) -> PhraseShape | None:
        """The shape of what the player just played (the call, or the duet's window)."""
        listener = self.listener
        return PhraseShape.of(listener.call, listener.settings.mode.beats_per_bar)

    def fork(self, start: float, end: float, *, first_on: bool, sounding: dict[int, float] | None = None,
             ending: dict[int, float] | None = None, reserve: int = 0, voiced: bool = False) -> PhraseGenerator:
        """A generator from `start`; it starts no note while `max_polyphony - reserve` sound.
        `voiced`: a melody model's line gets the call's chords under it (an answer; the duet's line
        plays over the player's chords and its reactions instead)."""
        listener = self.listener
        self.dialogue.heard_until(listener.clock.beats_at(listener.now))
        call = self.call_shape()
        listen = listener.settings.listen
        rules = self.rules(reserve, call)
        voicer = self._voicer(rules) if voiced else None
        density = call
        if voicer is not None:  # the line keeps the call's onsets per beat, the voices its notes per onset
            rules = self.rules(reserve, call, top_line(listener.call))
            density = dataclasses.replace(call, notes_per_beat=call.notes_per_beat / call.notes_per_onset)
        spec = PhraseSpec(start, end, rules, first_on, dict(sounding or {}), dict(ending or {}),
                          listener.call_velocity(), listener.held.keys(),
                          max_steps=int(64 * min(end - start, 64) + 64) if end < math.inf else 10**12,
                          follow=Following(density if listen.density else None, call if listen.dynamics else None,
                                           listener.settings.mode.beats_per_bar,
                                           self._figures(listener.call, voicer is not None) if listen.figures else None,
                                           voicer))
        return PhraseGenerator(self.model, self.masks, self.sampler, self.listener.context.fork(start), spec)

    def _voicer(self, rules: MaskRules) -> Voicer | None:
        """Chords under a melody model's line where the call has chords and texture follows it."""
        listener = self.listener
        if (self.model.writes_chords or listener.key is None or not listener.settings.listen.voicing
                or listener.settings.sampling.max_polyphony is not None):
            return None
        texture = Texture.of(listener.call)
        if texture is None:
            return None
        return Voicer(texture, listener.key, (rules.pitch_lo, rules.pitch_hi), rules.max_polyphony, self.sampler.rng)

    def _figures(self, call: list[Note], as_line: bool) -> Figures | None:
        return Figures.of(call, self.facts.on_id, self.facts.vocab.config.chord_order == "down", as_line)

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
