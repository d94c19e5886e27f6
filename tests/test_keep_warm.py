"""time.keep_warm_ms / --keep-warm: while the engine thread idles it steps the playing model on a
scratch state of its own; the session hears, counts and times nothing of it."""

from __future__ import annotations

import time

import pytest

from improv.clock import ManualClock, MonotonicClock
from improv.commands.run import build_overrides
from improv.daemon import Daemon
from improv.engine import Engine
from improv.errors import ConfigError
from improv.events import NoteOff, NoteOn
from improv.midi_in import MidiInput
from improv.model_step import StepModel
from improv.settings import load_settings
from tests.fakes import FakeMidiOut


@pytest.fixture(scope="module", params=["tiny_model_dir", "tiny_wavenet_dir"])
def model(request):
    return StepModel.load(request.getfixturevalue(request.param))


def duet(model, **overrides):
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    settings = load_settings(None, {"time.bpm": 120.0, "sampling.seed": 5, "mode.mode": "duet", **overrides})
    return Engine(model, settings, clock, port), port


def melody():
    events = []
    for i in range(12):
        t, p = 1.0 + i * 0.37, 40 + (i * 5) % 12
        events += [NoteOn(t, 0, p, 90), NoteOff(t + 0.2, 0, p)]
    return events


def play(engine, warm_steps: int) -> None:
    """The session in 10-ms slices, `warm_steps` scratch steps between slices."""
    events, t = melody(), 0.0
    while t < 8.0:
        t = round(t + 0.01, 6)
        engine.run_until(t, [e for e in events if t - 0.01 < e.t_s <= t])
        for _ in range(warm_steps):
            engine.keep_warm()


def test_scratch_steps_between_the_players_notes_change_nothing_the_session_plays(model):
    plain, plain_port = duet(model)
    play(plain, 0)
    warmed, warmed_port = duet(model)
    play(warmed, 5)
    sent = [(round(s, 6), m.bytes()) for s, m in plain_port.sent]
    assert len(sent) > 20 and [(round(s, 6), m.bytes()) for s, m in warmed_port.sent] == sent
    assert warmed.improviser.model.steps == plain.improviser.model.steps  # scratch steps are not counted


def counting(model, monkeypatch) -> list[int]:
    calls: list[int] = []
    step = model.step

    def step_counted(token, state):
        calls.append(token)
        return step(token, state)

    monkeypatch.setattr(model, "step", step_counted)
    return calls


@pytest.mark.parametrize("keep_warm_ms", [0.0, 1.0])
def test_the_idle_engine_thread_steps_only_when_asked(tiny_model_dir, monkeypatch, keep_warm_ms):
    model = StepModel.load(tiny_model_dir)
    settings = load_settings(None, {"time.keep_warm_ms": keep_warm_ms})
    daemon = Daemon(Engine(model, settings, MonotonicClock(), FakeMidiOut(MonotonicClock())), MidiInput(None))
    calls = counting(model, monkeypatch)
    daemon.start()
    try:
        time.sleep(0.1)  # the context's first step (BOS) is the session's
        session_steps, calls_before = daemon.engine.improviser.model.steps, len(calls)
        time.sleep(0.5)
    finally:
        daemon.stop()
    scratch = len(calls) - calls_before
    if keep_warm_ms:
        assert scratch >= 50, f"{scratch} scratch steps in 0.5 s at one a millisecond"
    else:
        assert scratch == 0
    assert daemon.engine.improviser.model.steps == session_steps  # nothing the view or the bench counts


def test_the_setting_and_the_flag():
    assert load_settings(None, {"time.keep_warm_ms": 1.0}).time.keep_warm_ms == 1.0
    for bad in (0.1, -1.0, 50.0):
        with pytest.raises(ConfigError, match="time.keep_warm_ms"):
            load_settings(None, {"time.keep_warm_ms": bad})
    assert build_overrides(keep_warm_ms=1.0) == {"time.keep_warm_ms": 1.0}
    assert build_overrides(keep_warm_ms=None) == {}
