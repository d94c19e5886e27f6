"""A process pool whose jobs have a time limit that is enforced by killing the worker.

`concurrent.futures` cannot stop a running job, and a music parser can hang on a hostile file, so
each worker here is a `multiprocessing` process we own: a job past its deadline gets its worker
killed and replaced, a worker that dies takes only its own job with it. Workers are spawned (not
forked), so a rich progress thread or a torch thread pool in the parent is never copied mid-lock;
the price is one interpreter start per worker, paid once per run. A worker whose parent is killed
outright exits by itself within `ORPHAN_CHECK_S`. Jobs name module-level functions
of importable modules only, so a worker never re-runs the caller's ``__main__`` (see `_spawning`):
calling `load_dataset` from a script without an ``if __name__ == "__main__"`` guard still works.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import connection, get_context
from typing import Any

from improv.errors import DataError
from training.corpus import describe_error

ORPHAN_CHECK_S = 0.5  # how soon a worker notices that its parent was killed


@dataclass(frozen=True)
class Outcome:
    """What one job gave: ``value`` when ``ok``, else a one-line ``error`` (exception, timeout, crash)."""

    ok: bool
    value: Any = None
    error: str = ""


def default_workers(jobs: int) -> int:
    return max(1, min(os.cpu_count() or 1, jobs))


def run_jobs(fn: Callable, jobs: Sequence[tuple], *, workers: int, timeout_s: float,
             on_done: Callable[[int, Outcome], None] | None = None) -> list[Outcome]:
    """``fn(*job)`` for every job; `fn` must be a module-level function (it is sent by reference).

    ``workers=0`` runs in this process without a time limit (for debugging with a debugger).
    """
    if workers <= 0:
        return [_inline(fn, job, i, on_done) for i, job in enumerate(jobs)]
    outcomes: list[Outcome | None] = [None] * len(jobs)

    def finish(index: int, outcome: Outcome) -> None:
        outcomes[index] = outcome
        if on_done:
            on_done(index, outcome)

    _Scheduler(fn, jobs, min(workers, len(jobs)), timeout_s, finish).run()
    return outcomes  # type: ignore[return-value]


def _inline(fn: Callable, job: tuple, index: int, on_done) -> Outcome:
    try:
        outcome = Outcome(True, fn(*job))
    except Exception as err:  # noqa: BLE001 - one failed job must not end the run
        outcome = Outcome(False, error=describe_error(err))
    if on_done:
        on_done(index, outcome)
    return outcome


def _serve(conn, fn: Callable) -> None:
    """Worker loop: say ready, then answer ``(index, args)`` messages until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_exit_with_parent, name="orphan-watch", daemon=True).start()
    conn.send("ready")
    while (message := conn.recv()) is not None:
        index, args = message
        try:
            reply = (index, Outcome(True, fn(*args)))
        except Exception as err:  # noqa: BLE001
            reply = (index, Outcome(False, error=describe_error(err)))
        conn.send(reply)


def _exit_with_parent(interval_s: float = ORPHAN_CHECK_S) -> None:
    """A worker whose parent was killed (SIGKILL runs no cleanup) would otherwise live on, stuck
    in a hanging parse; this thread ends it once the parent is gone."""
    parent = multiprocessing.parent_process()
    while parent is not None:
        parent.join(interval_s)  # returns at once when the parent has exited
        if not parent.is_alive():
            os._exit(1)


@contextmanager
def _spawning() -> Iterator[None]:
    """Hide the main module's path and spec while a worker starts, so `multiprocessing` does not
    re-import (and so re-run) the caller's script in the worker; workers need nothing from it."""
    main = sys.modules["__main__"]
    missing = object()
    file, spec = main.__dict__.pop("__file__", missing), getattr(main, "__spec__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not missing:
            main.__file__ = file


class _Worker:
    """One spawned process and its pipe; the deadline starts when a job is sent, not at spawn."""

    def __init__(self, ctx, fn: Callable) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, fn), daemon=True)
        with _spawning():
            self.process.start()
        child.close()
        self.ready = False
        self.job: int | None = None
        self.deadline = float("inf")

    def send(self, index: int, args: tuple, timeout_s: float) -> None:
        self.conn.send((index, args))
        self.job, self.deadline = index, time.monotonic() + timeout_s

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.process.join(timeout=2.0)
        except (OSError, ValueError):
            pass
        if self.process.is_alive():
            self.kill()
        self.conn.close()


class _Scheduler:
    """Feeds jobs to ready workers; replaces a worker that times out or dies."""

    def __init__(self, fn, jobs, workers: int, timeout_s: float, finish) -> None:
        self.ctx = get_context("spawn")
        self.fn, self.jobs, self.timeout_s, self.finish = fn, jobs, timeout_s, finish
        self.todo = deque(range(len(jobs)))
        self.pool = [_Worker(self.ctx, fn) for _ in range(workers)]

    def run(self) -> None:
        try:
            while self.todo or any(w.job is not None for w in self.pool):
                self._dispatch()
                ready = connection.wait([w.conn for w in self.pool], timeout=self._wait_s())
                for worker in list(self.pool):
                    if worker.conn in ready:
                        self._receive(worker)
                    elif worker.job is not None and time.monotonic() >= worker.deadline:
                        self._replace(worker, f"timed out after {self.timeout_s:g} s (parse killed)")
        finally:
            for worker in self.pool:
                worker.stop()

    def _dispatch(self) -> None:
        for worker in self.pool:
            if worker.ready and worker.job is None and self.todo:
                index = self.todo.popleft()
                worker.send(index, self.jobs[index], self.timeout_s)

    def _wait_s(self) -> float:
        deadline = min((w.deadline for w in self.pool if w.job is not None), default=float("inf"))
        return max(0.0, min(deadline - time.monotonic(), 1.0))

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join()
            if worker.job is None:
                raise DataError(f"a parser worker died on start (exit code {worker.process.exitcode}); "
                                "rerun with workers=0 to see why") from None
            self._replace(worker, f"parser process died (exit code {worker.process.exitcode})")
            return
        if message == "ready":
            worker.ready = True
            return
        index, outcome = message
        worker.job, worker.deadline = None, float("inf")
        self.finish(index, outcome)

    def _replace(self, worker: _Worker, error: str) -> None:
        index = worker.job
        worker.kill()
        self.pool[self.pool.index(worker)] = _Worker(self.ctx, self.fn)
        self.finish(index, Outcome(False, error=error))
