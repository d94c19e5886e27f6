"""The JACK graph seen through libjack.so.0 (ctypes): whose ports these are, what they connect
to, and connecting them again. For `improv.output_watch`.

One client, opened with JackNoStartServer and never activated: an unactivated client has no
process callback, so the server never waits on it, and it can still look ports up
(jack_port_by_name, jack_port_get_all_connections) and connect ports. Which port is ours is told
by the ports list before and after we open one (`new_port`): JACK renames a taken client name
("improv out-01"), and libjack's jack_get_client_pid is not implemented on the library side.
ctypes releases the GIL for each call, so none of these holds the interpreter while the server
answers (python-rtmidi's open/close do hold it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
from typing import Any

NO_START_SERVER = 0x01  # JackOptions.JackNoStartServer
GRAPH_CLIENT = "improv graph"


def _lib() -> Any:
    name = ctypes.util.find_library("jack") or "libjack.so.0"
    lib = ctypes.CDLL(name)
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    lib.jack_port_by_name.restype = ctypes.c_void_p
    lib.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.jack_port_get_all_connections.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.jack_port_get_all_connections.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.jack_get_ports.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.jack_get_ports.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
    lib.jack_free.argtypes = [ctypes.c_void_p]
    lib.jack_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    return lib


class JackGraph:
    """Queries and connections on the running JACK server. `open()` raises OSError when libjack
    or the server is missing."""

    def __init__(self, lib: Any, client: int) -> None:
        self._lib, self._client = lib, client

    @classmethod
    def open(cls, name: str = GRAPH_CLIENT) -> JackGraph:
        lib = _lib()
        status = ctypes.c_int(0)
        client = lib.jack_client_open(name.encode(), NO_START_SERVER, ctypes.byref(status))
        if not client:
            raise OSError(f"jack_client_open failed (status 0x{status.value:x})")
        return cls(lib, client)

    def close(self) -> None:
        if self._client:
            self._lib.jack_client_close(self._client)
            self._client = 0

    def ports(self, pattern: str = "") -> list[str]:
        """Full names of the ports whose names match the regex `pattern` (all: "")."""
        return self._names(self._lib.jack_get_ports(self._client, pattern.encode() or None, None, 0))

    def connections(self, port: str) -> set[str] | None:
        """Full names of the ports `port` is connected to; None when there is no such port."""
        handle = self._lib.jack_port_by_name(self._client, port.encode())
        if not handle:
            return None
        return set(self._names(self._lib.jack_port_get_all_connections(self._client, handle)))

    def connect(self, source: str, destination: str) -> bool:
        """Connect source -> destination; True when connected (already connected counts)."""
        result = self._lib.jack_connect(self._client, source.encode(), destination.encode())
        return result in (0, errno.EEXIST)

    def new_port(self, short_name: str, before: set[str]) -> str | None:
        """The one port called `short_name` ("<any client>:<short_name>") not among `before`
        (the ports listed before we opened ours), or None when there is not exactly one."""
        hits = [p for p in self.ports() if p.rpartition(":")[2] == short_name and p not in before]
        return hits[0] if len(hits) == 1 else None

    def _names(self, array: Any) -> list[str]:
        return port_names(array, self._lib.jack_free)


def port_names(array: Any, free: Any) -> list[str]:
    """The strings of a NULL-terminated `const char **` from libjack, which `free` then frees."""
    if not array:
        return []
    names = []
    i = 0
    while array[i] is not None:
        names.append(array[i].decode(errors="replace"))
        i += 1
    free(ctypes.cast(array, ctypes.c_void_p))
    return names
