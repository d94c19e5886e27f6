"""An opened MIDI port (`OpenPort`): what it is connected to, what to call it, sending, and
connecting again; and how the user names a port.

A port is named by exact name, by index, or by a unique substring (case-insensitive); anything else
is a `MidiPortError` whose one line lists the candidates. With no name, improv creates virtual
ports: the client and the port are both called "improv in" / "improv out", so JACK shows
"improv in:improv in" and ALSA a client "improv in" (two clients with one name would be renamed
"improv-01" by JACK).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from improv.errors import MidiPortError


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
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # send vs reconnect

    def send(self, msg: Any) -> None:
        """Send a mido.Message now (what `improv.midi_out.MidiOut` calls); raises on port errors."""
        self.send_at(msg, 0.0)

    def send_at(self, msg: Any, due_s: float) -> None:
        """Send at `due_s` where the client can (improv's JACK client: at that frame, handed over
        `lead_s()` ahead; 0: now); elsewhere now. Raises on port errors."""
        data = msg.bytes()
        with self._lock:
            if self.closed:
                raise MidiPortError(f"MIDI port {self.own_name or self.name!r} is closed")
            send_at = getattr(self.rt, "send_at", None)
            if send_at is None:
                self.rt.send_message(data)
            else:
                send_at(data, due_s)
            self.sent += 1

    def lead_s(self) -> float:
        """How far ahead of its due time `send_at` wants a message (0: the client sends at once)."""
        lead = getattr(self.rt, "lead_s", None)
        return float(lead()) if lead is not None else 0.0

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
        """Close the client; never during a send, and a send after this raises."""
        with self._lock:
            close_client(self.rt)
            self.closed = True


def _match(spec: str | None, names: list[str]) -> int | None:
    """The one port a (non-numeric) spec names among `names`, or None."""
    if not spec or spec.strip().isdigit():
        return None  # an index names whatever sits there now: not the device that left
    try:
        return resolve(spec, names)
    except MidiPortError:
        return None


def close_client(client: Any) -> None:
    """Close an rtmidi client's port and the client, whatever state it is in."""
    with contextlib.suppress(Exception):
        client.close_port()
    with contextlib.suppress(Exception):
        client.delete()
