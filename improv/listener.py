"""What improv hears of the player, whatever the mode: keys, the call, the key, CCs and settings.

`admit` keeps raw input sane before anything else sees it (a key struck again while down first
ends its earlier strike; a release of a key that is not down is dropped), across every channel.
Of the player's own channel (`output.input_channel`) it keeps the keys held (onset in beats,
velocity), the notes of the current call, a pitch-class histogram for the key lock (Krumhansl-
Schmuckler, `improv.keys`, re-detected between events, never on a note-on), and the settings,
which CCs change while playing. Each note also reaches the model's context (`ModelContext`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from improv.clock import BeatTimeline
from improv.context import ModelContext
from improv.events import Control, NoteOff, NoteOn
from improv.keys import Key, detect_key, parse_key
from improv.errors import ConfigError
from improv.settings import OFF, RESPONSE_LENGTHS, Settings
from improv.tokens import DEFAULT_VELOCITY, Note

KEY_CONFIDENCE = 0.5  # below this a detected key does not lock
ALL_NOTES_OFF_CC = 123
FOLLOW_MAX = 0.9  # the follow CC at 127: the memory's weight (the model keeps a say)
CALL_WINDOW = 64  # the duet closes no calls: it keeps this many recent notes as "the call"


class Listener:
    def __init__(self, settings: Settings, clock: BeatTimeline, context: ModelContext) -> None:
        self.settings = settings
        self.clock = clock
        self.context = context
        self.now = -math.inf  # the latest event or tick (engine clock, s)
        self.held: dict[int, tuple[float, int]] = {}  # the player's keys: pitch -> (onset beats, velocity)
        self.call: list[Note] = []  # the current call's notes, as released
        self.call_start_beats: float | None = None
        self.last_call: list[Note] = []
        self.last_player_beats = -math.inf
        self._down: set[tuple[int, int]] = set()  # every key down on any channel: (channel, pitch)
        self._no_phrase_end: set[int] = set()  # keys held through an end-CC: their release ends nothing
        self._given_key = parse_key(settings.sampling.key) if settings.sampling.key not in ("auto", OFF) else None
        self._key_hist = np.zeros(12)  # (12,) beats per pitch class, decaying
        self._detected: Key | None = None  # `detect_key` of `_key_hist`, while `_key_stale` is False
        self._key_stale = False

    # ------------------------------------------------------------------ input

    def admit(self, event: object) -> list[object]:
        """The event as the modes should see it: a re-strike is preceded by the release of the
        earlier strike, a release of a key not down is dropped."""
        if isinstance(event, NoteOn):
            key = (event.channel, event.pitch)
            restruck = key in self._down
            self._down.add(key)
            return [NoteOff(event.t_s, *key), event] if restruck else [event]
        if isinstance(event, NoteOff):
            key = (event.channel, event.pitch)
            if key not in self._down:
                return []
            self._down.discard(key)
        return [event]

    def keys_down(self, t_s: float) -> list[NoteOff]:
        """Releases for every key down (the input port went away: they will never come)."""
        return [NoteOff(t_s, channel, pitch) for channel, pitch in sorted(self._down)]

    def listens_to(self, channel: int) -> bool:
        return self.settings.output.listens_to(channel)

    def starts_call(self) -> bool:
        return not self.call and not self.held

    def note_on(self, ev: NoteOn) -> None:
        beats = self.clock.beats_at(ev.t_s)
        if ev.pitch in self.held:  # the same pitch on another channel (omni): the first one ends here
            self.release(ev.pitch, beats)
        self.context.note_on(beats, ev.pitch, ev.velocity)
        self.held[ev.pitch] = (beats, ev.velocity)
        self.last_player_beats = beats

    def release(self, pitch: int, beats: float) -> bool:
        """A player key goes up; True if it was part of the current call."""
        self.context.note_off(beats, pitch)
        onset, velocity = self.held.pop(pitch)
        self.last_player_beats = beats
        if pitch in self._no_phrase_end:  # held through an end CC: already part of that call
            self._no_phrase_end.discard(pitch)
            return False
        self.call.append(Note(onset, max(0.0, beats - onset), pitch, velocity))
        self._key_hist[pitch % 12] += max(beats - onset, 1e-3)
        self._key_stale = True
        return True

    def close_call_now(self, beats: float) -> None:
        """The end CC: the keys still held count as notes of this call, ending now."""
        for pitch, (onset, velocity) in self.held.items():
            self.call.append(Note(onset, max(0.0, beats - onset), pitch, velocity))
        self._no_phrase_end |= set(self.held)

    def call_answered(self) -> None:
        """An answer to the call was committed: a new call begins; older calls count less for the key."""
        self.last_call, self.call, self.call_start_beats = self.call, [], None
        self._key_hist *= 0.5

    def slide_window(self) -> None:
        """The duet: no answers close a call, so the call is a window of recent notes."""
        self._key_hist *= 0.97
        del self.call[:-CALL_WINDOW]
        self.last_call = list(self.call)

    def call_velocity(self) -> int:
        """The call's mean velocity (or the held keys'), for a phrase that answers it."""
        velocities = [n.velocity for n in self.call] or [v for _, v in self.held.values()]
        return int(round(sum(velocities) / len(velocities))) if velocities else DEFAULT_VELOCITY

    def shift(self, beats: float) -> None:
        """The grid moved by `beats` (no key is held then)."""
        self.last_player_beats += beats

    # ------------------------------------------------------------------ the key

    @property
    def key(self) -> Key | None:
        """The key the lock uses now (given, or detected with enough confidence), or None."""
        if self.settings.sampling.key == OFF:
            return None
        if self._given_key is not None:
            return self._given_key
        self.detect_key()
        key = self._detected
        return key if key is not None and key.confidence >= KEY_CONFIDENCE else None

    @property
    def key_seen(self) -> Key | None:
        """The key as last detected, detecting nothing (safe from another thread: the view)."""
        if self.settings.sampling.key == OFF:
            return None
        key = self._given_key or self._detected
        return key if key is not None and key.confidence >= KEY_CONFIDENCE else None

    def detect_key(self) -> None:
        """Re-detect the key if the histogram changed (once per change, on a tick)."""
        if self._key_stale and self._given_key is None and self.settings.sampling.key != OFF:
            self._detected, self._key_stale = detect_key(self._key_hist), False

    # ------------------------------------------------------------------ controls

    def control(self, ev: Control) -> str | None:
        """Apply a CC's settings change; returns what the modes must do: "end phrase", "duet",
        "call" (a mode switch), "all off", "model" (a model switch), or None."""
        cc, m = self.settings.cc, self.settings.mode
        action = None
        if ev.control == m.end_cc and ev.value >= 64:
            action = "end phrase"
        if ev.control == cc.temperature:
            self.replace("sampling", temperature=round(0.1 + 1.9 * ev.value / 127, 3))
        if ev.control == cc.response_length:
            index = min(len(RESPONSE_LENGTHS) - 1, ev.value * len(RESPONSE_LENGTHS) // 128)
            self.replace("mode", response_length=RESPONSE_LENGTHS[index])
        if ev.control == cc.follow:
            self.replace("listen", follow=round(FOLLOW_MAX * ev.value / 127, 3))
        if ev.control == cc.model:
            return "model"
        if ev.control == cc.mode:
            return "duet" if ev.value >= 64 else "call"
        if ev.control == ALL_NOTES_OFF_CC:
            return "all off"
        return action

    def remote(self, name: str, value: object) -> str | None:
        """A control from outside MIDI (OSC, `improv.osc`): the setting it changes and what the
        modes must do, as `control`. A bad value raises ConfigError (the settings' own check)."""
        if name == "temperature":
            self.replace("sampling", temperature=value)
        elif name == "follow":
            self.replace("listen", follow=None if value == "auto" else value)
        elif name == "length":
            length = value if isinstance(value, str) else "call" if value == 0 else f"{value} bars"
            self.replace("mode", response_length=length)
        elif name == "mode":
            if value not in ("call", "duet"):
                raise ConfigError(f'mode {value!r}: use "call" or "duet"')
            return str(value)
        return {"end": "end phrase", "panic": "all off", "model": "model"}.get(name)

    def replace(self, section: str, **changes) -> None:
        new = dataclasses.replace(getattr(self.settings, section), **changes)
        self.settings = dataclasses.replace(self.settings, **{section: new})
