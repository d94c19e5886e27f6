"""`improv run --realtime`: the threads that keep time on SCHED_FIFO, memory locked, where allowed.

The scheduler (it sends) and the engine (it plans) get realtime priorities below a MIDI server's
(a realtime jackd2 runs at 10 by default, its clients' process threads just below), so a realtime jackd still preempts them but nothing else on
the machine does. Memory is locked (mlockall, via ctypes) so a page fault never stalls a send;
only where the memlock limit allows it all (root, or "unlimited"): a partial limit would make
later allocations fail. Where the system refuses, one line says how to allow it and improv
carries on as it was. The start-up's objects (the model, numpy, onnxruntime, the CLI's modules)
are frozen out of the cyclic garbage collector, which then never scans them: a full pass drops
from 8.7 ms to 0.28 ms (docs/TIMING.md), so no collection needs putting off until a quiet moment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
from collections.abc import Mapping

PRIORITIES = {"scheduler": 8, "engine": 7}  # SCHED_FIFO, below jackd's (-P 10 by default)
HOW_TO_ALLOW = ("allow it with '@audio - rtprio 95' and '@audio - memlock unlimited' in "
                "/etc/security/limits.d/audio.conf, join the audio group (sudo usermod -aG audio $USER) "
                "and log in again; improv carries on without")
_MCL_CURRENT, _MCL_FUTURE = 1, 2


def go_realtime(threads: Mapping[str, int | None]) -> list[str]:
    """Realtime scheduling for each named thread (native ids, `threading.get_native_id`), then
    memory locked. Returns what was refused, one line each (empty: all granted)."""
    refused = []
    for name, native_id in threads.items():
        why = set_fifo(native_id, PRIORITIES[name]) if native_id is not None else None
        if why is not None:
            refused.append(f"--realtime: the {name} thread stays on normal scheduling ({why}); {HOW_TO_ALLOW}")
            break  # the next thread would be refused for the same reason
    why = lock_memory()
    if why is not None:
        refused.append(f"--realtime: memory not locked ({why}); {HOW_TO_ALLOW}")
    freeze_heap()
    return refused


def freeze_heap() -> None:
    """Collect once, then move every object alive now out of the collector's reach (gc.freeze)."""
    gc.collect()
    gc.freeze()


def set_fifo(native_id: int, priority: int) -> str | None:
    """SCHED_FIFO at `priority` for one thread; None when granted, else why not."""
    try:
        os.sched_setscheduler(native_id, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return f"not permitted: realtime priority limit {_limit(resource.RLIMIT_RTPRIO)}"
    except (AttributeError, OSError) as err:  # no SCHED_FIFO here (macOS, Windows), or the thread ended
        return f"not available: {err}"
    return None


def lock_memory() -> str | None:
    """mlockall(current and future) where the limit allows all of it; None when locked."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:
        return f"the memlock limit is {_limit(resource.RLIMIT_MEMLOCK)}"
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
        return f"mlockall refused: {os.strerror(ctypes.get_errno())}"
    return None


def _limit(which: int) -> str:
    soft, _ = resource.getrlimit(which)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
