"""Live model switching (improv.switch) through the engine on a ManualClock: Program Change and the
model CC select a preloaded model by position; it is primed on the recent notes and takes over at
the next answer (call) or re-plan (duet); nothing sounding is cut or left stuck.

The two fake models have vocabularies that share no pitch (LOW: 36..63, HIGH: 64..96), so every
note says which model played it. At 120 bpm a beat is 0.5 s."""

from __future__ import annotations

import logging
import threading

import pytest

from improv.clock import ManualClock
from improv.engine import Engine
from improv.events import Control, NoteOff, NoteOn, ProgramChange
from improv.pairing import pair_messages
from improv.settings import load_settings
from improv.switch import ModelSwitch, make_slots
from improv.tokens import TokenConfig, Vocabulary, split_name
from tests.fakes import FakeModel, FakeMidiOut

SPB = 0.5
SPLIT = 64  # LOW plays below, HIGH at and above


def fake(name: str, lo: int, hi: int, seed: int) -> FakeModel:
    model = FakeModel(seed, Vocabulary(TokenConfig(pitch_min=lo, pitch_max=hi)))
    model.name = name
    return model


def make(overrides=None, models=None):
    models = models or [fake("low", 36, SPLIT - 1, 1), fake("high", SPLIT, 96, 2)]
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    s = load_settings(None, {"time.bpm": 120.0, "sampling.seed": 5, "sampling.key": "off", **(overrides or {})})
    return Engine(models[0], s, clock, port, more_models=models[1:]), port, models


def call(start_beats: float, pitches=(60, 62, 64, 65, 67, 65, 64, 62)) -> list:
    events = []
    for i, p in enumerate(pitches):
        t = (start_beats + i * 0.5) * SPB
        events += [NoteOn(t, 0, p, 90), NoteOff(t + 0.4 * SPB, 0, p)]
    return events


def pitches_between(port, t0: float, t1: float) -> list[int]:
    return [m.note for t, m in port.note_ons() if t0 <= t < t1]


def test_a_program_change_makes_the_next_answer_the_new_models_and_primes_it_on_the_call():
    engine, port, (low, high) = make()
    engine.run_until(12 * SPB, call(2.0))  # call 1 (beats 2..6), answer 1 from "low"
    first = pitches_between(port, 0, 12 * SPB)
    assert first and max(first) < SPLIT
    assert [a.model for a in engine.improviser.answers] == ["low"]
    engine.run_until(13.5 * SPB, [ProgramChange(13 * SPB, 0, 1)])
    primed = list(high.fed)
    assert {high.vocab.id("ON_65"), high.vocab.id("OFF_67")} <= set(primed), "primed on call 1"
    engine.run_until(24 * SPB, call(14.0, (69, 71, 72, 74, 76, 74, 72, 71)))  # call 2
    second = pitches_between(port, 18 * SPB, 24 * SPB)
    assert second and min(second) >= SPLIT, f"answer 2 came from the old model: {second}"
    assert [a.model for a in engine.improviser.answers] == ["low", "high"]
    assert engine.improviser.model_name == "high"
    engine.run_until(40 * SPB)
    assert port.sounding() == set(), "every note-on is released, the switch included"


def test_a_switch_during_an_answer_lets_the_answer_finish():
    engine, port, _ = make({"mode.response_length": "4 beats"})
    engine.run_until(7.2 * SPB, call(2.0))  # answer 1 plays beats 7..11
    assert engine.improviser.state == "responding"
    engine.run_until(12 * SPB, [ProgramChange(7.3 * SPB, 0, 1)])
    rest = pitches_between(port, 7.3 * SPB, 11 * SPB)
    assert rest and max(rest) < SPLIT, "the answer under way is the old model's to the end"
    engine.run_until(24 * SPB, call(13.0))
    assert min(pitches_between(port, 17 * SPB, 24 * SPB)) >= SPLIT
    assert port.sounding() == set()


def test_a_program_with_no_model_is_one_log_line_and_changes_nothing(caplog):
    engine, port, _ = make()
    with caplog.at_level(logging.WARNING):
        engine.run_until(12 * SPB, [ProgramChange(1.0, 0, 7), *call(2.0)])
    lines = [r.getMessage() for r in caplog.records if "model switch" in r.getMessage()]
    assert len(lines) == 1 and "no model at position 7" in lines[0] and "0: low, 1: high" in lines[0]
    assert max(pitches_between(port, 0, 12 * SPB)) < SPLIT
    assert engine.improviser.model_name == "low"


def test_the_model_cc_spreads_its_range_over_the_models_and_the_follow_cc_holds_across():
    engine, port, _ = make()
    engine.run_until(1.0, [Control(0.2, 0, 24, 127), Control(0.5, 0, 25, 127)])
    assert engine.improviser.model_name == "high"
    assert engine.improviser.blend.memory_weight == 0.9, "the new model's blend follows the follow CC"
    engine.run_until(2.0, [Control(1.5, 0, 25, 63)])
    assert engine.improviser.model_name == "low"


def test_a_request_taken_back_before_it_primed_costs_nothing():
    engine, port, (low, high) = make()
    engine.run_until(1.0, [ProgramChange(0.5, 0, 1), ProgramChange(0.5, 0, 0)])
    assert engine.improviser.model_name == "low" and engine.improviser.switch.wanted is None
    assert high.fed == [], "a switch taken back is never primed"


