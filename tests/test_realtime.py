"""--realtime: refused -> one line saying how to allow it, and improv carries on; granted (root
here) -> the scheduler's and the engine's threads on SCHED_FIFO, checked on their native ids."""

from __future__ import annotations

import gc
import logging
import os
import threading

import pytest

from improv import realtime
from improv.clock import MonotonicClock
from improv.daemon import Daemon
from improv.midi_in import MidiInput
from improv.settings import load_settings
from tests.fakes import FakeMidiOut, FakeModel

linux_only = pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="SCHED_FIFO is Linux's")


@pytest.fixture
def daemon():
    from improv.engine import Engine

    engine = Engine(FakeModel(), load_settings(None, {"sampling.seed": 1}), MonotonicClock(), FakeMidiOut())
    d = Daemon(engine, MidiInput(None))
    d.start()
    yield d
    d.stop()


@linux_only
def test_refused_is_one_line_saying_how_to_allow_it(daemon, monkeypatch, caplog):
    def refuse(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr(realtime, "lock_memory", lambda: "the memlock limit is 65536")
    monkeypatch.setattr(realtime, "freeze_heap", lambda: None)
    from improv.serve import _realtime

    with caplog.at_level(logging.WARNING):
        _realtime(daemon)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # threads, memory: one line each, not one per thread
    assert all("limits.d" in line and "audio group" in line and "carries on" in line for line in lines)
    assert "\n" not in "".join(lines)
    assert os.sched_getscheduler(daemon.thread_ids()["scheduler"]) == os.SCHED_OTHER


@linux_only
@pytest.mark.skipif(os.geteuid() != 0, reason="granting SCHED_FIFO needs root (or an rtprio limit)")
def test_granted_puts_both_threads_on_sched_fifo(daemon, monkeypatch):
    monkeypatch.setattr(realtime, "lock_memory", lambda: None)  # mlockall would pin the test process
    ids = daemon.thread_ids()
    assert None not in ids.values() and len(set(ids.values())) == 2
    try:
        assert realtime.go_realtime(ids) == []
        assert gc.get_freeze_count() > 1000  # the start-up's objects, out of the collector's reach
    finally:
        gc.unfreeze()
    for name, native_id in ids.items():
        assert os.sched_getscheduler(native_id) == os.SCHED_FIFO, name
        assert os.sched_getparam(native_id).sched_priority == realtime.PRIORITIES[name]
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER  # only those two


def test_lock_memory_says_why_under_a_limit(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(realtime.resource, "getrlimit", lambda _which: (65536, 65536))
    assert realtime.lock_memory() == "the memlock limit is 65536"


@linux_only
@pytest.mark.jack
@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="granting SCHED_FIFO needs root (or an rtprio limit)")
def test_improv_run_realtime_over_jack_runs_its_threads_on_sched_fifo(jack_server, tiny_model_dir, tmp_path):
    from benchmarks.harness.improv_process import ImprovProcess

    improv = ImprovProcess.started(tiny_model_dir, ["--backend", "jack", "--realtime"], jack_server.env, tmp_path)
    try:
        threads = improv.info["threads"]
        assert set(threads) == {"scheduler", "engine"}
        for name, native_id in threads.items():
            assert os.sched_getscheduler(native_id) == os.SCHED_FIFO, name
        assert "--realtime" not in improv.output(), improv.output()  # nothing refused
    finally:
        assert improv.stop() == 0, improv.output()[-1500:]
