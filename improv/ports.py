"""List and open MIDI ports through python-rtmidi, one backend (rtmidi API) at a time.

Backends are ALSA and JACK (Linux), CoreMIDI (macOS) and Windows MM, as far as this build of
rtmidi has them compiled in. Opening an rtmidi client where the MIDI system is missing makes the
C library print to stderr (and, for JACK, can stall), so every client is created through `_client`,
which silences fd 2 and, for JACK, gives up after `PROBE_TIMEOUT_S`.

A port is named by exact name, by index, or by a unique substring (case-insensitive); anything else
is a `MidiPortError` whose one line lists the candidates. With no name, improv creates virtual
ports: the client and the port are both called "improv in" / "improv out", so JACK shows
"improv in:improv in" and ALSA a client "improv in" (two clients with one name would be renamed
"improv-01" by JACK).

A port opened by name belongs to another client (a keyboard, a synth) that may go away mid-set.
`PortWatch` polls the port list (the daemon's main thread, every `WATCH_INTERVAL_S`): when the
port is gone it reports it once, and when a port of that name (or one the user's spec matches)
is back it reconnects the same rtmidi client to it. Virtual ports own themselves: never watched.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from improv.errors import MidiPortError

BACKENDS = ("alsa", "jack", "coremidi", "winmm")
_API_NAMES = {  # our name -> rtmidi constant name
    "alsa": "API_LINUX_ALSA",
    "jack": "API_UNIX_JACK",
    "coremidi": "API_MACOSX_CORE",
    "winmm": "API_WINDOWS_MM",
}
VIRTUAL_IN = "improv in"
VIRTUAL_OUT = "improv out"
PROBE_TIMEOUT_S = 2.0
WATCH_INTERVAL_S = 0.5  # how often a port opened by name is looked for
ALSA_SEQ = "/dev/snd/seq"

FIX_ALSA = (
    f"no ALSA sequencer ({ALSA_SEQ} missing): load it with `sudo modprobe snd-seq`, "
    "or start JACK and pass --backend jack"
)
FIX_JACK = (
    "no JACK server running: start one (e.g. `jackd -d alsa` or QjackCtl), "
    + ("or pass --backend coremidi" if sys.platform == "darwin" else "or pass --backend alsa")
)


@dataclass(frozen=True)
class BackendStatus:
    """What `improv ports` shows for one backend."""

    name: str
    usable: bool
    reason: str = ""  # why it is unusable, with the fix
    inputs: tuple[str, ...] = field(default_factory=tuple)
    outputs: tuple[str, ...] = field(default_factory=tuple)


def _rtmidi() -> Any:
    import rtmidi  # a C extension; imported here so `improv --help` stays light

    return rtmidi


def compiled_backends() -> list[str]:
    """Our names of the rtmidi APIs compiled into this build, in BACKENDS order."""
    rtmidi = _rtmidi()
    compiled = set(rtmidi.get_compiled_api())
    return [b for b in BACKENDS if getattr(rtmidi, _API_NAMES[b], None) in compiled]


def default_backends() -> list[str]:
    """Backends to try, in order, when the user names none."""
    if sys.platform == "darwin":
        order = ["coremidi", "jack"]
    elif sys.platform.startswith("win"):
        order = ["winmm"]
    else:
        order = ["alsa", "jack"]
    compiled = compiled_backends()
    return [b for b in order if b in compiled]


def check_backend(name: str) -> str:
    """Validate a backend name against BACKENDS and this build; returns it lowercased."""
    key = name.strip().lower()
    if key not in BACKENDS:
        raise MidiPortError(f"unknown MIDI backend {name!r}; use one of {', '.join(BACKENDS)}")
    if key not in compiled_backends():
        have = ", ".join(compiled_backends()) or "none"
        raise MidiPortError(f"MIDI backend {key!r} is not compiled into python-rtmidi here ({have})")
    return key


def _precheck(backend: str) -> str:
    """A cheap reason why `backend` cannot work, without creating a client ('' = try it)."""
    if backend == "alsa" and sys.platform.startswith("linux") and not os.path.exists(ALSA_SEQ):
        return FIX_ALSA
    return ""


def _failure_reason(backend: str, err: BaseException | None) -> str:
    if backend == "jack":
        return FIX_JACK
    if backend == "alsa":
        return f"cannot open the ALSA sequencer ({err}); check permissions on {ALSA_SEQ}"
    return f"cannot open {backend} MIDI ({err})"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence fd 2 (C libraries' chatter) for the duration; Python's sys.stderr is untouched."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _client(backend: str, kind: str, client_name: str) -> Any:
    """Create an rtmidi MidiIn/MidiOut on `backend`, quietly, with a time limit.

    Raises MidiPortError with the reason and the fix when the MIDI system is not there.
    """
    reason = _precheck(backend)
    if reason:
        raise MidiPortError(reason)
    rtmidi = _rtmidi()
    cls = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
    api = getattr(rtmidi, _API_NAMES[backend])
    box: dict[str, Any] = {}

    def create() -> None:
        try:
            box["client"] = cls(api, client_name)
        except Exception as err:  # rtmidi.SystemError and friends
            box["error"] = err

    with _quiet_stderr():
        if backend != "jack":  # CoreMIDI clients belong on the calling thread; only JACK stalls
            create()
            worker = None
        else:
            worker = threading.Thread(target=create, name="probe-jack", daemon=True)
            worker.start()
            worker.join(PROBE_TIMEOUT_S)
    if worker is not None and worker.is_alive():
        raise MidiPortError(f"{backend} MIDI did not answer within {PROBE_TIMEOUT_S:g} s; "
                            + _failure_reason(backend, None))
    if "error" in box:
        raise MidiPortError(_failure_reason(backend, box["error"]))
    return box["client"]


def probe(backend: str) -> BackendStatus:
    """Whether `backend` can be opened, and its ports if so."""
    try:
        midi_in = _client(backend, "in", "improv probe")
    except MidiPortError as err:
        return BackendStatus(backend, usable=False, reason=str(err))
    try:
        midi_out = _client(backend, "out", "improv probe")
    except MidiPortError as err:
        close_client(midi_in)
        return BackendStatus(backend, usable=False, reason=str(err))
    try:
        return BackendStatus(backend, True, "", tuple(midi_in.get_ports()),
                             tuple(midi_out.get_ports()))
    finally:
        close_client(midi_in)
        close_client(midi_out)


def choose_backend(backend: str | None) -> str:
    """The named backend if it opens, or the first default one that does; checked before the
    model loads, so a missing MIDI system is reported at once.

    With none usable, raises the first default backend's reason, e.g. FIX_ALSA on a Linux box
    without /dev/snd/seq.
    """
    if backend:
        name = check_backend(backend)
        close_client(_client(name, "in", "improv probe"))
        return name
    reasons = []
    for name in default_backends():
        status_reason = _precheck(name)
        if not status_reason:
            try:
                close_client(_client(name, "in", "improv probe"))
                return name
            except MidiPortError as err:
                status_reason = str(err)
        reasons.append(status_reason)
    raise MidiPortError(reasons[0] if reasons else "python-rtmidi has no MIDI backend compiled in")


def resolve(spec: str, names: list[str] | tuple[str, ...], direction: str = "input") -> int:
    """Index of the port `spec` names: exact name, then index, then unique substring."""
    names = list(names)
    if spec in names:
        return names.index(spec)
    if spec.strip().isdigit() and int(spec) < len(names):
        return int(spec)
    hits = [i for i, n in enumerate(names) if spec.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    if hits:
        listed = "; ".join(f"{i}: {names[i]}" for i in hits)
        raise MidiPortError(f"MIDI {direction} {spec!r} is ambiguous: {listed}; "
                            "give the exact name or the index")
    listed = "; ".join(f"{i}: {n}" for i, n in enumerate(names)) or "none"
    raise MidiPortError(f"no MIDI {direction} matches {spec!r}; candidates: {listed} "
                        "(see `improv ports`)")


@dataclass
class OpenPort:
    """An opened rtmidi port and what to call it in the view and the log."""

    rt: Any  # rtmidi.MidiIn or rtmidi.MidiOut
    name: str  # the port connected to (by name), or our virtual port's name
    backend: str
    virtual: bool
    spec: str | None = None  # what the user asked for (--in / --out), to find the port again
    own_name: str = ""  # our end of the connection, e.g. "improv in"
    sent: int = 0  # messages the port took without an error (`improv.output_watch` counts them)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # send vs reconnect

    def send(self, msg: Any) -> None:
        """Send a mido.Message (what `improv.midi_out.MidiOut` calls); raises on port errors."""
        data = msg.bytes()
        with self._lock:
            self.rt.send_message(data)
            self.sent += 1

    def swap(self, rt: Any) -> Any:
        """Put a reopened client in place of the current one (never mid-send); returns the old."""
        with self._lock:
            old, self.rt = self.rt, rt
        return old

    def present(self) -> bool:
        """Whether the port we are connected to is still listed (a virtual port always is)."""
        if self.virtual:
            return True
        try:
            return self.name in self.rt.get_ports()
        except Exception:  # noqa: BLE001 - a MIDI system that stops answering has no ports
            return False

    def present_again(self) -> bool:
        """Whether the port, or one the spec matches, is listed (so `reconnect` may work)."""
        try:
            names = list(self.rt.get_ports())
        except Exception:  # noqa: BLE001
            return False
        return self.name in names or _match(self.spec, names) is not None

    def reconnect(self) -> bool:
        """Connect again if the port is back: same name first, else what the spec matches."""
        try:
            names = list(self.rt.get_ports())
        except Exception:  # noqa: BLE001
            return False
        index = names.index(self.name) if self.name in names else _match(self.spec, names)
        if index is None:
            return False
        with self._lock:  # never while the scheduler sends
            with contextlib.suppress(Exception):
                self.rt.close_port()
            try:
                self.rt.open_port(index, self.own_name or self.name)
            except Exception:  # noqa: BLE001 - it went away again; the next poll retries
                return False
        self.name = names[index]
        return True

    def close(self) -> None:
        close_client(self.rt)


def _match(spec: str | None, names: list[str]) -> int | None:
    """The one port a (non-numeric) spec names among `names`, or None."""
    if not spec or spec.strip().isdigit():
        return None  # an index names whatever sits there now: not the device that left
    try:
        return resolve(spec, names)
    except MidiPortError:
        return None


class PortWatch:
    """Notices a port opened by name going away and coming back; see the module docstring.

    `poll(now_s)` is cheap between intervals. It returns "lost" or "back" on a change (the caller
    releases notes, reconnects its state) and None otherwise, and logs each change in one line.
    """

    def __init__(self, port: OpenPort, direction: str, log: Any,
                 interval_s: float = WATCH_INTERVAL_S,
                 guard: Callable[[], Any] = contextlib.nullcontext) -> None:
        self.port, self.direction, self.log, self.interval_s = port, direction, log, interval_s
        self.guard = guard  # a context around reconnecting (the live input's callback paused)
        self.lost = False
        self.losses = 0
        self._next_s = -1.0

    def poll(self, now_s: float) -> str | None:
        if self.port.virtual or now_s < self._next_s:
            return None
        self._next_s = now_s + self.interval_s
        if not self.lost and not self.port.present():
            self.lost, self.losses = True, self.losses + 1
            self.log.warning("MIDI %s %r disappeared: releasing its notes; improv keeps running and "
                             "reconnects when it returns", self.direction, self.port.name)
            return "lost"
        if self.lost and self.port.present_again():
            with self.guard():
                back = self.port.reconnect()
            if not back:
                return None
            self.lost = False
            self.log.warning("MIDI %s %r is back; reconnected", self.direction, self.port.name)
            return "back"
        return None


def close_client(client: Any) -> None:
    """Close an rtmidi client's port and the client, whatever state it is in."""
    with contextlib.suppress(Exception):
        client.close_port()
    with contextlib.suppress(Exception):
        client.delete()


