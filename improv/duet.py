"""Mode "duet": improv plays along from the player's first note (driven by `improv.improviser`).

A generator plans `duet_horizon_beats` ahead of now from a fork of the dialogue; its notes go into
a `Part` (beats) and reach the scheduler just before they are due. Each player note re-plans from
``now + guard`` (`ReplanGuard`: at least `replan_guard_s`, more when the model is too slow to
deliver the first new note that soon): notes not yet started are dropped, notes already started keep their planned end
(the part keeps their note-offs, the scheduler the ones it has), and the next generator - its
context has the player's note - takes over from the cutoff, ending the inherited notes that have
no end yet and not re-striking those still to end.

The reaction (`ModeSettings.duet_react`, `react`): a player's note-on is also answered AT ONCE, the
way a comping musician answers a struck note: one note, due at that very instant (no guard).

* What sounds: the context steps through the player's tokens (cached state, one step per token)
  and the note is sampled from its logits with a mask that allows only note starts - ``ON_p`` in
  the pitch range and the key, on no pitch the player holds or improv sounds, within the
  polyphony - so the model picks the note that would sound together with the player's (from a
  chorale model, a chord tone). Velocity: the player's times `REACT_VELOCITY_SCALE`.
* The context hears it at once (it sounds at once), as it hears every note of improv's that has
  sounded, so the line planned next knows it.
* When it ends: it is the first note of improv's line, a voice of the part with no end yet. The
  next generator inherits it, so the model's continuation (from a copy of the state) ends it -
  after at least a tick, at most `max_note_beats` later, or when the duet stops playing. A re-plan
  keeps it like any note already started; stop, mode switch, all-off and a model error release it
  as they release the part.
* Polyphony: the line keeps one voice free for reactions (its generators start no note while
  `max_polyphony - 1` sound). If improv sounds `max_polyphony` all the same (reactions in quick
  succession), one of its notes lets go at that instant for the new one - a comping hand moving
  to the new chord: the oldest whose note-off the part still holds, else the one ending first
  (whose queued note-off then finds nothing to release; its pitch is not struck again before).
  A note whose mask allows nothing gets no reaction (counted in `unanswered`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Collection

import numpy as np

from improv.clock import BeatTimeline
from improv.phrase import Dialogue, GenEvent, MaskRules, PhraseGenerator, TokenTable
from improv.plans import Part, Planned, Voice
from improv.sampling import Sampler

log = logging.getLogger(__name__)

# fork(start_beats, sounding {pitch: onset beats}, ending {pitch: end beats}) -> a generator
Fork = Callable[[float, dict[int, float], dict[int, float]], PhraseGenerator]

REACT_VELOCITY_SCALE = 0.8  # a comping note sits a little under the player's
REACT_MAX_STEPS = 32  # a context further behind than this (never, in practice) gets no reaction


class ReplanGuard:
    """How far ahead of now a re-plan cuts: at least `min_s`, and long enough for the generator to
    deliver the first new note before it is due. That takes the model steps from the re-plan until
    the generator's frontier passes the cutoff (the player's tokens, then the continuation: the
    most any of the last `WINDOW` re-plans took, counted in steps so a manual clock sees the same)
    times the wall time of a step as the engine measured it (model, sampling and bookkeeping),
    times a margin.

    A window, not a decaying maximum: how many steps a re-plan needs depends on the music (a
    chord, a beat crossed), so the rare long ones recur; a maximum that decayed by 5 % per re-plan
    had forgotten them after twenty short ones, and the next long one went out late."""

    MARGIN = 1.5
    WINDOW = 128  # re-plans remembered (two per player note: ~a minute of a busy duet)
    MAX_S = 0.05  # never cut later than this: the line must still follow the player
    PRIOR_STEPS = 10  # until a re-plan has delivered: what bach-lstm takes (the player's 2-3
    # tokens, then the first new note or two)

    def __init__(self, min_s: float) -> None:
        self.min_s = min_s
        self.step_s = 0.0  # EMA of seconds per model step in the engine's ticks (0 on a manual clock)
        self._delivered: deque[int] = deque(maxlen=self.WINDOW)  # steps each recent re-plan took
        self._mark: int | None = None  # model steps at the last re-plan, until it delivered

    @property
    def steps(self) -> int:
        """The most steps a recent re-plan took to deliver (`PRIOR_STEPS` before any did)."""
        return max(self._delivered) if self._delivered else self.PRIOR_STEPS

    def seconds(self) -> float:
        return min(self.MAX_S, max(self.min_s, self.MARGIN * self.steps * self.step_s))

    def measured(self, elapsed_s: float, steps: int) -> None:
        """One engine tick took `elapsed_s` for `steps` model steps."""
        if steps > 0:
            per_step = elapsed_s / steps
            self.step_s = per_step if self.step_s == 0.0 else 0.9 * self.step_s + 0.1 * per_step

    def replanned(self, steps_now: int) -> None:
        if self._mark is None:  # a re-plan before the last one delivered counts from the first
            self._mark = steps_now

    def delivered(self, steps_now: int) -> None:
        if self._mark is not None:
            self._delivered.append(steps_now - self._mark)
            self._mark = None


class Duet:
    def __init__(self, clock: BeatTimeline, dialogue: Dialogue, channel: int, guard_s: float,
                 table: TokenTable) -> None:
        self.clock = clock
        self.dialogue = dialogue
        self.guard = ReplanGuard(guard_s)
        self.table = table
        self.part = Part("duet", channel)
        self.gen: PhraseGenerator | None = None
        self.resume_beats = -math.inf  # a re-plan starts here (its cutoff)
        self.reactions = 0  # notes played as reactions
        self.unanswered = 0  # player notes that got none (mask empty, or the context too far behind)
        self._mask = np.empty(len(table.kind), dtype=bool)  # (V,) the reaction's mask, reused
        # pitch -> beats: let go early for a reaction after its note-off was handed over; that
        # note-off is still queued in the scheduler, so the pitch is not struck again before it
        self._released: dict[int, float] = {}

    def begin(self, now_s: float, fork: Fork, steps_now: int) -> PhraseGenerator:
        """A generator from the last re-plan's cutoff, inheriting the notes that still sound. A
        first start (or one after a stop) has no cutoff ahead: it is a re-plan that keeps
        nothing, so it starts a guard ahead of now too, or its first note would be due before
        the model had produced it (3-4 ms late with a 0.25-ms model)."""
        if self.resume_beats < self.clock.beats_at(now_s):
            self.resume_beats = self.clock.beats_at(now_s + self.guard.seconds())
            self.guard.replanned(steps_now)
        start = self.resume_beats
        voices = self.part.voices
        sounding = {v.pitch: v.on_beats for v in voices if v.off_beats is None}
        ending = {v.pitch: v.off_beats for v in voices if v.off_beats is not None and v.off_beats > start}
        for pitch, until in self._still_released(start).items():
            if pitch not in sounding:
                ending[pitch] = max(until, ending.get(pitch, until))
        self.gen = fork(start, sounding, ending)
        return self.gen

    def generated(self, steps_now: int) -> None:
        """After the generator ran: once its frontier passed a re-plan's cutoff, the re-plan has
        delivered everything due at the cutoff (the guard learns how many steps that took)."""
        if self.gen is not None and (self.gen.done or self.gen.frontier_beats > self.resume_beats + 1e-9):
            self.guard.delivered(steps_now)

    def behind(self, until_beats: float) -> bool:
        """Whether the generator has model work to do before `until_beats`."""
        return self.gen is not None and not self.gen.done and self.gen.frontier_beats < until_beats - 1e-9

    def replan(self, now_s: float, steps_now: int) -> list[Planned]:
        """A player note: what starts before the cutoff (`ReplanGuard`) stays (with its planned
        end), everything later is dropped, to be planned again from a context that has the
        player's note. `steps_now`: the model's step count (for the guard)."""
        if self.gen is None:
            return []
        cutoff_s = now_s + self.guard.seconds()
        self.guard.replanned(steps_now)
        cutoff_beats, self.gen = self.clock.beats_at(cutoff_s), None
        self.resume_beats = cutoff_beats
        plans, ends = self.part.cut(self.clock, cutoff_s)
        self.dialogue.replanned(cutoff_beats, ends)
        return [*plans, Planned(cutoff_s, "cancel", source="duet")]

    def react(self, now_s: float, sampler: Sampler, rules: MaskRules, avoid: Collection[int],
              velocity: int) -> list[Planned]:
        """One note due at `now_s`, picked by the model to sound with what it just heard (the
        player's note-on, queued in the context); see the module docstring. `avoid`: the
        player's held keys. Call after `replan`, which the same note-on caused."""
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
        pitch = int(self.table.value[sampler.sample(context.logits, mask)])
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
        t, mask = self.table, self._mask
        allowed = t.masks.allowed(pitch_range=(rules.pitch_lo, rules.pitch_hi),
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
        return plans

    def wakeups(self, horizon_beats: float) -> list[float | None]:
        """When the duet needs a tick: to hand notes over, and to plan on (half a horizon ahead)."""
        times = [self.part.next_release_s(self.clock)]
        if self.gen is not None and not self.gen.done:
            times.append(self.clock.time_at(self.gen.frontier_beats - horizon_beats / 2))
        return times


def _onset(voice: Voice) -> float:
    return voice.on_beats


def _end(voice: Voice) -> float:
    return math.inf if voice.off_beats is None else voice.off_beats
