"""The output side: send messages to a port and own the set of sounding notes.

`NoteTracker` counts holders per (channel, pitch): a note-on on a pitch that already sounds first
sends its note-off (the synth hears one voice, re-struck), and the note-off that the synth hears
is sent only when the last holder lets go; a note-off for a pitch that is not sounding is dropped.
So every note-on sent is followed by exactly one note-off, whatever order plans arrive in.

A port with `send_at(msg, due_s)` and `lead_s()` (improv's JACK client, through `OpenPort`) is
sample-accurate: the scheduler hands its sends over `lead_s()` ahead with their due times
(`at_s`); anything else gets each message when it is due. `at_s` 0: now.

`MidiOut.panic()` releases every tracked note, then sends All Notes Off (CC 123) and sustain off
(CC 64 = 0) on every channel used. A port whose `send` raises is logged once and otherwise
ignored: the state is kept, so a later panic still knows what to release.

Not thread-safe by itself: the scheduler is the only caller (see improv.scheduler).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

import mido

log = logging.getLogger(__name__)

ALL_NOTES_OFF = 123
SUSTAIN = 64
_REALTIME = {"clock": "clock", "start": "start", "stop": "stop", "continue": "continue"}


class Port(Protocol):
    def send(self, msg: mido.Message) -> None: ...


class NoteTracker:
    """Sounding (channel, pitch) -> number of holders."""

    def __init__(self) -> None:
        self._held: Counter[tuple[int, int]] = Counter()
        self.channels_used: set[int] = set()

    def __contains__(self, key: tuple[int, int]) -> bool:
        return self._held[key] > 0

    def __len__(self) -> int:
        return len(+self._held)

    def sounding(self) -> list[tuple[int, int]]:
        return sorted(k for k, n in self._held.items() if n > 0)

    def count(self, channel: int, pitch: int) -> int:
        return self._held[(channel, pitch)]

    def on(self, channel: int, pitch: int) -> bool:
        """Record a note-on; True if the pitch already sounds (send its note-off first)."""
        key = (channel, pitch)
        self.channels_used.add(channel)
        self._held[key] += 1
        return self._held[key] > 1

    def off(self, channel: int, pitch: int) -> bool:
        """Record a note-off; True if the synth should hear it (the last holder let go)."""
        key = (channel, pitch)
        if self._held[key] <= 0:
            self._held.pop(key, None)
            return False
        self._held[key] -= 1
        if self._held[key] == 0:
            del self._held[key]
            return True
        return False

    def clear(self) -> list[tuple[int, int]]:
        """Forget everything; returns what was sounding."""
        sounding = self.sounding()
        self._held.clear()
        return sounding


class MidiOut:
    """Wraps anything with `send(mido.Message)`; returns the messages it actually sent."""

    def __init__(self, port: Port, channel_default: int = 0) -> None:
        self.port = port
        self.channel_default = channel_default
        self.tracker = NoteTracker()
        self.send_errors = 0
        self._closed = False
        self._send_at = getattr(port, "send_at", None)  # a sample-accurate port (see the top)
        self._lead = getattr(port, "lead_s", None) if self._send_at is not None else None

    def lead_s(self) -> float:
        """How far ahead of their due time the port wants sends (0: it has no due times)."""
        return self._lead() if self._lead is not None else 0.0

    def note_on(self, pitch: int, velocity: int, channel: int | None = None, at_s: float = 0.0,
                send: bool = True) -> list[mido.Message]:
        """(`send` False: another sender sent it, the duet's reflex; tracked all the same.)"""
        ch = self.channel_default if channel is None else channel
        sent = []
        if self.tracker.on(ch, pitch) and send:
            sent.append(self._send(mido.Message("note_off", channel=ch, note=pitch, velocity=0), at_s))
        msg = mido.Message("note_on", channel=ch, note=pitch, velocity=max(1, min(127, velocity)))
        sent.append(self._send(msg, at_s) if send else msg)
        return sent

    def note_off(self, pitch: int, channel: int | None = None, at_s: float = 0.0,
                 send: bool = True) -> list[mido.Message]:
        ch = self.channel_default if channel is None else channel
        if not self.tracker.off(ch, pitch):
            return []
        msg = mido.Message("note_off", channel=ch, note=pitch, velocity=0)
        return [self._send(msg, at_s) if send else msg]

    def release(self, pitch: int, channel: int | None = None) -> list[mido.Message]:
        """Silence a pitch now, whoever holds it (all holders let go)."""
        ch = self.channel_default if channel is None else channel
        sent: list[mido.Message] = []
        while self.tracker.count(ch, pitch) > 0:
            sent += self.note_off(pitch, ch)
        return sent

    def control(self, control: int, value: int, channel: int | None = None) -> list[mido.Message]:
        ch = self.channel_default if channel is None else channel
        self.tracker.channels_used.add(ch)
        return [self._send(mido.Message("control_change", channel=ch, control=control, value=value))]

    def realtime(self, kind: str, at_s: float = 0.0) -> list[mido.Message]:
        """MIDI clock / start / stop / continue (kind is the mido type)."""
        return [self._send(mido.Message(_REALTIME[kind]), at_s)]

    def panic(self) -> list[mido.Message]:
        """Note-off for every tracked note, then All Notes Off and sustain off per used channel."""
        sent = [self._send(mido.Message("note_off", channel=ch, note=p, velocity=0))
                for ch, p in self.tracker.clear()]
        for ch in sorted(self.tracker.channels_used | {self.channel_default}):
            sent.append(self._send(mido.Message("control_change", channel=ch, control=ALL_NOTES_OFF, value=0)))
            sent.append(self._send(mido.Message("control_change", channel=ch, control=SUSTAIN, value=0)))
        return sent

    def close(self) -> None:
        """Panic, then close the port if it can be closed. Safe to call twice."""
        if self._closed:
            return
        self.panic()
        self._closed = True
        close = getattr(self.port, "close", None)
        if callable(close):
            try:
                close()
            except Exception as err:  # noqa: BLE001 - closing a broken port must not mask the exit
                log.warning("closing the MIDI output failed: %s", err)

    def _send(self, msg: mido.Message, at_s: float = 0.0) -> mido.Message:
        try:
            if at_s and self._send_at is not None:
                self._send_at(msg, at_s)
            else:
                self.port.send(msg)
        except Exception as err:  # noqa: BLE001 - a flaky port must never kill the scheduler
            self.send_errors += 1
            if self.send_errors == 1:
                log.error("MIDI output send failed (%s); notes are still tracked, will keep trying", err)
        return msg
