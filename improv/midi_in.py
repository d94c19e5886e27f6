"""The input side of the live path: the rtmidi callback stamps and enqueues, nothing else.

rtmidi calls `_on_message` on its own thread (for JACK, the JACK process thread), so the callback
must be short: one `time.perf_counter()` (the same clock as `improv.clock.MonotonicClock`) and one
`SimpleQueue.put`. Parsing (`improv.events.MidiParser`), channel filtering and everything else
happens on the engine thread, which waits on `get(timeout_s)`.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from typing import Any

PAUSE_SETTLE_S = 0.01  # after cancelling the callback: one in flight finishes (JACK periods are ~1 ms)

Stamped = tuple[float, list[int]]  # (perf_counter seconds at arrival, raw MIDI bytes)


class MidiInput:
    """Stamped raw messages from one rtmidi MidiIn port."""

    def __init__(self, rt_in: Any | None = None) -> None:
        self.queue: queue.SimpleQueue[Stamped] = queue.SimpleQueue()
        self._rt = rt_in
        self.listen()

    def listen(self) -> None:
        """Install the callback (again: python-rtmidi's close_port cancels it, so a port that was
        reconnected (`improv.ports.OpenPort.reconnect`) needs this to be heard)."""
        if self._rt is not None:
            self._rt.ignore_types(sysex=True, timing=False, active_sense=True)  # keep MIDI clock
            self._rt.set_callback(self._on_message)

    def _on_message(self, message_and_delta: tuple[list[int], float], _data: Any = None) -> None:
        # rtmidi's own delta time is ignored: the stamp is taken here, on our clock.
        self.queue.put((time.perf_counter(), message_and_delta[0]))

    def put(self, t_s: float, data: list[int]) -> None:
        """Inject a message (tests, `improv demo`)."""
        self.queue.put((t_s, list(data)))

    def get(self, timeout_s: float | None) -> Stamped | None:
        """The next stamped message, or None when `timeout_s` passes with none."""
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
            return None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No callback while the body runs: python-rtmidi holds the GIL while it opens or closes a
        JACK client, and the server waits for the cycle, in which the callback would wait for the
        GIL. Messages in that window are lost (a reopen takes tens of ms)."""
        self.close()
        time.sleep(PAUSE_SETTLE_S)
        try:
            yield
        finally:
            self.listen()

    def close(self) -> None:
        """Stop the callbacks; messages already queued stay readable."""
        if self._rt is not None:
            try:
                self._rt.cancel_callback()
            except Exception:  # already closed or never had one
                pass