def test_a_duet_switch_takes_over_at_a_re_plan_and_leaves_nothing_stuck():
    engine, port, _ = make({"mode.mode": "duet"})
    notes = [e for k in range(4) for e in call(2.0 + 4 * k)]
    switch_t = 9.0 * SPB
    engine.run_until(20 * SPB, [*notes, ProgramChange(switch_t, 0, 1)])
    before = pitches_between(port, 0, switch_t)
    after = pitches_between(port, switch_t + 0.06, 20 * SPB)  # past the re-plan's guard (at most 50 ms)
    assert before and max(before) < SPLIT and after and min(after) >= SPLIT
    engine.run_until(60 * SPB)  # the duet stops max_response_beats after the player
    assert port.sounding() == set()
    played, _ = pair_messages([(t, m.bytes()) for t, m in port.sent], restrike_ends=False)
    longest = max(n.end - n.start for n in played)  # max_note_beats = 4, and the re-plan's guard
    assert longest <= 4.5 * SPB, f"a note the new model could not end held {longest / SPB:g} beats"


def test_priming_runs_on_the_worker_thread_not_the_engine_thread():
    threads: list[str] = []

    class Recording(FakeModel):
        def step(self, token_id, state):
            threads.append(threading.current_thread().name)
            return super().step(token_id, state)

    low, high = fake("low", 36, 63, 1), Recording(2, Vocabulary(TokenConfig(pitch_min=64, pitch_max=96)))
    settings = load_settings(None, {})
    switch = ModelSwitch(make_slots([low, high], settings.listen, None), 0.3)
    engine, port, _ = make(models=[low, high])
    history = engine.improviser.history
    engine.run_until(6 * SPB, call(2.0))
    switch.start()
    try:
        assert switch.select(1, history) is None
        primed = None
        for _ in range(200):
            primed = primed or switch.poll()
            if primed is not None:
                break
            threading.Event().wait(0.01)
    finally:
        switch.stop()
    assert primed is not None and primed.count == history.count
    assert threads and set(threads) == {"improv-switch"}


def test_a_shared_memory_is_not_taught_the_history_again_another_vocabularys_is():
    same = [fake("a", 36, 96, 1), fake("b", 36, 96, 2), fake("c", 40, 90, 3)]
    engine, port, _ = make(models=same)
    imp = engine.improviser
    engine.run_until(6.5 * SPB, call(2.0))  # the call heard, the answer not begun
    seen = imp.memory.tokens_seen
    engine.run_until(6.6 * SPB, [ProgramChange(6.55 * SPB, 0, 1)])
    assert imp.model_name == "b" and imp.memory is imp.switch.slots[0].memory
    assert imp.memory.tokens_seen - seen < 10, "the shared memory learned the history twice"
    engine.run_until(6.7 * SPB, [ProgramChange(6.65 * SPB, 0, 2)])
    assert imp.model_name == "c" and imp.memory is not imp.switch.slots[0].memory
    assert imp.memory.tokens_seen >= 16, "another vocabulary's memory learns the recent notes"


def gap_before_last(model: FakeModel, pitch: int) -> int:
    """The SHIFT ticks the model stepped right before its last ON of `pitch`."""
    i = len(model.fed) - 1 - model.fed[::-1].index(model.vocab.id(f"ON_{pitch}"))
    ticks = 0
    while (kind_value := split_name(model.vocab.name(model.fed[i - 1])))[0] == "SHIFT":
        ticks, i = ticks + kind_value[1], i - 1
    return ticks


def test_notes_heard_while_priming_reach_the_new_model_once_on_the_moved_grid():
    gaps, counts = [], []
    for switch in (False, True):
        a, b = fake("a", 36, 96, 1), fake("b", 36, 96, 2)
        engine, port, _ = make(models=[a, b])
        engine.run_until(2.9, call(0.5, (60,)))  # a call, its answer (ending at 1.75 s), then idle
        shifted = engine.improviser.history.shifted
        # the first note of a call made while idle moves the grid; both come after the switch's snapshot
        engine.run_until(3.01, [*([ProgramChange(3.0, 0, 1)] if switch else []), NoteOn(3.0, 0, 70, 90)])
        gaps.append(gap_before_last(b if switch else a, 70))
        counts.append(engine.improviser.history.count)
    imp = engine.improviser
    assert imp.model_name == "b" and imp.context.ready
    assert b.fed.count(b.vocab.id("ON_70")) == 1
    assert imp.history.shifted != shifted, "the grid moved while it primed"
    assert gaps[1] == gaps[0] > 0, "the new model hears the silence before the note as the old one did"
    assert counts[1] == counts[0], "the notes replayed to the new model are not kept twice"


def _run(*args: str):
    import os
    import subprocess
    import sys
    import uuid

    env = dict(os.environ, JACK_DEFAULT_SERVER=f"nobody-{uuid.uuid4().hex[:8]}", JACK_NO_START_SERVER="1",
               IMPROV_VERBOSE="", IMPROV_MODEL="")
    return subprocess.run([sys.executable, "-m", "improv.cli", "run", "--quiet", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_models_option_is_checked_before_any_port(tmp_path, tiny_model_dir):
    from improv.commands.run import build_overrides
    from improv.errors import ModelError
    from improv.serve import load_live_models

    assert build_overrides(models="bach-lstm, bach-wavenet") == {"models.paths": ["bach-lstm", "bach-wavenet"]}
    both = _run("--model", str(tiny_model_dir), "--models", f"{tiny_model_dir},{tiny_model_dir}")
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "give one" in both.stderr
    with pytest.raises(ModelError, match="nothing"):
        load_live_models(None, (str(tiny_model_dir), str(tmp_path / "nothing")))
    assert [m.name for m in load_live_models(None, (str(tiny_model_dir),) * 2)] == [tiny_model_dir.name] * 2
    empty = _run("--models", f"{tiny_model_dir},,")
    assert empty.returncode == 2 and "--models" in empty.stderr
