"""The input side of the live path: messages stamped on arrival, read by the engine thread.

rtmidi calls `_on_message` on its own thread, so the callback must be short: one
`time.perf_counter()` (the same clock as `improv.clock.MonotonicClock`) and one `SimpleQueue.put`.
On JACK, improv's own client (`improv.jack_midi`) has no callback: its cycle stamps each message
in C with its frame's time and the engine thread sleeps in C until one comes (`get` reads it there, after anything put
in the queue). Parsing (`improv.events.MidiParser`), channel filtering and everything else happens
on the engine thread, which waits on `get(timeout_s)`.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from typing import Any

from improv.jack_midi import JackMidiClient

PAUSE_SETTLE_S = 0.01  # after cancelling the callback: one in flight finishes (JACK periods are ~1 ms)

Stamped = tuple[float, list[int]]  # (perf_counter seconds at arrival, raw MIDI bytes)


class MidiInput:
    """Stamped raw messages from one rtmidi MidiIn port."""

    def __init__(self, rt_in: Any | None = None) -> None:
        self.queue: queue.SimpleQueue[Stamped] = queue.SimpleQueue()
        self._rt = rt_in
        self._native = rt_in if isinstance(rt_in, JackMidiClient) else None
        self.listen()

    def listen(self) -> None:
        """Install the callback (again: python-rtmidi's close_port cancels it, so a port that was
        reconnected (`improv.midi_port.OpenPort.reconnect`) needs this to be heard)."""
        if self._native is not None:
            self._native.ignore_types(sysex=True, timing=False, active_sense=True)
        elif self._rt is not None:
            self._rt.ignore_types(sysex=True, timing=False, active_sense=True)  # keep MIDI clock
            self._rt.set_callback(self._on_message)

    def _on_message(self, message_and_delta: tuple[list[int], float], _data: Any = None) -> None:
        # rtmidi's own delta time is ignored: the stamp is taken here, on our clock.
        self.queue.put((time.perf_counter(), message_and_delta[0]))

    def put(self, t_s: float, data: list[int]) -> None:
        """Inject a message (tests, `improv demo`, the daemon's wake-up for a remote control)."""
        self.queue.put((t_s, list(data)))
        if self._native is not None:
            self._native.wake()

    def get(self, timeout_s: float | None) -> Stamped | None:
        """The next stamped message, or None when `timeout_s` passes with none."""
        if self._native is not None:
            return self._get_native(timeout_s)
        try:
            if timeout_s is None:
                return self.queue.get()
            return self.queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def get_nowait(self) -> Stamped | None:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            pass
        if self._native is None:
            return None
        got = self._native.read()
        return None if got is None else (got[0], list(got[1]))

    def _get_native(self, timeout_s: float | None) -> Stamped | None:
        deadline_s = None if timeout_s is None else time.perf_counter() + timeout_s
        while (item := self.get_nowait()) is None:
            left_s = 1.0 if deadline_s is None else deadline_s - time.perf_counter()
            if left_s <= 0:
                return None
            self._native.wait(left_s)
        return item

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No callback while the body runs: python-rtmidi holds the GIL while it opens or closes a
        JACK client, and the server waits for the cycle, in which the callback would wait for the
        GIL. Messages in that window are lost (a reopen takes tens of ms). improv's own JACK client
        needs no pause: nothing of it waits for the GIL."""
        if self._native is not None:
            yield
            return
        self.close()
        time.sleep(PAUSE_SETTLE_S)
        try:
            yield
        finally:
            self.listen()

    def close(self) -> None:
        """Stop the callbacks; messages already queued stay readable."""
        if self._rt is not None and self._native is None:
            try:
                self._rt.cancel_callback()
            except Exception:  # already closed or never had one
                pass
