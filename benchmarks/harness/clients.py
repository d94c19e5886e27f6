"""Clients on a JACK server: players that send at absolute times (python-rtmidi's, at the cycle
after the send, and a frame-accurate one handed each message ahead with its due time, as a DAW
writes), a recorder that stamps arrivals at their frame, and a MIDI clock source.

All timing is `time.perf_counter()` (the daemon's clock too) and `time.sleep` to absolute
deadlines (python-rtmidi's drumseq way): no spinning. On 2 shared cores a spinning client starves
a non-realtime jackd until MIDI clock bytes are lost.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

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


class FramePlayer:
    """A JACK MIDI output port ("<client>:out") that writes each message at the frame it is due,
    sample-accurate as a DAW: jack_player.c (beside this file) in a process of its own, handed
    "<due> <bytes>" lines ahead of time. An rtmidi `Player` writes at frame 0 of the cycle after
    the send, so its timing is the sender's wake-up rounded to the period."""

    def __init__(self, client: str = "player", timeout_s: float = 10.0) -> None:
        binary, why = build_c_client("jack_player.c")
        if binary is None:
            raise RuntimeError(f"cannot build the JACK player jack_player.c: {why}")
        self.client = client
        self.port = f"{client}:out"
        self.sent: list[Message] = []  # (when due to leave, bytes)
        self._lock = threading.Lock()  # the clock thread and the phrase share the pipe
        self._err = tempfile.TemporaryFile()
        self._child = subprocess.Popen([str(binary), client], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=self._err)
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True, name=f"player {client}").start()
        if not ready.wait(timeout_s):
            self._child.kill()
            self._child.wait()
            self._err.seek(0)
            why = self._err.read().decode(errors="replace").strip()[-500:]
            self._err.close()
            raise RuntimeError(f"JACK player {client} could not open its port (waited up to {timeout_s:g} s): {why}")

    def _read(self, ready: threading.Event) -> None:
        """The child's stdout: "ready", then only libjack's own lines (a verbose jackd), read so none blocks it."""
        for line in self._child.stdout:
            if line.strip() == b"ready":
                ready.set()

    def send(self, data: list[int]) -> float:
        """Now: at frame 0 of the next cycle. Returns the time it was handed over."""
        return self._write(data, 0.0)

    def send_at(self, data: list[int], due_s: float) -> float:
        """At the frame of perf_counter time `due_s`. Returns due_s, or the time it was handed over
        if that is later (a due time already past goes out as soon as possible)."""
        return self._write(data, due_s)

    def _write(self, data: list[int], due_s: float) -> float:
        with self._lock:
            t_s = max(due_s, time.perf_counter())
            self._child.stdin.write(f"{due_s:.9f} {' '.join(map(str, data))}\n".encode())
            self._child.stdin.flush()
            self.sent.append((t_s, list(data)))
        return t_s

    def play(self, phrase: Iterable[tuple[float, list[int]]], start_s: float) -> list[Message]:
        """Hand over each (offset_s, bytes) at once, due at start_s + offset_s; returns (due, bytes)."""
        return [(self.send_at(data, start_s + offset_s), list(data)) for offset_s, data in phrase]

    def close(self) -> None:
        """Close the port once what is handed over has gone out (the child drains, then exits)."""
        end_child(self._child)
        self._err.close()


