"""Mode "duet": improv plays along from the player's first note. Pure decisions, no threads, no I/O.

A generator plans `duet_horizon_beats` ahead of now from a fork of the dialogue; its notes go into
a `Part` (beats) and reach the scheduler just before they are due. Each player note re-plans from
``now + guard`` (`improv.replan_guard`): notes not yet started are dropped, notes already started
keep their planned end, and the next generator (its context has the player's note) takes over
from the cutoff, ending the inherited notes that have no end yet and not re-striking those still
to end. The duet plays while the player plays and `max_response_beats` after; after an `all_off`
it waits for the player's next note.

The reaction (`ModeSettings.duet_react`): a player's note-on is also answered at once, the way a
comping musician answers a struck note: one note, due at that very instant. The context steps
through the player's tokens and the note is sampled with a mask that allows only note starts in
range and key, on no pitch the player holds or improv sounds, within the polyphony, so the model
picks the note that would sound with the player's. It is the first note of improv's line, a voice
with no end yet that the next generator inherits and ends. The line keeps one voice free for
reactions; at the polyphony limit all the same, one of improv's notes lets go for the new one (the
oldest whose note-off the part still holds, else the one ending first). A note whose mask allows
nothing gets no reaction (counted in `unanswered`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Collection

import numpy as np

from improv.clock import BeatTimeline
from improv.context import Dialogue
from improv.events import NoteOn
from improv.listener import Listener
from improv.parts import Part, Voice
from improv.performer import Performer
from improv.phrase import GenEvent, MaskRules, PhraseGenerator
from improv.replan_guard import ReplanGuard
from improv.scheduler import Planned

log = logging.getLogger(__name__)

REACT_VELOCITY_SCALE = 0.8  # a comping note sits a little under the player's
REACT_MAX_STEPS = 32  # a context further behind than this (never, in practice) gets no reaction


class Duet:
    def __init__(self, listener: Listener, dialogue: Dialogue, performer: Performer) -> None:
        self.listener = listener
        self.clock: BeatTimeline = listener.clock
        self.dialogue = dialogue
        self.performer = performer
        self.facts = performer.facts
        self.guard = ReplanGuard(lead_s=listener.settings.time.latency_ms / 1000)
        self.part = Part("duet", self._channel)
        self.gen: PhraseGenerator | None = None
        self.resume_beats = -math.inf  # a re-plan starts here (its cutoff)
        self.reactions = 0  # notes played as reactions
        self.unanswered = 0  # player notes that got none (mask empty, or the context too far behind)
        self.armed = False  # the player has played since the last `stop`
        self._to_react: deque[NoteOn] = deque(maxlen=16)  # note-ons `react` has yet to answer
        self._mask = np.empty(len(self.facts.kind), dtype=bool)  # (V,) the reaction's mask, reused
        # pitch -> beats: let go early for a reaction after its note-off was handed over; that
        # note-off is still queued in the scheduler, so the pitch is not struck again before it
        self._released: dict[int, float] = {}

    @property
    def _channel(self) -> int:
        return self.listener.settings.output.channel - 1

    def use(self, facts) -> None:
        """Another model plays from now: its token facts, a mask of its vocabulary's size."""
        self.facts = facts
        self._mask = np.empty(len(facts.kind), dtype=bool)

    @property
    def _steps(self) -> int:
        return self.performer.model.steps

    # ------------------------------------------------------------------ the player

    def after_note_on(self, ev: NoteOn) -> None:
        self.armed = True
        if self.listener.settings.mode.duet_react:
            self._to_react.append(ev)

    def react(self) -> list[Planned]:
        """For each player note-on since the last call, one note due now (see the module doc).
        The engine calls this right after handing over the note's other plans."""
        plans: list[Planned] = []
        while self._to_react:
            ev = self._to_react.popleft()
            plans += self._react(self.listener.now, self.performer.rules(), self.listener.held.keys(), ev.velocity)
        return plans

    # ------------------------------------------------------------------ time

    def wanted(self) -> bool:
        """While the player plays, and `max_response_beats` after; never between a `stop` and
        the player's next note."""
        if not self.armed:
            return False
        since = self.clock.beats_at(self.listener.now) - self.listener.last_player_beats
        return bool(self.listener.held) or since <= self.listener.settings.mode.max_response_beats

    def until_beats(self) -> float:
        return self.clock.beats_at(self.listener.now) + self.listener.settings.mode.duet_horizon_beats

    def tick(self, budget: int) -> list[Planned]:
        if self.gen is None:
            if not (self.listener.context.ready and self.wanted()):
                return []
            self.begin(self.listener.now)
        if not self.wanted() and not self.gen.done:
            self.performer.queue(self.part, self.gen.finish())
        elif budget > 0 and self.performer.generate(self.gen, self.part, budget, self.until_beats()):
            self.performer.show_line(self.part, self.gen.frontier_beats)
            self.generated(self._steps)
        return []

    def busy(self, active: bool) -> bool:
        """Model work to do: a start wanted (in duet mode), or a line behind its horizon."""
        if active and self.gen is None and self.wanted():
            return True
        return self.behind(self.until_beats())

    def release_due(self, now_s: float) -> list[Planned]:
        return self.part.release_due(self.clock, now_s)

    def begin(self, now_s: float) -> PhraseGenerator:
        """A generator from the last re-plan's cutoff, inheriting the notes that still sound. A
        first start (or one after a stop) has no cutoff ahead: it is a re-plan that keeps
        nothing, so it starts a guard ahead of now too."""
        if self.resume_beats < self.clock.beats_at(now_s):
            self.resume_beats = self.clock.beats_at(now_s + self.guard.seconds())
            self.guard.replanned(self._steps)
        start = self.resume_beats
        voices = self.part.voices
        sounding = {v.pitch: v.on_beats for v in voices if v.off_beats is None}
        ending = {v.pitch: v.off_beats for v in voices if v.off_beats is not None and v.off_beats > start}
        for pitch, until in self._still_released(start).items():
            if pitch not in sounding:
                ending[pitch] = max(until, ending.get(pitch, until))
        reserve = 1 if self.listener.settings.mode.duet_react else 0  # a voice kept free for reactions
        self.gen = self.performer.fork(start, math.inf, first_on=False, sounding=sounding, ending=ending,
                                       reserve=reserve)
        return self.gen

    def generated(self, steps_now: int) -> None:
        """After the generator ran: once its frontier passed a re-plan's cutoff, the re-plan has
        delivered everything due at the cutoff (the guard learns how many steps that took)."""
        if self.gen is not None and (self.gen.done or self.gen.frontier_beats > self.resume_beats + 1e-9):
            self.guard.delivered(steps_now)

    def behind(self, until_beats: float) -> bool:
        """Whether the generator has model work to do before `until_beats`."""
        return self.gen is not None and not self.gen.done and self.gen.frontier_beats < until_beats - 1e-9

    def replan(self, now_s: float) -> list[Planned]:
        """A player note: what starts before the cutoff (`ReplanGuard`) stays (with its planned
        end), everything later is dropped, to be planned again from a context that has the
        player's note."""
        if self.gen is None:
            return []
        cutoff_s = now_s + self.guard.seconds()
        self.guard.replanned(self._steps)
        cutoff_beats, self.gen = self.clock.beats_at(cutoff_s), None
        self.resume_beats = cutoff_beats
        plans, ends = self.part.cut(self.clock, cutoff_s)
        self.dialogue.replanned(cutoff_beats, ends)
        return [*plans, Planned(cutoff_s, "cancel", source="duet")]

    def _react(self, now_s: float, rules: MaskRules, avoid: Collection[int], velocity: int) -> list[Planned]:
        """One note due at `now_s`, picked by the model to sound with what it just heard (the
        player's note-on, queued in the context). `avoid`: the player's held keys."""
        context = self.dialogue.context
        context.catch_up(REACT_MAX_STEPS)  # the player's tokens: one cached step each
        beats = self.clock.beats_at(now_s)
        voices = [v for v in self.part.voices  # improv's notes sounding now or about to (the guard)
                  if v.on_s is not None and (v.off_beats is None or v.off_beats > beats + 1e-9)]
        victim = self._victim(voices, rules.max_polyphony, now_s)
        together = self._polyphony([v for v in voices if v is not victim], now_s)
        mask = self._reaction_mask(rules, avoid, voices, together, beats)
        if not context.ready or not mask.any():
            self.unanswered += 1
            log.debug("duet: no reaction at %.6f s (%s)", now_s, "the context is behind" if not context.ready
                      else f"no note allowed: {together} of improv's sound, {len(avoid)} keys held")
            return []
        pitch = int(self.facts.value[self.performer.sampler.sample(context.mixed_logits(), mask)])
        plans = [] if victim is None else [self._let_go(victim, beats, now_s)]
        velocity = max(1, min(127, round(velocity * REACT_VELOCITY_SCALE)))
        self.dialogue.planned(GenEvent(beats, "on", pitch, velocity))
        self.dialogue.heard_until(beats)  # it sounds now: queued for the context (the next tick steps it)
        self.reactions += 1
        return [*plans, self.part.sound(pitch, velocity, beats, now_s)]

    def _victim(self, voices: list[Voice], max_polyphony: int, now_s: float) -> Voice | None:
        """At the polyphony limit, the voice that lets go for the reaction: the oldest of those
        sounding whose note-off is still the part's to give, else the one ending first."""
        if self._polyphony(voices, now_s) < max_polyphony:
            return None
        started = [v for v in voices if v.on_s <= now_s]
        clean = [v for v in started if v.off_s is None]
        if clean:
            return min(clean, key=_onset)
        return min(started, key=_end) if started else None

    def _polyphony(self, voices: list[Voice], now_s: float) -> int:
        """The most of `voices` sounding at once from `now_s` on: one starting within the guard
        counts, one that ends before it starts does not."""
        ends = [math.inf if v.off_beats is None else self.clock.time_at(v.off_beats) for v in voices]
        instants = [now_s, *(v.on_s for v in voices if v.on_s > now_s)]
        return max(sum(1 for v, end in zip(voices, ends) if v.on_s <= t < end) for t in instants)

    def _let_go(self, voice: Voice, beats: float, now_s: float) -> Planned:
        """`voice` ends now, for the reaction: in the part, and in what the context will hear
        (unless it heard the planned end already: one within the re-plan's guard)."""
        if voice.off_beats is None or self.dialogue.unplanned(GenEvent(voice.off_beats, "off", voice.pitch)):
            self.dialogue.planned(GenEvent(beats, "off", voice.pitch))
        if voice.off_s is not None:  # its note-off is with the scheduler already
            self._released[voice.pitch] = voice.off_beats
        return self.part.end(voice, beats, now_s)

    def _still_released(self, beats: float) -> dict[int, float]:
        for pitch in [p for p, until in self._released.items() if until <= beats + 1e-9]:
            del self._released[pitch]
        return self._released

    def _reaction_mask(self, rules: MaskRules, avoid: Collection[int], voices: list[Voice],
                       together: int, beats: float) -> np.ndarray:
        """Only note starts: ON_p in range and key, within the polyphony (`together` other notes
        of improv's sound with it), on no pitch the player holds or improv sounds (or lets go
        of). Into a buffer reused for every reaction."""
        t, mask = self.facts, self._mask
        allowed = self.performer.masks.allowed(pitch_range=(rules.pitch_lo, rules.pitch_hi),
                                  pitch_classes=rules.pitch_classes, sounding=together,
                                  max_polyphony=rules.max_polyphony)
        np.logical_and(allowed, t.is_on, out=mask)
        for pitch in (*avoid, *(v.pitch for v in voices), *self._still_released(beats)):
            if 0 <= pitch < 128 and t.on_id[pitch] >= 0:
                mask[t.on_id[pitch]] = False
        return mask

    def stop(self, now_s: float) -> list[Planned]:
        """Note-offs for what sounds; nothing waits any more (cancel "duet" in the scheduler too)."""
        plans = self.part.stop(now_s)
        self.part = Part("duet", self.part.channel)
        self.gen = None
        self._released.clear()  # (the cancel drops their queued note-offs)
        self._to_react.clear()
        self.armed = False
        return plans

    def wakeups(self) -> list[float | None]:
        """When the duet needs a tick: to hand notes over, and to plan on (half a horizon ahead)."""
        horizon_beats = self.listener.settings.mode.duet_horizon_beats
        times = [self.part.next_release_s(self.clock)]
        if self.gen is not None and not self.gen.done:
            times.append(self.clock.time_at(self.gen.frontier_beats - horizon_beats / 2))
        return times


def _onset(voice: Voice) -> float:
    return voice.on_beats


def _end(voice: Voice) -> float:
    return math.inf if voice.off_beats is None else voice.off_beats
