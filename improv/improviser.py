"""The improviser: the listener, the model's context and the two modes behind one small interface.
Pure decisions: events and the passing of time in, planned MIDI out; no threads, no I/O, no sleeps.

For each player event the engine calls `echo` (the thru echo alone, so it goes out first), then
`react(ev, ready=True)` (the duet's answer to a note-on from the table the last tick prepared),
then `on_event` (O(1): an interruption, a re-plan's cut, a few tokens queued), then `react(ev)`
(the duet's answer computed at the note, when there was no table: still no model step), and `on_tick(now_s)`
whenever `next_wakeup_s()` comes due. The rest of the model work, one cached step per token,
happens in `on_tick`, at most `MAX_STEPS_PER_TICK` steps a call, so a burst of notes or a long
answer never holds up the next event.

The model's context is the whole dialogue: the player's notes and improv's own as they actually
sounded (an interrupted answer only up to the interruption), in time order. Improv's notes are
kept in beats (`improv.parts.Part`) and reach the scheduler only `LOOKAHEAD_S` before they are
due, timed by the clock as it is then: under a followed MIDI clock a tempo change re-times them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from improv.call_response import AnswerRecord, CallAndResponse
from improv.clock import BeatTimeline
from improv.context import Dialogue, ModelContext
from improv.duet import Duet
from improv.events import Control, NoteOff, NoteOn, ProgramChange
from improv.keys import Key
from improv.listener import Listener
from improv.memory import SessionMemory
from improv.note_history import NoteHistory
from improv.performer import Performer
from improv.sampling import Sampler
from improv.scheduler import ALL, Planned
from improv.settings import Settings
from improv.switch import ModelSwitch, Primed, make_slots
from improv.tokens import Note

log = logging.getLogger(__name__)

MAX_STEPS_PER_TICK = 16


class Improviser:
    def __init__(self, model, settings: Settings, beat_clock: BeatTimeline,
                 rng: np.random.Generator | None = None, memory: SessionMemory | None = None,
                 more_models: Sequence = ()) -> None:
        s, listen = settings.sampling, settings.listen
        self.clock = beat_clock
        self.switch = ModelSwitch(make_slots([model, *more_models], listen, memory), listen.own_weight)
        slot = self.switch.playing
        self.model, self.memory, self.blend = slot.model, slot.memory, slot.blend
        self.history = NoteHistory()
        self.context = ModelContext(self.model, self.memory, self.blend, listen.own_weight, self.history)
        self.dialogue = Dialogue(self.context)
        self.listener = Listener(settings, beat_clock, self.context)
        self.rng = rng if rng is not None else np.random.default_rng(s.seed)
        self.sampler = Sampler(s.temperature, s.top_k, s.top_p, self.rng)
        self.performer = Performer(self.model, self.listener, self.dialogue, self.sampler)
        self.call = CallAndResponse(self.listener, self.dialogue, self.performer)
        self.duet = Duet(self.listener, self.dialogue, self.performer)

    # ------------------------------------------------------------------ views

    @property
    def settings(self) -> Settings:
        return self.listener.settings

    @property
    def mode(self) -> str:
        return self.settings.mode.mode

    @property
    def state(self) -> str:
        """"listening" | "waiting" (an answer is being prepared) | "responding" | "duet"."""
        return "duet" if self.mode == "duet" else self.call.state

    @property
    def key(self) -> Key | None:
        return self.listener.key

    @property
    def last_call(self) -> list[Note]:
        return self.listener.last_call

    @property
    def last_response(self) -> list[Note]:
        """The last answer as notes (beats), or the duet's recent line."""
        return self.performer.shown

    @property
    def responses(self) -> int:
        return self.call.responses

    @property
    def answers(self) -> list[AnswerRecord]:
        return self.call.answers

    @property
    def grid_follows_call(self) -> bool:
        return self.call.grid_follows_call

    @property
    def grid_origin_s(self) -> float | None:
        return self.call.grid_origin_s

    @property
    def phrase_end_s(self) -> float | None:
        end = self.call.phrase_end_beats
        return None if end is None else self.clock.time_at(end)

    @property
    def model_name(self) -> str:
        """The model playing (and the one coming, during a switch)."""
        return self.switch.label()

    @property
    def following(self) -> float | None:
        """How much the answers follow the session memory now (0..1), None without one."""
        return None if self.blend is None else self.blend.following

    def listens_to(self, channel: int) -> bool:
        return self.listener.listens_to(channel)

    # ------------------------------------------------------------------ events

    def echo(self, event) -> list[Planned]:
        """The thru echo of a player's note (`output.thru`), handed to the scheduler before
        `on_event` does anything else. Reads the state; changes nothing."""
        if not self.settings.output.thru or not isinstance(event, (NoteOn, NoteOff)) \
                or not self.listens_to(event.channel):
            return []
        return thru_echo(event, max(self.listener.now, event.t_s), self._channel, event.pitch in self.listener.held)

    def on_event(self, event) -> list[Planned]:
        if isinstance(event, (NoteOn, NoteOff, Control, ProgramChange)) and not self.listens_to(event.channel):
            return []
        self.duet.heard_something()
        self.listener.now = max(self.listener.now, event.t_s)
        if isinstance(event, NoteOn):
            return self._player_on(event)
        if isinstance(event, NoteOff):
            return self._player_off(event)
        if isinstance(event, Control):
            return self._control(event)
        if isinstance(event, ProgramChange):
            self.select_model(event.program)
        return []

    def react(self, event, ready: bool = False, reflexed=None) -> list[Planned]:
        """Duet: a player's note-on gets one note due at its instant (`Duet.react`), `ready`
        (before `on_event`) or not (after); `reflexed`: the one the reflex played (`improv.reflex`)."""
        if self.mode != "duet" or not isinstance(event, NoteOn) or not self.listens_to(event.channel):
            return []
        return self.duet.react(event, ready, reflexed)

    def _player_on(self, ev: NoteOn) -> list[Planned]:
        now = self.listener.now
        plans = self.duet.replan(now) if self.mode == "duet" else self.call.before_note_on(now)
        self.dialogue.heard_until(self.clock.beats_at(now))
        if self.listener.starts_call():
            if self.mode == "call":
                self.call.start_call(ev.t_s)
            self.listener.call_start_beats = self.clock.beats_at(ev.t_s)
        self.listener.note_on(ev)
        if self.mode == "duet":
            self.duet.after_note_on(ev)
        return plans

    def _player_off(self, ev: NoteOff) -> list[Planned]:
        if ev.pitch not in self.listener.held:
            return []  # its note-on came before we listened
        plans = self.duet.replan(self.listener.now) if self.mode == "duet" else []
        self.dialogue.heard_until(self.clock.beats_at(self.listener.now))
        in_call = self.listener.release(ev.pitch, self.clock.beats_at(ev.t_s))
        if self.mode == "call":
            self.call.after_note_off(ev, in_call)
        elif in_call:
            self.listener.slide_window()
        return plans

    def _control(self, ev: Control) -> list[Planned]:
        return self._act(self.listener.control(ev), ev.value * len(self.switch.slots) // 128)

    def remote(self, name: str, value: object, now_s: float) -> list[Planned]:
        """A control from outside MIDI (OSC): as its CC would be. ConfigError on a bad value."""
        self.duet.heard_something()
        self.listener.now = max(self.listener.now, now_s)
        return self._act(self.listener.remote(name, value), value)

    def _act(self, action: str | None, model: object = None) -> list[Planned]:
        """Apply what a control asked: the settings to the sampler and the blend, then `action`."""
        self.sampler.temperature = self.settings.sampling.temperature
        if self.blend is not None:
            self.blend.memory_weight = self.settings.listen.follow
        if action == "end phrase" and self.mode == "call":
            self.call.end_phrase_now()
        elif action in ("call", "duet"):
            return self.set_mode(action, self.listener.now)
        elif action == "all off":
            return self.all_off(self.listener.now)
        elif action == "model":
            self.select_model(model)
        return []

    def set_mode(self, mode: str, now_s: float) -> list[Planned]:
        """Switch call/duet; releases what improv sounds."""
        if mode == self.mode:
            return []
        plans = self.all_off(now_s, thru=False)
        self.listener.replace("mode", mode=mode)
        return plans

    def select_model(self, index: int | str) -> None:
        """Switch to the model at `index` (0-based) of those loaded, or named so: primed off this
        thread, it takes over at a tick (`_take_over`); no such model is one log line."""
        why = self.switch.select(index, self.history)
        if why is not None:
            log.warning("model switch: %s", why)

    def _take_over(self, primed: Primed, now_s: float) -> list[Planned]:
        """The primed model plays from here: the call's next answer (one being prepared is made
        again from it), or the duet's line from a re-plan. Nothing sounding is cut."""
        plans = self.duet.replan(now_s) if self.mode == "duet" else []
        self.call.pending = None
        slot, context = self.switch.slots[primed.index], primed.context
        if not primed.learn:
            self.context.catch_up(self.context.queued)  # the shared memory hears all there is first
        self.context.seal()
        self.context.learn()
        context.memory, context.blend = slot.memory, slot.blend
        if slot.blend is not None:  # the follow CC's setting holds for every model
            slot.blend.memory_weight = self.settings.listen.follow
        context.learn_heard(primed.heard)
        context.shift(self.history.shifted - primed.shifted)  # the grid moved while it primed
        context.history = self.history
        for note in self.history.since(primed.count):  # heard while it primed
            context.replay(note, primed.learn)
        self.model, self.memory, self.blend, self.context = slot.model, slot.memory, slot.blend, context
        self.dialogue.context = self.listener.context = context
        self.performer.use(slot.model)
        self.duet.use(self.performer.facts)
        self.switch.taken_over(primed)
        return plans

    @property
    def _channel(self) -> int:
        return self.settings.output.channel - 1

    # ------------------------------------------------------------------ time

    def on_tick(self, now_s: float) -> list[Planned]:
        self.listener.now = max(self.listener.now, now_s)
        now = self.listener.now
        self.duet.heard_something(tick=True)
        primed = self.switch.poll()
        plans = self._take_over(primed, now) if primed is not None else []
        self.dialogue.heard_until(self.clock.beats_at(now))
        budget = MAX_STEPS_PER_TICK - self.context.catch_up(MAX_STEPS_PER_TICK)
        plans += self.duet.tick(budget) if self.mode == "duet" else self.call.tick(budget)
        self.listener.detect_key()  # a changed key is detected here, between events, not on a note-on
        plans += self.call.release_due(now) + self.duet.release_due(now)
        self.duet.prepare(self.mode == "duet")
        return plans

    def learn(self) -> list[Planned]:
        """The memory's lessons put off (`ModelContext.learn`), once the input's plans went out."""
        self.context.learn()
        return []

    def next_wakeup_s(self) -> float | None:
        """When `on_tick` has something to do: now if model work is pending, else the next deadline."""
        if not self.context.ready or self.call.busy() or self.duet.busy(self.mode == "duet") \
                or self.switch.due():
            return self.listener.now
        times = [t for t in (*self.duet.wakeups(), *self.call.wakeups()) if t is not None]
        return min(times) if times else None

    def measured_tick(self, elapsed_s: float, steps: int) -> None:
        """The engine's wall time for one `on_tick` and the model steps it took (the duet's guard)."""
        self.duet.guard.measured(elapsed_s, steps)

    def all_off(self, now_s: float, thru: bool = True) -> list[Planned]:
        """Release everything improv sounds (and the thru notes): stop, signal, mode switch, error."""
        self.listener.now = max(self.listener.now, now_s)
        plans = [Planned(-math.inf, "cancel", source=ALL)] if thru else [
            Planned(-math.inf, "cancel", source="response"), Planned(-math.inf, "cancel", source="duet")]
        plans += self.call.stop(now_s)
        plans += self.duet.stop(now_s)
        if thru and self.settings.output.thru:
            plans += [Planned(now_s, "off", p, 0, self._channel, "thru") for p in self.listener.held]
        self.dialogue.stopped_at(self.clock.beats_at(now_s))
        return plans


def thru_echo(event: NoteOn | NoteOff, now_s: float, channel: int, held: bool) -> list[Planned]:
    """The echo of a player's note on improv's channel, due now; a note-on of a pitch `held`
    already (from another channel, omni) ends that one's echo first."""
    off = Planned(now_s, "off", event.pitch, 0, channel, "thru")
    if isinstance(event, NoteOff):
        return [off]
    on = Planned(now_s, "on", event.pitch, event.velocity, channel, "thru")
    return [off, on] if held else [on]
