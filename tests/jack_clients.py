"""Test clients on a JACK server: a player that sends at absolute times, a recorder that stamps
arrivals, and a MIDI clock source.

All timing is `time.perf_counter()` (the daemon's clock too) and `time.sleep` to absolute
deadlines (python-rtmidi's drumseq way): no spinning. On 2 shared cores a spinning client starves
a non-realtime jackd until MIDI clock bytes are lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import rtmidi

Message = tuple[float, list[int]]  # (perf_counter seconds, raw bytes)


def sleep_until(deadline_s: float) -> None:
    """Sleep to an absolute perf_counter deadline (never spins)."""
    while True:
        left = deadline_s - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left)


class Player:
    """A JACK MIDI output port ("<client>:out") that sends messages at absolute times."""

    def __init__(self, client: str = "player") -> None:
        self.client = client
        self.rt = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, client)
        self.rt.open_virtual_port("out")
        self.port = f"{client}:out"
        self.sent: list[Message] = []
        self._lock = threading.Lock()  # the clock thread and the phrase share the port

    def send(self, data: list[int]) -> float:
        with self._lock:
            t_s = time.perf_counter()
            self.rt.send_message(data)
        self.sent.append((t_s, list(data)))
        return t_s

    def play(self, phrase: Iterable[tuple[float, list[int]]], start_s: float) -> list[Message]:
        """Send each (offset_s, bytes) at start_s + offset_s; returns (time sent, bytes)."""
        out = []
        for offset_s, data in phrase:
            sleep_until(start_s + offset_s)
            out.append((self.send(data), list(data)))
        return out

    def close(self) -> None:
        self.rt.close_port()
        self.rt.delete()


class Recorder:
    """A JACK MIDI input port ("<client>:in") stamping each arrival in its callback."""

    def __init__(self, client: str = "recorder") -> None:
        self.client = client
        self.rt = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, client)
        self.rt.ignore_types(sysex=True, timing=True, active_sense=True)
        self.rt.open_virtual_port("in")
        self.port = f"{client}:in"
        self.received: list[Message] = []  # list.append is atomic under the GIL
        self.rt.set_callback(self._on_message)

    def _on_message(self, message_and_delta, _data=None) -> None:
        self.received.append((time.perf_counter(), message_and_delta[0]))

    def clear(self) -> None:
        self.received.clear()

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout_s: float) -> bool:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if predicate(list(self.received)):
                return True
            time.sleep(0.01)
        return predicate(list(self.received))

    def close(self) -> None:
        self.rt.cancel_callback()
        self.rt.close_port()
        self.rt.delete()


@dataclass
class Note:
    on_s: float
    off_s: float | None
    pitch: int
    channel: int


def note_ons(messages: list[Message]) -> list[Message]:
    return [(t, m) for t, m in messages if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2] > 0]


def pair_notes(messages: list[Message]) -> tuple[list[Note], list[Note]]:
    """(closed notes, notes never released). All Notes Off (CC 123) and All Sound Off (CC 120)
    release everything sounding on their channel."""
    sounding: dict[tuple[int, int], list[Note]] = {}
    closed: list[Note] = []
    for t_s, m in messages:
        if not m:
            continue
        status, channel = m[0] & 0xF0, m[0] & 0x0F
        if status == 0x90 and len(m) == 3 and m[2] > 0:
            sounding.setdefault((channel, m[1]), []).append(Note(t_s, None, m[1], channel))
        elif (status == 0x80 or status == 0x90) and len(m) == 3:
            stack = sounding.get((channel, m[1]))
            if stack:
                note = stack.pop(0)
                note.off_s = t_s
                closed.append(note)
        elif status == 0xB0 and len(m) == 3 and m[1] in (120, 123):
            for (ch, _pitch), stack in sounding.items():
                if ch == channel:
                    for note in stack:
                        note.off_s = t_s
                        closed.append(note)
                    stack.clear()
    hanging = [n for stack in sounding.values() for n in stack]
    return closed, hanging


class ClockSource:
    """24-ppqn MIDI clock from a thread, on absolute deadlines, tempo changeable on the fly.

    Tick n is due at the tempo segment's start + k * 60 / (24 * bpm); a tempo change starts a new
    segment at the next tick, so the clock never drifts and never jumps.
    """

    PPQN = 24

    def __init__(self, player: Player, bpm: float) -> None:
        self.player = player
        self._bpm = bpm
        self._pending_bpm: float | None = None
        self._stop = threading.Event()
        self.ticks: list[float] = []  # perf_counter send time of every clock byte
        self.deadlines: list[float] = []  # when each was due: the ideal grid (sends jitter)
        self._thread = threading.Thread(target=self._run, name="clock-source", daemon=True)

    def start(self) -> None:
        self.player.send([0xFA])  # Start: the next clock byte is beat 0
        self._thread.start()

    def set_bpm(self, bpm: float) -> None:
        self._pending_bpm = bpm

    def stop(self, send_stop: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if send_stop:
            self.player.send([0xFC])

    def _run(self) -> None:
        origin_s, k, bpm = time.perf_counter() + 0.002, 0, self._bpm
        while not self._stop.is_set():
            deadline_s = origin_s + k * 60.0 / (self.PPQN * bpm)
            sleep_until(deadline_s)
            self.deadlines.append(deadline_s)
            self.ticks.append(self.player.send([0xF8]))
            k += 1
            if self._pending_bpm is not None:
                origin_s, k = origin_s + k * 60.0 / (self.PPQN * bpm), 0
                bpm, self._pending_bpm = self._pending_bpm, None
