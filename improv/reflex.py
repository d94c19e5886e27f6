"""The duet's reflex: a player's note-on answered inside the JACK cycle that brings it in.

With improv's own JACK clients on both ports, the reaction's table (`improv.reaction`), prepared
at the end of each tick, is armed in C (improv/native/jack_reflex.h): the input's process callback
draws the answer as `Reaction.draw_ready` would, and the output writes it at the note-on's own
frame, so no thread wakes and no period passes before it leaves. The engine then reads, with the
note-on, what was played (`take`) and adopts it (the duet's part, the scheduler's holds and its
timing log) instead of drawing a note itself. Anything played that nobody adopts (a mode change
in between, a note-on the engine dropped, shutting down) is released. Elsewhere (rtmidi ports,
the demo) there is no reflex, and the engine draws the reaction at the note as before.
"""

from __future__ import annotations

import ctypes
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from improv.jack_midi import JackMidiClient, _load
from improv.scheduler import Planned, Scheduler

log = logging.getLogger(__name__)

CLASSES, NOTES, TOKENS = 12, 128, 1024  # TOKENS: the largest vocabulary (REFLEX_TOKENS)
SAME_STAMP_S = 1e-9


class Table(ctypes.Structure):
    """reflex_table in jack_reflex.h."""

    _fields_ = [("cum", ctypes.c_double * TOKENS * CLASSES), ("on_id", ctypes.c_int16 * NOTES),
                ("pitch", ctypes.c_int16 * TOKENS), ("is_on", ctypes.c_uint8 * TOKENS), ("size", ctypes.c_int),
                ("velocity", ctypes.c_uint8 * NOTES), ("listen_channel", ctypes.c_int), ("out_channel", ctypes.c_int),
                ("victim", ctypes.c_int), ("victim_until", ctypes.c_double), ("u", ctypes.c_double)]


class _Fired(ctypes.Structure):
    """reflex_fired in jack_reflex.h."""

    _fields_ = [("stamp", ctypes.c_double), ("seq", ctypes.c_ulong), ("struck", ctypes.c_uint8),
                ("pitch", ctypes.c_uint8), ("velocity", ctypes.c_uint8), ("channel", ctypes.c_uint8),
                ("victim", ctypes.c_int8)]


@dataclass(frozen=True)
class Reflexed:
    """A note the reflex played for the player's key `struck` stamped `t_s`: `pitch` at `velocity`
    on `channel`, after letting improv's `victim` go (-1: none)."""

    t_s: float
    struck: int
    pitch: int
    velocity: int
    channel: int
    victim: int

    def plans(self) -> list[Planned]:
        """What it sent, as the scheduler's plans (sent already: `Scheduler.sent_elsewhere`)."""
        on = Planned(self.t_s, "on", self.pitch, self.velocity, self.channel, "duet")
        return [Planned(self.t_s, "off", self.victim, 0, self.channel, "duet"), on] if self.victim >= 0 else [on]

    def release(self, now_s: float) -> Planned:
        """Its note-off, at once (nothing adopted it)."""
        return Planned(now_s, "off", self.pitch, 0, self.channel, "duet")