class Recorder:
    """A JACK MIDI input port ("<client>:in") stamping each arrival, in a process of its own.

    rtmidi's JACK input calls its callback for event i before it copies event i+1 out of the
    port buffer; a Python callback that waits (for the GIL, or preempted on 2 busy cores)
    outlives the cycle, the next cycle rewrites the buffer, and the later notes of a chord arrive
    as copies of another note. Measured with `python -m benchmarks.profiles.jack_recorders` (400 4-note
    chords, 2 busy processes, non-realtime jackd): an rtmidi callback recorder in this process
    received 60-83 messages of 3,200 that were never sent, the C recorder 0-2 (with
    `--realtime`: 0 for both). So the recorder is jack_recorder.c (beside this file), a C client that copies
    each cycle's events at once and stamps each with its frame's time on CLOCK_MONOTONIC
    (time.perf_counter's clock, the daemon's too), compiled once per machine with cc against
    libjack.so.0. Without a compiler, an rtmidi recorder in a child process stands in
    (IMPROV_REQUIRE_JACK=1 makes that an error)."""

    def __init__(self, client: str = "recorder", timeout_s: float = 10.0,
                 command: tuple[str, ...] | None = None) -> None:
        self.client = client
        self.port = f"{client}:in"
        self.received: list[Message] = []  # list.append is atomic under the GIL
        self._opened = False
        self._err = tempfile.TemporaryFile()  # the child's complaints, never a pipe that fills
        self._child = subprocess.Popen([*(command or recorder_command()), client],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=self._err)
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True,
                                        name=f"recorder {client}")
        self._reader.start()
        ready.wait(timeout_s)
        if not self._opened:
            self._child.kill()
            self._child.wait()
            why = self.errors()
            self.close()
            raise RuntimeError(f"JACK recorder {client} could not open its port "
                               f"(waited up to {timeout_s:g} s): {why}")

    def _read(self, ready: threading.Event) -> None:
        for line in self._child.stdout:
            head, _, rest = line.decode().strip().partition(" ")
            if head == "ready":
                self._opened = True
                ready.set()
            elif head and head != "Jack:":  # libjack's own lines under a verbose jackd
                self.received.append((float(head), [int(b) for b in rest.split()]))
        ready.set()  # the child ended (or never opened its port): nobody waits any longer

    def errors(self) -> str:
        """What the recorder's process wrote to stderr so far."""
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()[-500:]

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
        """Close the port (the child exits when its stdin closes) after what it sent is read."""
        end_child(self._child)
        self._reader.join(timeout=5)
        self._err.close()


@functools.lru_cache(maxsize=1)
def recorder_command() -> tuple[str, ...]:
    """The command that records a JACK port: the C recorder, built on first use, else rtmidi."""
    binary, why = build_c_client("jack_recorder.c")
    if binary is not None:
        return (str(binary),)
    if os.environ.get("IMPROV_REQUIRE_JACK") == "1":
        raise RuntimeError(f"cannot build the JACK test recorder jack_recorder.c: {why}")
    warnings.warn(f"JACK test recorder jack_recorder.c not built ({why}); rtmidi stands in and may "
                  "mangle chords under load", stacklevel=2)
    return RTMIDI_RECORDER


