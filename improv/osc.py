"""OSC control (`--osc PORT`, python-osc): every setting a CC can change, the model, the mode and
panic, from a tablet, Max, Pd or a script; improv's state goes back to a configured target.

The server thread only parses and hands on (`deliver`, like the MIDI callback's queue): the
engine thread applies (`Engine.remote`). Unknown addresses and wrong argument types are logged
once per address and problem, and ignored. The port listens on 127.0.0.1 unless `osc.host`
(`--osc-host`) asks for more. The main thread sends the state (`publish`): what changed, to the
target, a few times a second, and all of it in answer to `/improv/get` (to the target, or else to
whoever asked). Addresses: README.md ("OSC") and docs/LIVE.md.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from improv.errors import ConfigError
from improv.settings import OscSettings

log = logging.getLogger(__name__)

PREFIX = "/improv/"
STATE_PREFIX = "/improv/state/"
# address -> (what it sets, the arguments it takes: "f" a number, "i" an integer, "s" a string, "" none)
ADDRESSES: dict[str, tuple[str, str]] = {
    "/improv/temperature": ("temperature", "f"),
    "/improv/follow": ("follow", "fs"),  # 0..1, or "auto"
    "/improv/length": ("length", "is"),  # bars (0: as long as the call), or "call" / "8 beats" / "2 bars"
    "/improv/mode": ("mode", "s"),  # "call" | "duet"
    "/improv/model": ("model", "is"),  # a position (0 = the first of --models) or a name
    "/improv/end": ("end", ""),  # the phrase ends now (as the end CC)
    "/improv/panic": ("panic", ""),  # every note released, All Notes Off
    "/improv/get": ("get", ""),  # the whole state, sent back
}
_KINDS = {"f": "a number", "i": "an integer", "s": "a string"}


def parse(address: str, args: Sequence[Any]) -> tuple[str, Any] | str:
    """(what, value) for a message improv understands, else the one-line reason it does not."""
    if address not in ADDRESSES:
        return f"unknown address (known: {', '.join(ADDRESSES)})"
    name, kinds = ADDRESSES[address]
    if not kinds:
        return (name, None) if not args else "takes no arguments"
    if len(args) == 1:
        for kind in kinds:
            value = _as(kind, args[0])
            if value is not None:
                return name, value
    return f"takes one argument, {' or '.join(_KINDS[k] for k in kinds)}; got {list(args)!r}"


def _as(kind: str, value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if kind == "f" and isinstance(value, (int, float)):
        return float(value)
    if kind == "i" and isinstance(value, int):
        return value
    if kind == "i" and isinstance(value, float) and value.is_integer():
        return int(value)  # Max and Pd send numbers as floats
    return value if kind == "s" and isinstance(value, str) else None


class OscServer:
    """The OSC port (bound on construction, so a bad port is an error before any MIDI port
    opens), its server thread (`start`), and the state sent back (`publish`, main thread)."""

    def __init__(self, settings: OscSettings, deliver: Callable[[str, Any], None] | None = None) -> None:
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import BlockingOSCUDPServer

        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._on_message, needs_reply_address=True)
        host, port = settings.host, settings.port
        try:
            self.server = BlockingOSCUDPServer((host, port), dispatcher)
        except OSError as err:
            raise ConfigError(f"--osc {port}: cannot listen on {host}:{port} ({err.strerror or err}); "
                              "pick another port, or check --osc-host") from None
        self.deliver = deliver or (lambda name, value: None)
        self.gets: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()  # who asked for the state
        self.target = settings.target_address
        self._sent: dict[str, Any] = {}  # the state as the target last heard it
        self._logged: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="improv-osc", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=2.0)
        self.server.server_close()

    def _on_message(self, sender: tuple[str, int], address: str, *args: Any) -> None:
        """The server thread: parse and hand on, nothing else."""
        parsed = parse(address, args)
        if isinstance(parsed, str):
            if (address, parsed) not in self._logged:
                self._logged.add((address, parsed))
                log.warning("OSC %s: %s; ignored", address, parsed)
        elif parsed[0] == "get":
            self.gets.put(sender)
        else:
            self.deliver(*parsed)

    def publish(self, state: Mapping[str, Any]) -> None:
        """Main thread: what changed to the target; everything to whoever sent /improv/get."""
        if self.target is not None:
            changed = {k: v for k, v in state.items() if self._sent.get(k) != v}
            self._send(changed, self.target)
            self._sent.update(changed)
        while True:
            try:
                sender = self.gets.get_nowait()
            except queue.Empty:
                return
            self._send(state, self.target or sender)

    def _send(self, state: Mapping[str, Any], to: tuple[str, int]) -> None:
        from pythonosc.osc_message_builder import OscMessageBuilder

        for key, value in state.items():
            builder = OscMessageBuilder(STATE_PREFIX + key)
            builder.add_arg(value)
            self.server.socket.sendto(builder.build().dgram, to)  # from the OSC port: replies come from it
