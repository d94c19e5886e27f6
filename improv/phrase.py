"""A phrase sampled from a copy of the model's context, in bounded slices.

`PhraseGenerator` samples from a fork of the context (`improv.context.ModelContext.fork`), so
listening is never disturbed. It runs in slices (`run(max_steps, until_beats)`), emits note events
in beats as it goes, and enforces the musical rules the sampler's masks do not: a phrase may be
required to start with a note, an OFF only ends a note sounding for at least a tick (no
zero-length notes, nor blips of an inherited note), no re-strike of a sounding or avoided pitch,
at most `max_run` events without time moving, no note longer than `max_note_beats`, and every
note ends by `end_beats`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from improv.figures import Figures
from improv.phrase_shape import PhraseShape
from improv.sampling import Sampler, TokenMasks
from improv.token_facts import OFF, ON, SHIFT, VEL
from improv.tokens import DEFAULT_VELOCITY, bin_velocity
from improv.voicing import Voicer


DENSITY_GAIN = 1.0  # log-odds per note the phrase is ahead of (or behind) the call's density
DENSITY_MAX_BIAS = 4.0
DENSITY_LEAD_BEATS = 0.25  # the count looks this far ahead, so a phrase may start with a note


@dataclass(frozen=True, slots=True)
class GenEvent:
    beats: float  # absolute, on the beat clock in charge
    kind: str  # "on" | "off"
    pitch: int
    velocity: int = 0


@dataclass
class Fork:
    """A copy of the context to generate from (`improv.context.ModelContext.fork`)."""

    state: object
    logits: np.ndarray  # (V,) after the latest token heard
    prefix: list[int]  # SHIFT tokens up to the phrase's start, to step first
    memory_cursor: object = None  # improv.memory.Cursor: where the session memory stands
    memory: object = None  # improv.memory.SessionMemory, or None
    blend: object = None  # improv.blend.Blend, with a memory


@dataclass(frozen=True)
class MaskRules:
    pitch_lo: int = 0
    pitch_hi: int = 127
    max_polyphony: int = 4
    pitch_classes: frozenset[int] | None = None  # key lock; None: any pitch class


@dataclass(frozen=True)
class Following:
    """What of the call the phrase follows beyond the masks: its density, dynamics and figures."""

    density: PhraseShape | None = None  # notes per beat to keep near
    dynamics: PhraseShape | None = None  # velocity level and accents by position in the bar
    beats_per_bar: int = 4
    figures: Figures | None = None  # the call's melodic figures, offered to the top line
    voicer: Voicer | None = None  # the call's chords under the phrase's onsets


@dataclass
class PhraseSpec:
    """Where a phrase lies and what it must respect."""

    start_beats: float
    end_beats: float = math.inf
    rules: MaskRules = field(default_factory=MaskRules)
    first_on: bool = True  # its first event must start a note
    sounding: dict[int, float] = field(default_factory=dict)  # pitch -> onset beats: inherited, ours to end
    ending: dict[int, float] = field(default_factory=dict)  # pitch -> planned end beats: not ours to end
    velocity: int = DEFAULT_VELOCITY
    avoid: Collection[int] = ()  # pitches not to start (e.g. keys the player holds); may be a live view
    max_note_beats: float = 4.0
    max_steps: int = 100_000
    follow: Following = field(default_factory=Following)


class PhraseGenerator:
    """Samples one phrase (or an endless duet part) from a forked context; see the module doc."""

    def __init__(self, model, masks: TokenMasks, sampler: Sampler, fork: Fork, spec: PhraseSpec) -> None:
        self.model, self.masks, self.facts, self.sampler = model, masks, masks.facts, sampler
        self.rules = spec.rules
        self.state, self.logits = fork.state, fork.logits
        self._prefix = deque(fork.prefix)
        self.memory, self.blend = fork.memory, fork.blend
        self._cursor = fork.memory_cursor  # the memory's view of this phrase as it goes on
        self.follow = spec.follow
        self._line = spec.follow.figures.line() if spec.follow.figures is not None else None
        self._voicer = spec.follow.voicer
        self.notes_started = 0
        self._biased = np.empty(len(self.facts.kind))  # (V,) logits with the density bias, reused
        self._starts = self.facts.starts.astype(float)  # (V,) 1 for the tokens that start a note
        self.start_beats, self.end_beats = spec.start_beats, spec.end_beats
        self.tick = 0  # ticks since start_beats
        self.sounding: dict[int, float] = dict(spec.sounding)
        # inherited notes this vocabulary has no OFF for (a model switched in): they end at the start
        self._foreign = sorted(p for p in self.sounding if self.facts.off_id[p] < 0)
        for pitch in self._foreign:
            del self.sounding[pitch]
        self.ending: dict[int, float] = dict(spec.ending)
        self.velocity = spec.velocity
        self.avoid = spec.avoid
        self.max_note_beats = spec.max_note_beats
        self.max_run = 2 * spec.rules.max_polyphony + 2
        self.need_on = spec.first_on
        self.done = False
        self.steps_left = spec.max_steps
        self._run = 0  # events since time last moved
        self._mask = np.empty(len(self.facts.kind), dtype=bool)
        self._shift_ids = np.flatnonzero(self.facts.is_shift)

    def shift(self, beats: float) -> None:
        """Move the whole phrase later (it was not ready in time for its grid point)."""
        self.start_beats += beats
        self.end_beats += beats
        self.sounding = {p: onset + beats for p, onset in self.sounding.items()}
        self.ending = {p: end + beats for p, end in self.ending.items()}
        if self._voicer is not None:
            self._voicer.shift(beats)

    @property
    def frontier_beats(self) -> float:
        """How far the phrase has been generated."""
        return self.start_beats + self.tick / self.facts.tpb

    def run(self, max_steps: int, until_beats: float = math.inf) -> list[GenEvent]:
        """Up to `max_steps` model steps, stopping early at the end or once `until_beats` is reached."""
        events = [GenEvent(self.start_beats, "off", p) for p in self._foreign]
        self._foreign = []
        if self.done:
            return events
        ending = False
        for _ in range(max_steps):
            if self._prefix:
                token = self._prefix.popleft()
                self._remember(token)
                self.logits = self.model.step(token, self.state)
                continue
            if self.frontier_beats >= self.end_beats - 1e-9 or self.steps_left <= 0:
                ending = True
                break
            if self.frontier_beats >= until_beats - 1e-9:
                break
            token = self._next_token()
            self._apply(token, events)
            self._remember(token)
            self.logits = self.model.step(token, self.state)
            self.steps_left -= 1
        if self._voicer is not None:
            events = self._voicer.add(events, self.frontier_beats, self._taken)
        return events + self.finish() if ending else events

    def finish(self) -> list[GenEvent]:
        """End the phrase now: note-offs for what sounds, at min(frontier, end)."""
        at = min(self.frontier_beats, self.end_beats)
        events = [GenEvent(at, "off", p) for p in sorted(self.sounding)]
        self.sounding.clear()
        self.done = True
        return self._voicer.flush(events, self._taken) if self._voicer is not None else events

    def _taken(self) -> set[int]:
        """The pitches the voicer may not use: what the phrase sounds or lets ring, the keys held."""
        return {*self.sounding, *self.ending, *self.avoid}

    def _next_token(self) -> int:
        for pitch, onset in self.sounding.items():
            if self.frontier_beats - onset >= self.max_note_beats - 1e-9 and self.facts.off_id[pitch] >= 0:
                return int(self.facts.off_id[pitch])  # a note held too long ends here
        return self.sampler.sample(self._mixed_logits(), self._build_mask())

    def _mixed_logits(self) -> np.ndarray:
        logits = self.logits
        if self.memory is not None:
            p, depth = self.memory.predict(self._cursor)
            logits = self.blend.mix(logits, p, depth)
        bias = self._density_bias()
        if bias:
            np.multiply(self._starts, bias, out=self._biased)
            if bias > 0 and len(self.sounding) + len(self.ending) >= self.rules.max_polyphony:
                # no room for the next note: ending one of the phrase's own that has sounded half the
                # call's time per note makes it
                held = self.frontier_beats - 0.5 / self.follow.density.notes_per_beat
                for pitch, onset in self.sounding.items():
                    if self.facts.off_id[pitch] >= 0 and self.start_beats <= onset <= held + 1e-9:
                        self._biased[self.facts.off_id[pitch]] = bias
        if self._line is not None:
            if not bias:
                self._biased.fill(0.0)
            bias = self._line.add_bonus(self._biased, len(self.sounding) + len(self.ending),
                                        max((*self.sounding, *self.ending), default=None)) or bias
        if bias:
            logits = np.add(logits, self._biased, out=self._biased)
        return logits

    def _density_bias(self) -> float:
        """A log-odds nudge to every note start: up while the phrase has fewer notes than the
        call's density gives for the time it has covered, down while it has more."""
        target = self.follow.density
        if target is None:
            return 0.0
        elapsed = self.frontier_beats - self.start_beats
        expected = target.notes_per_beat * (elapsed + DENSITY_LEAD_BEATS)
        return float(np.clip(DENSITY_GAIN * (expected - self.notes_started), -DENSITY_MAX_BIAS, DENSITY_MAX_BIAS))

    def _remember(self, token: int) -> None:
        """The memory's cursor follows the phrase (the memory itself learns only what sounds)."""
        if self.memory is not None:
            self.memory.advance(self._cursor, token)

    def _build_mask(self) -> np.ndarray:
        r, t, mask = self.rules, self.facts, self._mask
        now = self.frontier_beats
        for pitch in [p for p, end in self.ending.items() if end <= now + 1e-9]:
            del self.ending[pitch]
        allowed = self.masks.allowed(pitch_range=(r.pitch_lo, r.pitch_hi), pitch_classes=r.pitch_classes,
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
        if self.sounding:  # no time step may carry a note past max_note_beats
            left = min(onset for onset in self.sounding.values()) + self.max_note_beats - now
            mask[self._shift_ids[t.value[self._shift_ids] > max(1, int(left * t.tpb + 1e-9))]] = False
        if self.need_on:
            mask &= t.starts
        elif self._run >= self.max_run:
            mask &= t.is_shift
        return mask

    def _apply(self, token: int, events: list[GenEvent]) -> None:
        kind, value = int(self.facts.kind[token]), int(self.facts.value[token])
        at = self.frontier_beats
        if kind == SHIFT:
            if self._line is not None:
                top = self._line.onset_top
                self._line.moved(top is not None and any(
                    p > top and onset < at - 1e-9 for p, onset in self.sounding.items()))
            self.tick += value
            self._run = 0
        elif kind == VEL and self.facts.bins:
            self.velocity = bin_velocity(value, self.facts.bins)
        elif kind == ON and value not in self.sounding and value not in self.ending:
            self.sounding[value] = at
            self.need_on = False
            self._run += 1
            self.notes_started += 1
            if self._line is not None:
                self._line.started(value)
            dynamics = self.follow.dynamics
            velocity = self.velocity if dynamics is None else dynamics.velocity_at(at, self.follow.beats_per_bar)
            events.append(GenEvent(at, "on", value, velocity))
        elif kind == OFF and value in self.sounding:
            del self.sounding[value]
            self._run += 1
            events.append(GenEvent(at, "off", value))