class Reflex:
    """The reflex between improv's JACK input client and the output port (`improv.midi_port.OpenPort`)."""

    def __init__(self, midi_in: JackMidiClient, port: Any) -> None:
        self._lib = _load()
        self.midi_in, self.port = midi_in, port
        self._linked: Any = None  # the output client linked (the port may reopen with another)
        self._table = Table()
        self._cum = np.ctypeslib.as_array(self._table.cum)  # (12, TOKENS) view of the table
        self._facts: Any = None  # the token facts the table's maps were made from
        self._fired = _Fired()
        self._uploaded: tuple | None = None  # what the armed table was made from
        self._armed = False
        self._scale = -1.0
        self.taken = 0  # notes the reflex played for a note-on the engine read (adopted or released)
        self.last: Reflexed | None = None  # the latest of them
        while self._lib.jm_reflex_fired(ctypes.byref(self._fired)):
            pass  # records of an earlier reflex in this process (its engine released what they played)

    @classmethod
    def between(cls, rt_in: Any, port: Any) -> Reflex | None:
        """A reflex if both ends are improv's JACK clients, else None."""
        if isinstance(rt_in, JackMidiClient) and isinstance(getattr(port, "rt", None), JackMidiClient):
            return cls(rt_in, port)
        return None

    def arm(self, reaction: Any, velocity_scale: float, listen_channel: int | None, out_channel: int,
            victim: int, victim_until_s: float, rng: np.random.Generator) -> None:
        """Arm `reaction`'s prepared table (ready) for the next note-on: improv answers on
        `out_channel` at the player's velocity x `velocity_scale`, letting `victim` go first (-1:
        none) if the note-on comes before `victim_until_s`."""
        if self.port.rt is not self._linked:
            self._linked = self.port.rt
            ordered = self.midi_in.reflex_link(self._linked)
            log.info("duet reflex: %s", {1: "answers in the note's own JACK cycle",
                                         0: "answers at the next JACK cycle's start (a non-realtime server)",
                                         -1: "JACK would not order improv's output after its input; answers "
                                             "at the next cycle's start"}[ordered])
            self._uploaded = None
        key = (reaction.tables, id(reaction), velocity_scale, listen_channel, out_channel, victim, victim_until_s)
        if len(reaction.table()[1].kind) > TOKENS:  # (no shipped model comes near: the engine draws)
            self.disarm()
            return
        if key == self._uploaded:
            self.midi_in.reflex_arm(None)
        else:
            self._fill(reaction, velocity_scale, listen_channel, out_channel, victim, victim_until_s, rng)
            self.midi_in.reflex_arm(self._table)
            self._uploaded = key
        self._armed = True

    def _fill(self, reaction: Any, velocity_scale: float, listen_channel: int | None, out_channel: int,
              victim: int, victim_until_s: float, rng: np.random.Generator) -> None:
        t = self._table
        cum, facts = reaction.table()
        if facts is not self._facts:  # (a model switch: another vocabulary)
            self._facts, size = facts, len(facts.kind)
            t.size = size
            np.ctypeslib.as_array(t.on_id)[:] = facts.on_id
            np.ctypeslib.as_array(t.pitch)[:size] = facts.value
            np.ctypeslib.as_array(t.is_on)[:size] = facts.is_on
        self._cum[:, : t.size] = cum
        if velocity_scale != self._scale:
            self._scale = velocity_scale
            velocity = np.clip(np.round(np.arange(NOTES) * velocity_scale), 1, 127)
            np.ctypeslib.as_array(t.velocity)[:] = velocity
        t.listen_channel = -1 if listen_channel is None else listen_channel
        t.out_channel, t.victim = out_channel, victim
        t.victim_until = victim_until_s if math.isfinite(victim_until_s) else 1e300
        t.u = rng.random()

    def disarm(self) -> None:
        if self._armed:
            self._armed = False
            self._lib.jm_reflex_disarm()

    def take(self, t_s: float, pitch: int, scheduler: Scheduler) -> Reflexed | None:
        """What the reflex played for the note-on of `pitch` stamped `t_s`, just read, taken as
        sent by `scheduler`; None: nothing. What it played for messages read before, which nobody
        took, is released."""
        reads = self.midi_in.reads()
        while self._lib.jm_reflex_peek(ctypes.byref(self._fired)):
            f = self._fired
            if f.seq + 1 < reads:
                self._release(scheduler, self._pop(), t_s)
            elif f.seq + 1 == reads and f.struck == pitch and abs(f.stamp - t_s) < SAME_STAMP_S:
                self._uploaded = None  # spent: a new draw for the next table
                found = self._pop()
                scheduler.sent_elsewhere(found.plans(), found.t_s)
                self.taken += 1
                self.last = found
                return found
            else:
                break
        return None

    def release_stale(self, scheduler: Scheduler, now_s: float) -> None:
        """Between events: release what the reflex played for messages read and handled, which
        nobody took."""
        if not self._lib.jm_reflex_peek(ctypes.byref(self._fired)):
            return  # (the usual case, at every tick: no lock taken)
        reads = self.midi_in.reads()
        while self._lib.jm_reflex_peek(ctypes.byref(self._fired)) and self._fired.seq < reads:
            self._release(scheduler, self._pop(), now_s)

    def close(self, scheduler: Scheduler) -> None:
        """Disarm and unlink; what was played and not taken is taken as sent (to be released by
        the scheduler's panic)."""
        self._armed = False
        self.midi_in.reflex_link(None)  # (which disarms; a closed input was disarmed by its close)
        while self._lib.jm_reflex_peek(ctypes.byref(self._fired)):
            left = self._pop()
            scheduler.sent_elsewhere(left.plans(), left.t_s)

    @staticmethod
    def _release(scheduler: Scheduler, played: Reflexed, now_s: float) -> None:
        scheduler.sent_elsewhere(played.plans(), played.t_s)
        scheduler.add([played.release(now_s)])

    def _pop(self) -> Reflexed:
        self._lib.jm_reflex_fired(ctypes.byref(self._fired))
        f = self._fired
        return Reflexed(f.stamp, f.struck, f.pitch, f.velocity, f.channel, f.victim)