@functools.lru_cache(maxsize=4)
def end_child(child: subprocess.Popen) -> None:
    """A client in a process of its own ends when its stdin closes; killed if it does not."""
    if child.poll() is None:
        child.stdin.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def build_c_client(source: str) -> tuple[Path | None, str]:
    """One of the harness's C JACK clients, built on first use: (binary, "") or (None, why not)."""
    src = Path(__file__).with_name(source)
    native = src.parents[2] / "improv" / "native"  # the shared headers: libjack's declarations, frame times
    text = src.read_bytes() + b"".join((native / h).read_bytes() for h in ("jack_api.h", "jack_frames.h"))
    digest = hashlib.sha256(text).hexdigest()[:12]
    binary = Path(tempfile.gettempdir()) / f"improv-{src.stem}-{digest}"
    if binary.exists():
        return binary, ""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (apt install gcc)"
    partial = binary.with_name(f"{binary.name}.{os.getpid()}")
    built = subprocess.run([cc, "-O2", "-o", str(partial), str(src), "-l:libjack.so.0"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        return None, f"{cc} failed: {built.stderr.strip()[-300:]}"
    os.replace(partial, binary)  # atomic: a parallel run never runs half a file
    return binary, ""


class JackDelay:
    """jack_delay.c in a process of its own: "<client>:in" comes out of "<client>:out" exactly
    `frames` frames later (JACK's frame clock): a loopback of known added latency."""

    def __init__(self, env: dict[str, str], frames: int, client: str = "delay") -> None:
        binary, why = build_c_client("jack_delay.c")
        if binary is None:
            raise RuntimeError(f"cannot build the JACK delay client jack_delay.c: {why}")
        self.inlet, self.outlet = f"{client}:in", f"{client}:out"
        self._child = subprocess.Popen([str(binary), client, str(frames)], env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self._child.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"jack_delay did not start: {self._child.stderr.read().strip()}")

    def close(self) -> None:
        end_child(self._child)


class Churn:
    """`count` jack_churn.c processes (short-lived JACK clients, one after another, each held open
    `hold_ms`) until `close`: the churn under which issue 13's stall happens."""

    def __init__(self, env: dict[str, str], count: int, activate: bool = False, hold_ms: int = 0) -> None:
        binary, why = build_c_client("jack_churn.c")
        if binary is None:
            raise RuntimeError(f"cannot build the JACK churn client jack_churn.c: {why}")
        self._children = [subprocess.Popen([str(binary), "activate" if activate else "open", str(hold_ms)], env=env,
                                           stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
                          for _ in range(count)]

    def close(self) -> None:
        for child in self._children:
            end_child(child)
        self._children = []


RTMIDI_RECORDER = (sys.executable, "-u", __file__, "record")  # the stand-in: `_record` in a child process


def _record(client: str) -> None:
    """The stand-in recorder's child process: one JACK input port, stamped lines on stdout until stdin closes."""
    out = sys.stdout.buffer

    def on_message(message_and_delta, _data=None) -> None:
        t_s = time.perf_counter()
        out.write(f"{t_s:.9f} {' '.join(map(str, message_and_delta[0]))}\n".encode())
        out.flush()

    rt = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, client)
    rt.ignore_types(sysex=True, timing=True, active_sense=True)
    rt.open_virtual_port("in")
    rt.set_callback(on_message)
    out.write(b"ready\n")
    out.flush()
    sys.stdin.buffer.read()  # the main thread sleeps here: the GIL is the callback's
    rt.cancel_callback()
    time.sleep(0.01)  # a callback in flight finishes before the port goes
    rt.close_port()
    rt.delete()


class ClockSource:
    """24-ppqn MIDI clock from a thread, on absolute deadlines, tempo changeable on the fly.

    Tick n is due at the tempo segment's start + k * 60 / (24 * bpm); a tempo change starts a new
    segment at the next tick, so the clock never drifts and never jumps. With a `FramePlayer` each
    tick is handed over LEAD_S ahead with its deadline as its due time, so it leaves on the frame
    (`ticks` == `deadlines`, the sender's grid exact, as a DAW's); with a `Player` it is sent when
    the thread wakes at its deadline (`ticks` jitter).
    """

    PPQN = 24
    LEAD_S = 0.03  # a FramePlayer's ticks are handed over this far ahead of their deadlines

    def __init__(self, player: Player | FramePlayer, bpm: float) -> None:
        self.player = player
        self._bpm = bpm
        self._pending_bpm: float | None = None
        self._stop = threading.Event()
        self._timed = isinstance(player, FramePlayer)
        self._origin_s = 0.0  # the first tick's deadline, set by start
        self.ticks: list[float] = []  # perf_counter time each clock byte left (or is due to)
        self.deadlines: list[float] = []  # when each was due: the ideal grid (rtmidi sends jitter)
        self._thread = threading.Thread(target=self._run, name="clock-source", daemon=True)

    def start(self) -> None:
        """Start (the next clock byte is beat 0), then the ticks."""
        self._origin_s = time.perf_counter() + (self.LEAD_S if self._timed else 0.002)
        if self._timed:
            self.player.send_at([0xFA], self._origin_s)  # the first tick's frame, handed over before it
        else:
            self.player.send([0xFA])
        self._thread.start()

    def set_bpm(self, bpm: float) -> None:
        self._pending_bpm = bpm

    def stop(self, send_stop: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if send_stop and self._timed:  # after the ticks already handed over
            self.player.send_at([0xFC], self.deadlines[-1] if self.deadlines else 0.0)
        elif send_stop:
            self.player.send([0xFC])

    def _run(self) -> None:
        origin_s, k, bpm = self._origin_s, 0, self._bpm
        while not self._stop.is_set():
            deadline_s = origin_s + k * 60.0 / (self.PPQN * bpm)
            sleep_until(deadline_s - (self.LEAD_S if self._timed else 0.0))
            self.deadlines.append(deadline_s)
            self.ticks.append(self.player.send_at([0xF8], deadline_s) if self._timed else self.player.send([0xF8]))
            k += 1
            if self._pending_bpm is not None:
                origin_s, k = origin_s + k * 60.0 / (self.PPQN * bpm), 0
                bpm, self._pending_bpm = self._pending_bpm, None


if __name__ == "__main__" and sys.argv[1:2] == ["record"]:
    _record(sys.argv[2])
