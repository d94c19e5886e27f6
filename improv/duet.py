"""Mode "duet": improv plays along from the player's first note. Pure decisions, no threads, no I/O.

A generator plans `duet_horizon_beats` ahead of now from a fork of the dialogue; its notes go into
a `Part` (beats) and reach the scheduler just before they are due. Each player note re-plans from
``now + guard`` (`improv.replan_guard`): notes not yet started are dropped, notes already started
keep their planned end, and the next generator (its context has the player's note) takes over
from the cutoff, ending the inherited notes that have no end yet and not re-striking those still
to end. The duet plays while the player plays and `max_response_beats` after; after an `all_off`
it waits for the player's next note.

The reaction (`ModeSettings.duet_react`): a player's note-on is also answered at once, the way a
comping musician answers a struck note: one note, due at that very instant, chosen with no model
step from what the model expected before the note (`improv.reaction`: in range and key, off the
keys held and improv's sounding notes, within the polyphony, consonant with the keys held). The
engine asks for it right after the thru echo (`react(ev, ready=True)`: a table prepared at the
last tick, `prepare`), else after the re-plan's cut (`react(ev)`, the same rules computed at the note). The
context hears it, with the player's note, at the next tick. It is the first note of improv's
line, a voice with no end yet that the next generator inherits and ends. The line keeps one voice
free for reactions; at the polyphony limit all the same, one of improv's notes lets go for the
new one (the oldest whose note-off the part still holds, else the one ending first). A note
whose mask allows nothing gets no reaction (counted in `unanswered`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from improv.clock import BeatTimeline
from improv.context import Dialogue
from improv.events import NoteOn
from improv.listener import Listener
from improv.parts import Part, Voice
from improv.performer import Performer
from improv.phrase import GenEvent, PhraseGenerator
from improv.reaction import Reaction
from improv.replan_guard import ReplanGuard
from improv.scheduler import Planned

if TYPE_CHECKING:
    from improv.reflex import Reflexed

log = logging.getLogger(__name__)

REACT_VELOCITY_SCALE = 0.8  # a comping note sits a little under the player's


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
        self.prepared_reactions = 0  # of them, drawn from the table the last tick prepared
        self.unanswered = 0  # player notes that got none (mask empty, or the context too far behind)
        self.armed = False  # the player has played since the last `stop`
        self.reaction = Reaction(performer)
        self._ready_victim: Voice | None = None  # the voice that lets go for the prepared reaction
        self._unheard: list[GenEvent] = []  # reactions sent, not yet in the dialogue (`hear_reactions`)
        # pitch -> beats: let go early for a reaction after its note-off was handed over; that
        # note-off is still queued in the scheduler, so the pitch is not struck again before it
        self._released: dict[int, float] = {}

    @property
    def _channel(self) -> int:
        return self.listener.settings.output.channel - 1

    def use(self, facts) -> None:
        """Another model plays from now: its token facts, a mask of its vocabulary's size."""
        self.facts = facts
        self.reaction.invalidate()

    @property
    def _steps(self) -> int:
        return self.performer.model.steps

    # ------------------------------------------------------------------ the player

    def after_note_on(self, ev: NoteOn) -> None:
        self.armed = True

    def react(self, ev: NoteOn, ready: bool = False, reflexed: Reflexed | None = None) -> list[Planned]:
        """The player's note-on `ev`: one note due at its instant (see the module doc). With
        `ready`, before its re-plan and nothing else heard since the last tick: from the table
        `prepare` left, if any, or the note the reflex drew from it and played already
        (`reflexed`, `improv.reflex`: taken whatever the settings say now). Else after its re-plan
        (`replan`), which the engine asks only if the table gave none: chosen at the note."""
        if not self.listener.settings.mode.duet_react and reflexed is None:
            return []
        if ready:
            self.listener.now = max(self.listener.now, ev.t_s)
            return self._react_ready(ev, reflexed)
        if ev.pitch not in self.listener.held:
            return []
        return self._react(self.listener.now, ev.pitch, ev.velocity)

    def _react_ready(self, ev: NoteOn, reflexed: Reflexed | None) -> list[Planned]:
        pitch = self.reaction.draw_ready(ev.pitch) if reflexed is None else reflexed.pitch
        if pitch is None:
            return []
        now_s = self.listener.now
        self.prepared_reactions += 1
        beats, victim = self.clock.beats_at(now_s), self._ready_victim
        if reflexed is not None:  # (a tick since may have prepared another)
            victim = next((v for v in self.part.voices if v.pitch == reflexed.victim and v.on_s is not None), None)
        plans = []
        if victim is not None and (victim.off_beats is None or victim.off_beats > beats + 1e-9):
            plans.append(self._let_go(victim, beats, now_s))  # still sounding: it lets go, as prepared
        return [*plans, self._sound(pitch, ev.velocity, now_s)]

    def prepare(self, active: bool) -> None:
        """Between events (the end of a tick), in duet mode (`active`): the table the next
        note-on's reaction is drawn from, for what holds now (the context, the keys held,
        improv's notes)."""
        context = self.dialogue.context
        if not active or not self.listener.settings.mode.duet_react or not context.ready:
            self.reaction.invalidate()
            return
        rules = self.performer.rules()
        _, self._ready_victim, together, avoid = self._room(self.listener.now, rules.max_polyphony)
        blend, memory = context.blend, context.memory
        version = (context.stepped, id(context.logits), memory and memory.tokens_seen, blend and blend.memory_weight,
                   self.performer.sampler.temperature, id(self.facts), id(self._ready_victim))
        self.reaction.prepare(context.mixed_logits, rules, tuple(sorted(self.listener.held)), tuple(sorted(avoid)),
                              together, version)
        victim = self._ready_victim
        until = math.inf if victim is None or victim.off_beats is None else self.clock.time_at(victim.off_beats)
        self.reaction.arm(REACT_VELOCITY_SCALE, self.listener.settings.output.input_channel, self._channel,
                          -1 if victim is None else victim.pitch, until)

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

    def _react(self, now_s: float, struck: int, velocity: int) -> list[Planned]:
        """One note due at `now_s` for the player's key `struck` (see `improv.reaction`)."""
        rules = self.performer.rules()
        beats, victim, together, avoid = self._room(now_s, rules.max_polyphony)
        pitch = self.reaction.choose(self.dialogue.context.mixed_logits(), rules, self.listener.held.keys(),
                                     avoid, together, struck)
        if pitch is None:
            self.unanswered += 1
            log.debug("duet: no reaction at %.6f s (no note allowed: %d of improv's sound, %d keys held)",
                      now_s, together, len(self.listener.held))
            return []
        plans = [] if victim is None else [self._let_go(victim, beats, now_s)]
        plans.append(self._sound(pitch, velocity, now_s))
        self.hear_reactions()
        return plans

    def _sound(self, pitch: int, velocity: int, now_s: float) -> Planned:
        """The reaction `pitch` sounds at `now_s`: in the part at once; the context hears it
        from `hear_reactions`, once the note is on its way."""
        beats = self.clock.beats_at(now_s)
        velocity = max(1, min(127, round(velocity * REACT_VELOCITY_SCALE)))
        self._unheard.append(GenEvent(beats, "on", pitch, velocity))
        self.reactions += 1
        return self.part.sound(pitch, velocity, beats, now_s)

    def heard_something(self, tick: bool = False) -> None:
        """An event or a `tick` begins: the reactions sent join the dialogue, and the table
        prepared for what held before is stale (the reflex keeps it through a tick, to answer a
        note-on that comes meanwhile: `Reaction.invalidate`)."""
        self.hear_reactions()
        self.reaction.invalidate(disarm=not tick)

    def hear_reactions(self) -> None:
        """The reactions sent since the last call join the dialogue (queued for the context: the
        next tick steps them), after they were handed over (`heard_something`)."""
        for event in self._unheard:
            self.dialogue.planned(event)
            self.dialogue.heard_until(event.beats)
        self._unheard.clear()

    def _room(self, now_s: float, max_polyphony: int) -> tuple[float, Voice | None, int, list[int]]:
        """For a reaction at `now_s`: (beats, the voice that lets go for it or None, how many of
        improv's notes sound with it, the pitches it must avoid). Improv's notes: those sounding
        or about to (handed over: within the guard)."""
        beats = self.clock.beats_at(now_s)
        voices = [v for v in self.part.voices if v.on_s is not None and (v.off_beats is None or v.off_beats > beats + 1e-9)]
        victim = _victim(self.clock, voices, max_polyphony, now_s)
        together = _polyphony(self.clock, [v for v in voices if v is not victim], now_s)
        return beats, victim, together, [*(v.pitch for v in voices), *self._still_released(beats)]

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

    def stop(self, now_s: float) -> list[Planned]:
        """Note-offs for what sounds; nothing waits any more (cancel "duet" in the scheduler too)."""
        self.hear_reactions()
        plans = self.part.stop(now_s)
        self.part = Part("duet", self.part.channel)
        self.gen = None
        self._released.clear()  # (the cancel drops their queued note-offs)
        self.reaction.invalidate()
        self.armed = False
        return plans

    def wakeups(self) -> list[float | None]:
        """When the duet needs a tick: to hand notes over, and to plan on (half a horizon ahead)."""
        horizon_beats = self.listener.settings.mode.duet_horizon_beats
        times = [self.part.next_release_s(self.clock)]
        if self.gen is not None and not self.gen.done:
            times.append(self.clock.time_at(self.gen.frontier_beats - horizon_beats / 2))
        return times


def _victim(clock: BeatTimeline, voices: list[Voice], max_polyphony: int, now_s: float) -> Voice | None:
    """At the polyphony limit, the voice that lets go for the reaction: the oldest of those
    sounding whose note-off is still the part's to give, else the one ending first."""
    if _polyphony(clock, voices, now_s) < max_polyphony:
        return None
    started = [v for v in voices if v.on_s <= now_s]
    clean = [v for v in started if v.off_s is None]
    if clean:
        return min(clean, key=_onset)
    return min(started, key=_end) if started else None


def _polyphony(clock: BeatTimeline, voices: list[Voice], now_s: float) -> int:
    """The most of `voices` sounding at once from `now_s` on: one starting within the guard
    counts, one that ends before it starts does not."""
    ends = [math.inf if v.off_beats is None else clock.time_at(v.off_beats) for v in voices]
    instants = [now_s, *(v.on_s for v in voices if v.on_s > now_s)]
    return max(sum(1 for v, end in zip(voices, ends) if v.on_s <= t < end) for t in instants)


def _onset(voice: Voice) -> float:
    return voice.on_beats


def _end(voice: Voice) -> float:
    return math.inf if voice.off_beats is None else voice.off_beats
