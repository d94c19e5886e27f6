"""improv's own JACK MIDI client (improv/native/jack_midi.c through ctypes), in place of
python-rtmidi's on JACK: no Python in the server's cycle, and a close that deactivates the client
before its port goes (rtmidi's can free the port under a running callback: a segfault).

`JackMidiClient` speaks the part of rtmidi's MidiIn/MidiOut that improv uses (ports, open, send,
`get_message`, `set_callback`, `ignore_types`, close), so `improv.ports` can hand out either.
Both directions are sample-accurate: an output's `send_at(data, due_s)` lands on the frame of
`due_s` when handed over `lead_s()` ahead (the scheduler does); an input's `read()` gives the next
message with its frame's time on time.perf_counter's clock (up to a period after the reader's
now). An input also has `wait(timeout_s)` and `wake()`, which `improv.midi_in.MidiInput` uses
directly: the engine thread sleeps in C until a message or a wake comes. `cycles()` counts the
process cycles JACK ran the client for: a client the server never runs has none.

ctypes releases the GIL for each call. `available()` says whether the library was built (setup.py
builds it where there is a C compiler and libjack.so.0; elsewhere improv stays on rtmidi).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.util
import threading
import time
from collections.abc import Callable
from typing import Any

from improv.jack_graph import port_names

BUFFER_BYTES = 1024  # the C side's longest message
HANDOFF_MARGIN_S = 0.001  # send_at's lead beyond a period: the sending thread's wake-up, a loaded machine
RUN_POLL_S = 0.002  # wait_running's look at the cycle count
CALLBACK_POLL_S = 0.1  # set_callback's reader thread looks at `closed` this often
IGNORE_SYSEX, IGNORE_TIMING, IGNORE_ACTIVE = 1, 2, 4
_LIB: Any = None


def _load() -> Any:
    global _LIB
    if _LIB is None:
        spec = importlib.util.find_spec("improv._jack_midi")
        if spec is None or not spec.origin:
            raise OSError("improv's JACK MIDI client is not built (pip install -e . with gcc and jackd2)")
        lib = ctypes.CDLL(spec.origin)
        p, c = ctypes.c_void_p, ctypes.c_char_p
        sigs = {
            "jm_open": (p, [c, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
            "jm_register": (ctypes.c_int, [p, c]),
            "jm_port_name": (c, [p]),
            "jm_client_name": (c, [p]),
            "jm_ports": (ctypes.POINTER(c), [p]),
            "jm_free": (None, [p]),
            "jm_connect": (ctypes.c_int, [p, c]),
            "jm_disconnect": (ctypes.c_int, [p]),
            "jm_send_at": (ctypes.c_int, [p, c, ctypes.c_int, ctypes.c_double]),
            "jm_lead_s": (ctypes.c_double, [p, ctypes.c_double]),
            "jm_waiting": (ctypes.c_uint, [p]),
            "jm_read": (ctypes.c_int, [p, c, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]),
            "jm_wait": (ctypes.c_int, [p, ctypes.c_double]),
            "jm_wake": (None, [p]),
            "jm_ignore": (None, [p, ctypes.c_int]),
            "jm_cycles": (ctypes.c_ulong, [p]),
            "jm_dropped": (ctypes.c_ulong, [p]),
            "jm_shut_down": (ctypes.c_int, [p]),
            "jm_close": (None, [p]),
            "jm_reflex_link": (ctypes.c_int, [p, p]),
            "jm_reflex_arm": (None, [p, p]),
            "jm_reflex_disarm": (None, []),
            "jm_reflex_fired": (ctypes.c_int, [p]),
            "jm_reflex_peek": (ctypes.c_int, [p]),
            "jm_reads": (ctypes.c_ulong, [p]),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        _LIB = lib
    return _LIB


def available() -> bool:
    """Whether the native client is built and libjack loads."""
    try:
        _load()
    except OSError:
        return False
    return True


class JackMidiClient:
    """One JACK client with (once opened) one MIDI port; see the module docstring."""

    def __init__(self, kind: str, client_name: str) -> None:
        self._lib = _load()
        self.is_input = kind == "in"
        status = ctypes.c_int(0)
        handle = self._lib.jm_open(client_name.encode(), int(self.is_input), ctypes.byref(status))
        if not handle:
            raise OSError(f"jack_client_open failed (status 0x{status.value:x})")
        self._handle: int | None = handle
        self._lock = threading.Lock()  # every call on the handle vs close
        self._waiters = 0  # threads inside jm_wait (which runs outside the lock)
        self._waited = threading.Condition(self._lock)
        self._buffer = ctypes.create_string_buffer(BUFFER_BYTES)
        self._stamp = ctypes.c_double(0.0)
        self._last_s: float | None = None
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()
        if self.is_input:
            self.ignore_types()

    # ------------------------------------------------------------------ rtmidi's surface

    def get_ports(self) -> list[str]:
        return self._call(lambda h: port_names(self._lib.jm_ports(h), self._lib.jm_free), closed=[])

    def open_virtual_port(self, name: str) -> None:
        self._register(name)

    def open_port(self, index: int, name: str) -> None:
        """Register our port (if not yet) and connect it to the `index`th of `get_ports()`."""
        target = self.get_ports()[index]
        self._register(name)
        result = self._call(lambda h: self._lib.jm_connect(h, target.encode()), closed=-1)
        if result not in (0, errno.EEXIST):  # EEXIST: already connected
            raise OSError(f"cannot connect to JACK port {target!r} ({result})")

    def close_port(self) -> None:
        """Disconnect our port (it stays registered, so `open_port` can connect it again)."""
        self._call(self._lib.jm_disconnect)

    def is_port_open(self) -> bool:
        return self._call(lambda h: self._lib.jm_port_name(h) is not None, closed=False)

    def ignore_types(self, sysex: bool = True, timing: bool = True, active_sense: bool = True) -> None:
        mask = (IGNORE_SYSEX * sysex) | (IGNORE_TIMING * timing) | (IGNORE_ACTIVE * active_sense)
        self._call(lambda h: self._lib.jm_ignore(h, mask))

    def send_message(self, data: Any) -> None:
        self.send_at(data, 0.0)

    def send_at(self, data: Any, due_s: float) -> None:
        """Send at the frame of `due_s` (perf_counter seconds; 0 or past: the next cycle's start).
        Hand it over `lead_s()` ahead to land on that frame."""
        raw = bytes(data)
        with self._lock:
            if self._handle is None:
                raise OSError("the JACK MIDI client is closed")
            if self._lib.jm_send_at(self._handle, raw, len(raw), due_s) != 0:
                raise OSError("the JACK MIDI output's buffer is full: the server is not running it")

    def lead_s(self) -> float:
        """How long before its due time `send_at` needs a message: a period, and `HANDOFF_MARGIN_S`."""
        return float(self._call(lambda h: self._lib.jm_lead_s(h, HANDOFF_MARGIN_S), closed=0.0))

    def waiting(self) -> int:
        """Messages handed over and not yet written to the port."""
        return int(self._call(self._lib.jm_waiting, closed=0))

    def get_message(self) -> tuple[list[int], float] | None:
        """rtmidi's queue mode: the next message and the seconds since the one before, or None."""
        got = self.read()
        if got is None:
            return None
        stamp, data = got
        delta = 0.0 if self._last_s is None else stamp - self._last_s
        self._last_s = stamp
        return list(data), delta

    def set_callback(self, func: Callable[..., Any], data: Any = None) -> None:
        """Call `func((message, delta), data)` for each message, from a reader thread of ours
        (never from JACK's)."""
        self.cancel_callback()
        self._stop_reader.clear()

        def run() -> None:
            while not self._stop_reader.is_set():
                while (msg := self.get_message()) is not None:
                    func(msg, data)
                self.wait(CALLBACK_POLL_S)

        self._reader = threading.Thread(target=run, name="improv-jack-reader", daemon=True)
        self._reader.start()

    def cancel_callback(self) -> None:
        if self._reader is not None:
            self._stop_reader.set()
            self.wake()
            if self._reader is not threading.current_thread():
                self._reader.join()
            self._reader = None

    def delete(self) -> None:
        """Deactivate and close the client (safe while JACK runs it); later calls do nothing."""
        self.cancel_callback()
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            while self._waiters:  # a thread asleep in `wait`: wake it and let it leave first
                self._lib.jm_wake(handle)
                self._waited.wait(0.05)
            self._lib.jm_close(handle)

    # ------------------------------------------------------------------ native reading

    def read(self) -> tuple[float, bytes] | None:
        """The next received message and its stamp (perf_counter seconds), or None."""
        with self._lock:
            if self._handle is None:
                return None
            size = self._lib.jm_read(self._handle, self._buffer, BUFFER_BYTES, ctypes.byref(self._stamp))
            if size <= 0:
                return None
            return self._stamp.value, self._buffer.raw[:size]

    def wait(self, timeout_s: float) -> bool:
        """Sleep until a message arrives, `wake()` is called, or `timeout_s` passes."""
        with self._lock:
            handle = self._handle
            if handle is not None:
                self._waiters += 1
        if handle is None:
            time.sleep(max(0.0, min(timeout_s, CALLBACK_POLL_S)))
            return False
        try:
            return bool(self._lib.jm_wait(handle, max(0.0, timeout_s)))  # outside the lock
        finally:
            with self._lock:
                self._waiters -= 1
                self._waited.notify_all()

    def wake(self) -> None:
        self._call(self._lib.jm_wake)

    # ------------------------------------------------------------------ health

    def cycles(self) -> int:
        """Process cycles JACK has run this client for (0: never run)."""
        return int(self._call(self._lib.jm_cycles, closed=0))

    def wait_running(self, timeout_s: float) -> bool:
        """Whether JACK runs this client: a cycle within `timeout_s` of now."""
        deadline_s = time.perf_counter() + timeout_s
        while self.cycles() == 0:
            if time.perf_counter() > deadline_s:
                return False
            time.sleep(RUN_POLL_S)
        return True

    def dropped(self) -> int:
        """Messages lost: an input's ring full, an output's buffer full, a message too long."""
        return int(self._call(self._lib.jm_dropped, closed=0))

    def shut_down(self) -> bool:
        """Whether the server shut down or threw the client out."""
        return bool(self._call(self._lib.jm_shut_down, closed=True))

    def client_name(self) -> str:
        return self._call(lambda h: self._lib.jm_client_name(h).decode(), closed="")

    # ------------------------------------------------------------------ the duet's reflex (improv.reflex)

    def reflex_link(self, output: JackMidiClient | None) -> int:
        """This input's note-ons answered through `output` (None: by nobody) from now on; on a
        realtime server JACK runs `output` after this client in each cycle (a connection between
        their "reflex" ports). 1: so ordered; 0: not (a non-realtime server: the answer leaves a
        cycle later); -1: the connection failed."""
        with self._lock, output._lock if output is not None else contextlib.nullcontext():
            if self._handle is None or output is not None and output._handle is None:
                return -1
            return int(self._lib.jm_reflex_link(self._handle, output._handle if output is not None else None))

    def reflex_arm(self, table: Any) -> None:
        """Arm the reflex with `table` (a ctypes structure; None: the one armed last) for the next
        note-on after the messages read so far."""
        self._call(lambda h: self._lib.jm_reflex_arm(h, None if table is None else ctypes.byref(table)))

    def reads(self) -> int:
        """Messages `read` has taken from the ring (the reflex's count)."""
        return int(self._call(self._lib.jm_reads, closed=0))

    def _register(self, name: str) -> None:
        result = self._call(lambda h: self._lib.jm_register(h, name.encode()), closed=-1)
        if result != 0:
            raise OSError(f"cannot {'register' if result == -1 else 'activate'} the JACK port {name!r}")

    def _call(self, fn: Callable[[int], Any], closed: Any = None) -> Any:
        """`fn(handle)` under the lock while the client is open; `closed` once it is not."""
        with self._lock:
            return closed if self._handle is None else fn(self._handle)