def open_monitor(backend: str, name: str) -> Any:
    """An input client with one virtual port, both called `name`, in rtmidi's queue mode (no
    Python callback: nothing waits for the GIL in the MIDI server's cycle); read with
    `get_message()`. MIDI clock is kept, sysex and active sensing are not."""
    client = _client(backend, "in", name)
    try:
        client.ignore_types(sysex=True, timing=False, active_sense=True)
        client.open_virtual_port(name)
    except Exception as err:  # noqa: BLE001 - rtmidi errors while opening
        close_client(client)
        raise MidiPortError(f"cannot open the MIDI monitor {name!r} on {backend}: {err}") from err
    return client


def open_port(kind: str, spec: str | None, backend: str, own_name: str | None = None) -> OpenPort:
    """Open an input (`kind='in'`) or output port by name/index/substring, or a virtual one;
    our end is called `own_name` (by default "improv in" / "improv out")."""
    virtual_name = own_name or (VIRTUAL_IN if kind == "in" else VIRTUAL_OUT)
    client = _client(backend, kind, virtual_name)
    try:
        if spec is None or spec == "":
            if backend == "winmm":
                raise MidiPortError("Windows MM has no virtual ports; pass --in and --out "
                                    "(e.g. loopMIDI port names, see `improv ports`)")
            client.open_virtual_port(virtual_name)
            return OpenPort(client, virtual_name, backend, virtual=True, own_name=virtual_name)
        names = client.get_ports()
        index = resolve(spec, names, "input" if kind == "in" else "output")
        client.open_port(index, virtual_name)
        return OpenPort(client, names[index], backend, virtual=False, spec=spec,
                        own_name=virtual_name)
    except MidiPortError:
        close_client(client)
        raise
    except Exception as err:  # rtmidi errors while opening
        close_client(client)
        raise MidiPortError(f"cannot open MIDI {kind}put {spec or virtual_name!r} on {backend}: "
                            f"{err}") from err


def list_all(backend: str | None = None) -> list[BackendStatus]:
    """Status of one named backend, or of every compiled one."""
    names = [check_backend(backend)] if backend else compiled_backends()
    return [probe(name) for name in names]

