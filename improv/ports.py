"""List and open MIDI ports through python-rtmidi, one backend (rtmidi API) at a time.

Backends are ALSA and JACK (Linux), CoreMIDI (macOS) and Windows MM, as far as this build of
rtmidi has them compiled in; on JACK, improv's own client (`improv.jack_midi`, same surface) where
it is built. Opening a client where the MIDI system is missing makes the C library print to stderr
(and, for JACK, can stall), so every client is created through `_client`, which silences fd 2 and,
for JACK, gives up after `PROBE_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from improv.errors import MidiPortError
from improv.jack_midi import JackMidiClient
from improv.jack_midi import available as jack_midi_available
from improv.midi_port import OpenPort, close_client, resolve

log = logging.getLogger(__name__)

BACKENDS = ("alsa", "jack", "coremidi", "winmm")
_API_NAMES = {"alsa": "API_LINUX_ALSA", "jack": "API_UNIX_JACK",  # our name -> rtmidi's constant
              "coremidi": "API_MACOSX_CORE", "winmm": "API_WINDOWS_MM"}
VIRTUAL_IN = "improv in"
VIRTUAL_OUT = "improv out"
PROBE_TIMEOUT_S = 2.0
ALSA_SEQ = "/dev/snd/seq"
JACK_MIDI_ENV = "IMPROV_JACK_MIDI"  # "rtmidi": python-rtmidi's JACK client instead of improv's
RUN_WAIT_S = 0.5  # improv's JACK client not run this long after activation is stuck
OPEN_TRIES = 3
CLOSE_TIMEOUT_S = 1.0

FIX_ALSA = (f"no ALSA sequencer ({ALSA_SEQ} missing): load it with `sudo modprobe snd-seq`, "
            "or start JACK and pass --backend jack")
FIX_JACK = ("no JACK server running: start one (e.g. `jackd -d alsa` or QjackCtl), "
            + ("or pass --backend coremidi" if sys.platform == "darwin" else "or pass --backend alsa"))


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


def native_jack() -> bool:
    """Whether JACK ports are improv's own client (`improv.jack_midi`): when it is built, unless
    IMPROV_JACK_MIDI=rtmidi asks for python-rtmidi's."""
    return os.environ.get(JACK_MIDI_ENV, "").lower() != "rtmidi" and jack_midi_available()


def _client(backend: str, kind: str, client_name: str) -> Any:
    """Create an rtmidi MidiIn/MidiOut on `backend` (on JACK, improv's own client with the same
    surface, see `native_jack`), quietly, with a time limit.

    Raises MidiPortError with the reason and the fix when the MIDI system is not there.
    """
    reason = _precheck(backend)
    if reason:
        raise MidiPortError(reason)
    if backend == "jack" and native_jack():
        cls, api = JackMidiClient, kind
    else:
        rtmidi = _rtmidi()
        cls = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
        api = getattr(rtmidi, _API_NAMES[backend])
    box: dict[str, Any] = {}

    def create() -> None:
        try:
            box["client"] = cls(api, client_name)
        except Exception as err:  # rtmidi.SystemError, OSError from libjack and friends
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


def open_monitor(backend: str, name: str) -> Any:
    """An input client with one virtual port, both called `name`, in rtmidi's queue mode (no
    Python callback: nothing waits for the GIL in the MIDI server's cycle); read with
    `get_message()`. MIDI clock is kept, sysex and active sensing are not."""
    return _running(lambda: _monitor_once(backend, name), name)


def _monitor_once(backend: str, name: str) -> Any:
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
    return _running(lambda: _open_once(kind, spec, backend, virtual_name), virtual_name)


def _running(open_once: Callable[[], Any], name: str) -> Any:
    """What `open_once` opens, once JACK has run it: improv's JACK client counts its cycles, and
    one the server never runs (a stale wake-up left by a client that closed while this process
    opened one, issue 13, docs/LIVE.md) would hear or send nothing. It is closed and opened
    again, at most `OPEN_TRIES` times, each said in the log."""
    for _ in range(OPEN_TRIES):
        opened = open_once()
        client = opened.rt if isinstance(opened, OpenPort) else opened
        if not isinstance(client, JackMidiClient) or client.wait_running(RUN_WAIT_S):
            return opened
        log.warning("JACK did not run improv's client %r within %g s: opening it again", name, RUN_WAIT_S)
        close_soon(client)
    raise MidiPortError(f"JACK never ran improv's client {name!r} ({OPEN_TRIES} tries): "
                        "restart the JACK server and improv")


def close_soon(client: Any, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close `client` on a helper thread, waiting at most `timeout_s` (a stuck client may never
    finish closing)."""
    closer = threading.Thread(target=close_client, args=(client,), name="improv-close", daemon=True)
    closer.start()
    closer.join(timeout_s)


def _open_once(kind: str, spec: str | None, backend: str, virtual_name: str) -> OpenPort:
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

