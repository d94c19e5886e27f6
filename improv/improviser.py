"""Pure decisions: events and the passing of time in, planned MIDI out. No threads, no I/O, no sleeps.

The engine calls `echo(event)` and `on_event(event)` for each player event, then `react()`, and
`on_tick(now_s)` whenever `next_wakeup_s()` comes due (or after events); all return `Planned`
notes for the scheduler. `echo` is the thru echo alone, so it goes out first; `on_event` is O(1) -
interruption, a re-plan's cut, a few tokens queued - so its plans go out before any model work.
`react()` is the duet's immediate answer to the note-ons just seen: the player's tokens stepped
(one cached step each) and one note sampled, due at once. The
rest of the model work (one cached step per token) happens in `on_tick`, at most
`max_steps_per_tick` steps per call, so a burst of notes or a long answer never holds up the next
event. (`on_tick` first does any `react()` a caller left pending.)

Call and response (mode "call"):
  listening -> (last key released) waiting -> (phrase end) responding -> listening.
  A phrase ends after `silence_beats` of silence with no key held, or at once on the end CC.
  The answer is PREPARED as soon as the silence starts: the context is forked (`state.copy()`),
  the gap up to the answer's start becomes SHIFT tokens, and the answer is sampled while the
  player is (probably) done, so at the phrase end it is committed with its first note due
  exactly on the next beat (or bar) grid point - never later than the grid because the model
  was slow. It lasts as long as the call (in whole grid units) or the set length. A player note
  before the phrase end discards the speculation; a player note during the answer interrupts it:
  a ``cancel`` plan (the scheduler drops the unsent rest and releases what it sent) plus note-offs
  for what sounds - unless `overlap`, when the answer plays on.
Duet (mode "duet", `improv.duet`): from the player's first note on, a generator plans
  `duet_horizon_beats` ahead from a fork of the context; each player note re-plans from
  `now + ` a guard (at least `replan_guard_s`; see `improv.duet.ReplanGuard`), keeping the notes already started with their planned ends. With
  `duet_react` (the default) each player note-on is also answered at once by one note the model
  picks to sound with it (`react`; its end is the duet's continuation, see improv.duet).

The model's context is the whole dialogue: the player's notes and improv's own notes as they
actually sounded (an interrupted answer only up to the interruption), in time order. So an answer
knows the previous answers, and the duet hears both parts.

Improv's notes are kept in beats (`improv.plans.Part`) and reach the scheduler only
`LOOKAHEAD_S` before they are due, timed by the clock as it is then: under a followed MIDI clock a
tempo change re-times the rest of an answer.

The grid: all times are seconds on the engine clock; beats come from `beat_clock` (a `BeatClock`
or a `MidiClockFollower`). When something audible defines the beat (a metronome, clock out, MIDI
clock) answers land on that clock's grid. Otherwise (`TimeSettings.grid_follows_call`) the player
defines it: the first note of a call made while improv is idle (at start, after an answer ended,
after all-off) becomes a bar line - the internal clock is moved there (`BeatClock.anchor_at`) and
every beat position kept here shifts with it - so the answer starts on the beat (or bar) counted
from the call's first note. A note that interrupts an answer keeps the grid it was played against.
`answers` keeps where each answer was put (`AnswerRecord`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from improv.clock import BeatTimeline, next_grid_beats
from improv.duet import Duet
from improv.events import Control, NoteOff, NoteOn
from improv.keys import Key, detect_key, parse_key
from improv.phrase import Dialogue, GenEvent, MaskRules, ModelContext, PhraseGenerator, TimedModel, TokenTable
from improv.plans import LOOKAHEAD_S, Part, Planned
from improv.sampling import Sampler
from improv.settings import RESPONSE_LENGTHS, OFF, Settings
from improv.tokens import DEFAULT_VELOCITY, Note

__all__ = ["ALL", "LOOKAHEAD_S", "Answer", "AnswerRecord", "Improviser", "Planned"]

ALL = "*"  # the source of a cancel that means every source
KEY_CONFIDENCE = 0.5  # below this a detected key does not lock
ALL_NOTES_OFF_CC = 123
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

    grid_origin_s: float | None  # a bar line of the grid it is on (see `Improviser.grid_origin_s`)
    phrase_end_s: float
    start_s: float  # its first grid point: where its first note is due
    start_beats: float


class Improviser:
    def __init__(self, model, settings: Settings, beat_clock: BeatTimeline, sampler: Sampler | None = None,
                 rng: np.random.Generator | None = None, *, max_steps_per_tick: int = 16,
                 commit_lead_s: float = 0.005, replan_guard_s: float = 0.005) -> None:
        self.settings = settings
        self.clock = beat_clock
        s = settings.sampling
        self.rng = rng if rng is not None else np.random.default_rng(s.seed)
        self.sampler = sampler or Sampler(s.temperature, s.top_k, s.top_p, self.rng)
        self.model = TimedModel(model)
        self.table = TokenTable(model.vocab)
        self.context = ModelContext(self.model)
        self.dialogue = Dialogue(self.context)
        self.max_steps_per_tick = max_steps_per_tick
        self.commit_lead_s = commit_lead_s
        self.replan_guard_s = replan_guard_s
        self._given_key = parse_key(s.key) if s.key not in ("auto", OFF) else None
        self._key_hist = np.zeros(12)
        self._now = -math.inf
        self._held: dict[int, tuple[float, int]] = {}  # player's keys: pitch -> (onset beats, velocity)
        self._call: list[Note] = []
        self._call_start_beats: float | None = None
        self._call_end_beats: float | None = None
        self._no_phrase_end: set[int] = set()  # keys held through an end-CC: their release ends nothing
        self._phrase_end_beats: float | None = None
        self._pending: Answer | None = None
        self._answer: Answer | None = None
        self._duet = Duet(beat_clock, self.dialogue, self._channel, replan_guard_s, self.table)
        self._reactions: deque[NoteOn] = deque(maxlen=16)  # duet note-ons `react` has yet to answer
        self._detected: Key | None = None  # `detect_key` of `_key_hist`, while `_key_stale` is False
        self._key_stale = False
        self._last_player_beats = -math.inf
        self._duet_armed = False  # the player has played since the last all_off (`_duet_wanted`)
        self._grid_free = True  # idle since the last answer: the next call may move the grid
        self.grid_anchor_s: float | None = None  # the call's first note that set the grid
        self.answers: deque[AnswerRecord] = deque(maxlen=64)
        self.last_call: list[Note] = []
        self._last_response: list[Note] = []
        self._duet_view: tuple[Part, float] | None = None  # (part, frontier beats): see last_response
        self.responses = 0  # answers committed so far

    # ------------------------------------------------------------------ views

    @property
    def last_response(self) -> list[Note]:
        """The last answer as notes (beats), or the duet's recent line. The duet's is made when
        asked (the view, a few times a second), not on every tick: it cost 0.2 ms a tick, ~10 %
        of the engine's time in a busy duet, on the path of the next reaction."""
        if self._duet_view is not None:
            part, end_beats = self._duet_view
            return part.notes(end_beats, last=64)
        return self._last_response

    @last_response.setter
    def last_response(self, notes: list[Note]) -> None:
        self._last_response, self._duet_view = notes, None

    @property
    def state(self) -> str:
        """"listening" | "waiting" (silence: an answer is being prepared) | "responding" | "duet"."""
        if self.settings.mode.mode == "duet":
            return "duet"
        if self._answer is not None:
            return "responding"
        if self._phrase_end_beats is not None:
            return "waiting"
        return "listening"

    @property
    def mode(self) -> str:
        return self.settings.mode.mode

    @property
    def step_times_ms(self) -> list[float]:
        return list(self.model.times_ms)

    @property
    def key(self) -> Key | None:
        """The key the lock uses now (given, or detected with enough confidence), or None."""
        if self.settings.sampling.key == OFF:
            return None
        if self._given_key is not None:
            return self._given_key
        self._detect_key()
        key = self._detected
        return key if key is not None and key.confidence >= KEY_CONFIDENCE else None

    def _detect_key(self) -> None:
        """Re-detect the key if the histogram changed (~1.6 ms: once per change, on a tick,
        never per note-on; scaling the histogram leaves the key alone)."""
        if self._key_stale and self._given_key is None and self.settings.sampling.key != OFF:
            self._detected, self._key_stale = detect_key(self._key_hist), False

    @property
    def phrase_end_s(self) -> float | None:
        return None if self._phrase_end_beats is None else self.clock.time_at(self._phrase_end_beats)

    @property
    def grid_follows_call(self) -> bool:
        return self.settings.time.grid_follows_call and hasattr(self.clock, "anchor_at")

    @property
    def grid_origin_s(self) -> float | None:
        """A bar line of the grid answers start on (seconds): the first note of the call that set
        it when the grid follows the call (None before the first call), else the clock's beat 0."""
        return self.grid_anchor_s if self.grid_follows_call else self.clock.time_at(0.0)

    # ------------------------------------------------------------------ events

    def on_event(self, event) -> list[Planned]:
        if isinstance(event, (NoteOn, NoteOff, Control)) and not self.listens_to(event.channel):
            return []
        self._now = max(self._now, event.t_s)
        if isinstance(event, NoteOn):
            return self._player_on(event)
        if isinstance(event, NoteOff):
            return self._player_off(event)
        if isinstance(event, Control):
            return self._control(event)
        return []

    def listens_to(self, channel: int) -> bool:
        """Whether events on this (0-based) channel are the player's (`output.input_channel`)."""
        wanted = self.settings.output.input_channel
        return wanted is None or channel == wanted - 1

    def echo(self, event) -> list[Planned]:
        """The thru echo of a player's note (`output.thru`), handed to the scheduler before
        `on_event` does anything else (measured in process, bach-lstm duet: the echo waited
        0.2 ms p50 for the re-plan and the context update). Reads the state; changes nothing."""
        if not self.settings.output.thru or not isinstance(event, (NoteOn, NoteOff)) \
                or not self.listens_to(event.channel):
            return []
        now = max(self._now, event.t_s)
        off = Planned(now, "off", event.pitch, 0, self._channel, "thru")
        if isinstance(event, NoteOff):
            return [off]
        # a key struck again without a release: its echo ends before it sounds again
        on = Planned(now, "on", event.pitch, event.velocity, self._channel, "thru")
        return [off, on] if event.pitch in self._held else [on]

    def _player_on(self, ev: NoteOn) -> list[Planned]:
        plans: list[Planned] = []
        if self.mode == "duet":
            plans += self._duet.replan(self._now, self.model.steps)
        elif self._answer is not None and not self.settings.mode.overlap:
            plans += self._interrupt(self._now)
        self._set_phrase_end(None)
        self.dialogue.heard_until(self.clock.beats_at(self._now))
        if not self._call and not self._held:
            self._start_call(ev.t_s)
        beats = self.clock.beats_at(ev.t_s)
        if ev.pitch in self._held:  # re-struck without a release: the first one ends here
            self._release(ev.pitch, beats)
        self.context.note_on(beats, ev.pitch, ev.velocity)
        self._held[ev.pitch] = (beats, ev.velocity)
        self._last_player_beats = beats
        self._duet_armed = True
        if self.mode == "duet" and self.settings.mode.duet_react:
            self._reactions.append(ev)
        return plans

    def react(self) -> list[Planned]:
        """Duet: for each player note-on since the last call, one note due now, chosen by the
        model to sound with it (`improv.duet.Duet.react`). The engine calls this right after
        handing over `on_event`'s plans; model work: the queued tokens, one sample."""
        plans: list[Planned] = []
        while self._reactions:
            ev = self._reactions.popleft()
            plans += self._duet.react(self._now, self.sampler, self._rules(), self._held.keys(), ev.velocity)
        return plans

    def _player_off(self, ev: NoteOff) -> list[Planned]:
        plans: list[Planned] = []
        if ev.pitch not in self._held:
            return plans  # its note-on came before we listened
        if self.mode == "duet":
            plans += self._duet.replan(self._now, self.model.steps)
        self.dialogue.heard_until(self.clock.beats_at(self._now))
        beats = self.clock.beats_at(ev.t_s)
        if self._release(ev.pitch, beats) and not self._held and self.mode == "call":
            self._call_end_beats = beats
            self._set_phrase_end(beats + self.settings.mode.silence_beats)
        return plans

    def _start_call(self, t_s: float) -> None:
        """The first note of a call; if improv is idle and the grid follows the call, it becomes a
        bar line: the clock moves there and every beat position kept shifts with it."""
        if self._grid_free and self._answer is None and self.mode == "call" and self.grid_follows_call:
            old = self.clock.beats_at(t_s)
            new = next_grid_beats(old, float(self.settings.mode.beats_per_bar))
            if new - old > 1e-9:  # (a note already on a bar line leaves the clock alone)
                self.clock.anchor_at(t_s, new)
                self.context.shift(new - old)
                self.dialogue.shift(new - old)
                self._last_player_beats += new - old  # (call mode: no duet plans to move)
            self._grid_free, self.grid_anchor_s = False, t_s
        self._call_start_beats = self.clock.beats_at(t_s)

    def _release(self, pitch: int, beats: float) -> bool:
        """A player key goes up; True if it was part of the current call."""
        self.context.note_off(beats, pitch)
        onset, velocity = self._held.pop(pitch)
        self._last_player_beats = beats
        if pitch in self._no_phrase_end:  # held through an end CC: already part of that call
            self._no_phrase_end.discard(pitch)
            return False
        self._call.append(Note(onset, max(0.0, beats - onset), pitch, velocity))
        self._key_hist[pitch % 12] += max(beats - onset, 1e-3)
        self._key_stale = True
        if self.mode == "duet":  # no answers to close a call: keep a window of recent notes
            self._key_hist *= 0.97
            del self._call[:-64]
            self.last_call = list(self._call)
        return True

    def _set_phrase_end(self, beats: float | None) -> None:
        """A new (or no) phrase end: any answer prepared for another one is void."""
        self._phrase_end_beats, self._pending = beats, None

    def _control(self, ev: Control) -> list[Planned]:
        cc, m = self.settings.cc, self.settings.mode
        if ev.control == m.end_cc and ev.value >= 64:
            self._end_phrase_now()
        if ev.control == cc.temperature:
            self._set_temperature(0.1 + 1.9 * ev.value / 127)
        if ev.control == cc.response_length:
            index = min(len(RESPONSE_LENGTHS) - 1, ev.value * len(RESPONSE_LENGTHS) // 128)
            self._replace("mode", response_length=RESPONSE_LENGTHS[index])
        if ev.control == cc.mode:
            return self.set_mode("duet" if ev.value >= 64 else "call", self._now)
        if ev.control == ALL_NOTES_OFF_CC:
            return self.all_off(self._now)
        return []

    # ------------------------------------------------------------------ settings changes

    def set_mode(self, mode: str, now_s: float) -> list[Planned]:
        """Switch call/duet; releases what improv sounds."""
        if mode == self.mode:
            return []
        plans = self.all_off(now_s, thru=False)
        self._replace("mode", mode=mode)
        return plans

    def _set_temperature(self, temperature: float) -> None:
        self._replace("sampling", temperature=round(temperature, 3))
        self.sampler.temperature = self.settings.sampling.temperature

    def _replace(self, section: str, **changes) -> None:
        new = dataclasses.replace(getattr(self.settings, section), **changes)
        self.settings = dataclasses.replace(self.settings, **{section: new})

    @property
    def _channel(self) -> int:
        return self.settings.output.channel - 1

    # ------------------------------------------------------------------ time

    def on_tick(self, now_s: float) -> list[Planned]:
        self._now = max(self._now, now_s)
        plans = self.react()
        self.dialogue.heard_until(self.clock.beats_at(self._now))
        budget = self.max_steps_per_tick - self.context.catch_up(self.max_steps_per_tick)
        plans += self._tick_duet(budget) if self.mode == "duet" else self._tick_call(budget)
        self._detect_key()  # a changed key is detected here, between events, not on a note-on
        if self._answer is not None:
            plans += self._answer.part.release_due(self.clock, self._now)
        return plans + self._duet.part.release_due(self.clock, self._now)

    def next_wakeup_s(self) -> float | None:
        """When `on_tick` has something to do: now if model work is pending, else the next deadline."""
        if self._busy():
            return self._now
        times = self._duet.wakeups(self.settings.mode.duet_horizon_beats)
        if self._answer is not None:
            times += [self.clock.time_at(self._answer.end_beats), self._answer.part.next_release_s(self.clock)]
        elif self._phrase_end_beats is not None:  # (with overlap, the next answer waits for this one)
            times.append(self.clock.time_at(self._phrase_end_beats) - self.commit_lead_s)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def _busy(self) -> bool:
        if not self.context.ready:
            return True
        if self._answer is not None and self._answer.gen is not None and not self._answer.gen.done:
            return True
        p = self._pending
        if p is not None and (p.gen is None or not p.gen.done):
            return True
        if self.mode == "duet" and self._duet.gen is None and self._duet_wanted():
            return True
        return self._duet.behind(self._duet_until())

    # ------------------------------------------------------------------ call and response

    def _tick_call(self, budget: int) -> list[Planned]:
        a = self._answer
        if a is not None and a.gen is not None and not a.gen.done:
            budget -= self._generate(a.gen, a.part, budget)
        plans = self._finish_answer()
        if self._phrase_end_beats is not None and self._pending is None:
            self._pending = self._new_answer()
        p = self._pending
        if p is not None:
            if p.gen is None and self.context.ready:
                p.gen = self._fork(p.start_beats, p.end_beats, first_on=True, sounding=None)
            if p.gen is not None and not p.gen.done and budget > 0:
                p.buffer += p.gen.run(budget)
            plans += self._maybe_commit(p)
        return plans

    def _new_answer(self) -> Answer:
        m = self.settings.mode
        end = self._phrase_end_beats
        call_end = self._call_end_beats if self._call_end_beats is not None else end
        call_beats = max(0.0, call_end - (self._call_start_beats if self._call_start_beats is not None else call_end))
        after = max(end, self._answer.end_beats if self._answer is not None else end)
        start = next_grid_beats(after, m.grid_beats)
        return Answer(start, start + m.response_beats(call_beats), Part("response", self._channel))

    def _maybe_commit(self, p: Answer) -> list[Planned]:
        now = self._now
        if now < self.clock.time_at(self._phrase_end_beats) - self.commit_lead_s or self._answer is not None:
            return []
        ready = bool(p.buffer) or (p.gen is not None and p.gen.done)
        if not ready or now > self.clock.time_at(p.start_beats) + LATE_START_S:
            if now >= self.clock.time_at(p.start_beats) - self.commit_lead_s:
                self._postpone(p)  # not ready, or woken too late: start on a later grid point, never late
            if not ready:
                return []
        self.answers.append(AnswerRecord(self.grid_origin_s, self.clock.time_at(self._phrase_end_beats),
                                         self.clock.time_at(p.start_beats), p.start_beats))
        self._answer, self._pending, self._phrase_end_beats = p, None, None
        p.committed = True
        self.responses += 1
        self.last_call, self._call, self._call_start_beats = self._call, [], None
        self._key_hist *= 0.5  # older calls count less for the key
        events, p.buffer = p.buffer, []
        self._queue(p.part, events)
        return []

    def _postpone(self, p: Answer) -> None:
        grid, shift = self.settings.mode.grid_beats, 0.0
        while self.clock.time_at(p.start_beats + shift) < self._now + self.commit_lead_s:
            shift += grid
        p.start_beats += shift
        p.end_beats += shift
        p.buffer = [dataclasses.replace(e, beats=e.beats + shift) for e in p.buffer]
        if p.gen is not None:
            p.gen.shift(shift)

    def _finish_answer(self) -> list[Planned]:
        a = self._answer
        if a is None or self._now < self.clock.time_at(a.end_beats) - 1e-9:
            return []
        if a.gen is not None and not a.gen.done:  # generation fell behind: end it now
            self._queue(a.part, a.gen.finish())
        plans = a.part.release(self.clock, math.inf)  # what is left ends by now
        self.last_response = a.part.notes(self.clock.beats_at(self._now))
        self._answer, self._grid_free = None, True
        return plans

    def _interrupt(self, now_s: float) -> list[Planned]:
        a, self._answer = self._answer, None
        plans = [Planned(-math.inf, "cancel", source="response"), *a.part.stop(now_s)]
        self.last_response = a.part.notes(self.clock.beats_at(now_s), played_by_s=now_s)
        self.dialogue.stopped_at(self.clock.beats_at(now_s))
        return plans

    def _end_phrase_now(self) -> None:
        if self.mode != "call" or not (self._call or self._held):
            return
        beats = self.clock.beats_at(self._now)
        for pitch, (onset, velocity) in self._held.items():
            self._call.append(Note(onset, max(0.0, beats - onset), pitch, velocity))
        self._no_phrase_end |= set(self._held)
        self._call_end_beats = beats
        self._set_phrase_end(beats)  # the answer starts on the next grid point

    # ------------------------------------------------------------------ duet

    def _duet_until(self) -> float:
        return self.clock.beats_at(self._now) + self.settings.mode.duet_horizon_beats

    def _duet_wanted(self) -> bool:
        """While the player plays, and `max_response_beats` after; never between an `all_off`
        (a Stop, a lost clock, a mode switch, an error) and the player's next note: a duet that
        was stopped must not start again by itself (after a lost clock it did, 5 ms later, and
        played on at the clock's last tempo)."""
        if not self._duet_armed:
            return False
        since = self.clock.beats_at(self._now) - self._last_player_beats
        return bool(self._held) or since <= self.settings.mode.max_response_beats

    def _tick_duet(self, budget: int) -> list[Planned]:
        d = self._duet
        if d.gen is None:
            if not (self.context.ready and self._duet_wanted()):
                return []
            reserve = 1 if self.settings.mode.duet_react else 0  # a voice kept free for the reaction
            d.begin(self._now, lambda start, sounding, ending: self._fork(
                start, math.inf, first_on=False, sounding=sounding, ending=ending, reserve=reserve),
                self.model.steps)
        if not self._duet_wanted() and not d.gen.done:
            self._queue(d.part, d.gen.finish())
        elif budget > 0 and self._generate(d.gen, d.part, budget, self._duet_until()):
            self._duet_view = (d.part, d.gen.frontier_beats)
            d.generated(self.model.steps)
        return []

    def measured_tick(self, elapsed_s: float, steps: int) -> None:
        """The engine's wall time for one `on_tick` and the model steps it took (the duet's guard)."""
        self._duet.guard.measured(elapsed_s, steps)

    # ------------------------------------------------------------------ shared

    def all_off(self, now_s: float, thru: bool = True) -> list[Planned]:
        """Release everything improv sounds (and the thru notes): stop, signal, mode switch, error."""
        self._now = max(self._now, now_s)
        plans = [Planned(-math.inf, "cancel", source=ALL)] if thru else [
            Planned(-math.inf, "cancel", source="response"), Planned(-math.inf, "cancel", source="duet")]
        if self._answer is not None:
            plans += self._answer.part.stop(now_s)
            self.last_response = self._answer.part.notes(self.clock.beats_at(now_s), played_by_s=now_s)
        plans += self._duet.stop(now_s)
        if thru and self.settings.output.thru:
            plans += [Planned(now_s, "off", p, 0, self._channel, "thru") for p in self._held]
        self._answer, self._grid_free = None, True
        self._reactions.clear()
        self._duet_armed = False
        self._set_phrase_end(None)
        self.dialogue.stopped_at(self.clock.beats_at(now_s))
        return plans

    def _fork(self, start: float, end: float, *, first_on: bool, sounding: dict | None,
              ending: dict | None = None, reserve: int = 0) -> PhraseGenerator:
        """A generator from `start`; it starts no note while `max_polyphony - reserve` sound."""
        self.dialogue.heard_until(self.clock.beats_at(self._now))
        rules = self._rules(reserve)
        velocities = [n.velocity for n in self._call] or [v for _, v in self._held.values()]
        velocity = int(round(sum(velocities) / len(velocities))) if velocities else DEFAULT_VELOCITY
        fork = self.context.fork(start)
        return PhraseGenerator(self.model, self.table, self.sampler, fork, start, end, rules=rules,
                               first_on=first_on, sounding=sounding, ending=ending, velocity=velocity,
                               avoid=self._held.keys(),
                               max_steps=int(64 * min(end - start, 64) + 64) if end < math.inf else 10**12)

    def _rules(self, reserve: int = 0) -> MaskRules:
        s = self.settings.sampling
        key = self.key
        return MaskRules(s.pitch_lo, s.pitch_hi, max(1, s.max_polyphony - reserve),
                         key.pitch_classes if key else None)

    def _generate(self, gen: PhraseGenerator, part: Part, budget: int, until_beats: float = math.inf) -> int:
        """Run `gen` for up to `budget` steps into `part`; returns the model steps it took."""
        steps = self.model.steps
        self._queue(part, gen.run(budget, until_beats=until_beats))
        return self.model.steps - steps

    def _queue(self, part: Part, events: list[GenEvent]) -> None:
        part.add(events)
        for ev in events:
            self.dialogue.planned(ev)
        part.prune(self._now)
