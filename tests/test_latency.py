"""time.latency_ms: every planned send goes out exactly that much early; reactions and echoes,
already due when planned, keep their time; a note-off never precedes its note-on."""

from __future__ import annotations

import math

import pytest

from improv.clock import ManualClock
from improv.demo import answer_call, built_in_call
from improv.errors import ConfigError
from improv.midi_out import MidiOut
from improv.scheduler import Planned, Scheduler
from improv.settings import load_settings
from tests.fakes import FakeMidiOut, FakeModel

LEAD_MS = 7.5


def rig(lead_s: float):
    clock = ManualClock()
    port = FakeMidiOut(clock)
    return clock, port, Scheduler(MidiOut(port), clock, max_late_s=math.inf, lead_s=lead_s)


def test_a_plan_ahead_goes_out_lead_early_and_records_its_send_time():
    clock, port, s = rig(0.01)
    s.add([Planned(1.0, "on", 60, 100), Planned(1.5, "off", 60)])
    assert s.next_due_s() == pytest.approx(0.99)
    assert s.run_pending(0.985) == []
    for t in (0.99, 1.49):
        clock.set(t)
        s.run_pending()
    assert [(t, m.type) for t, m in port.sent] == [(0.99, "note_on"), (1.49, "note_off")]
    assert [r.actual_s for r in s.records] == [0.99, 1.49]
    assert [r.planned_s for r in s.records] == pytest.approx([0.99, 1.49])


def test_a_negative_latency_delays():
    clock, port, s = rig(-0.004)
    s.add([Planned(1.0, "clock", source="clock")])
    assert s.next_due_s() == pytest.approx(1.004)


def test_a_plan_already_due_keeps_its_time_and_one_due_within_the_lead_goes_at_once():
    clock, port, s = rig(0.01)
    clock.set(2.0)
    s.add([Planned(1.999, "on", 60, 100, source="duet"), Planned(2.004, "on", 62, 100)])
    assert [r for r in s.records] == []
    s.run_pending(2.0)
    assert [r.planned_s for r in s.records] == [1.999, 2.0]  # never "sent" before it was known


def test_a_reactions_end_planned_within_the_lead_never_precedes_it():
    clock, port, s = rig(0.02)
    clock.set(1.0)
    s.add([Planned(1.0, "on", 60, 100, source="duet")])  # the reaction, due now
    s.add([Planned(1.01, "off", 60, source="duet")])  # its end, 10 ms later: send time clamps to now
    s.run_pending(1.0)
    assert [m.type for m in port.messages] == ["note_on", "note_off"]
    assert port.sounding() == set()


def test_cancel_cuts_by_due_time_not_send_time():
    clock, port, s = rig(0.01)
    s.add([Planned(1.0, "on", 60, 100), Planned(1.2, "off", 60), Planned(1.3, "on", 62, 100),
           Planned(1.4, "off", 62)])
    s.run_pending(1.0)
    s.cancel("response", now_s=1.0, after_s=1.3)  # 62 is due at the cutoff (sent 10 ms before it)
    s.run_pending(2.0)
    assert [m.note for _, m in port.of_type("note_on")] == [60]
    assert [m.note for _, m in port.of_type("note_off")] == [60]


def _demo(latency_ms: float, mode: str = "call"):
    settings = load_settings(None, {"time.metronome": True, "time.send_clock": True, "mode.mode": mode,
                                    "time.latency_ms": latency_ms, "sampling.seed": 3})
    engine, recorder = answer_call(FakeModel(), settings, built_in_call())
    return engine, recorder.sent


def test_latency_ms_moves_every_planned_send_by_exactly_that_much():
    _, plain = _demo(0.0)
    _, early = _demo(LEAD_MS)
    assert [m for _, m in early] == [m for _, m in plain]
    moved = [(t0 - t1) * 1000 for (t0, _), (t1, _) in zip(plain, early)]
    first_s, last_s = plain[0][0], plain[-1][0]
    planned = [d for (t, m), d in zip(plain, moved)
               if t > first_s + LEAD_MS / 1000 and t < last_s]  # not Start, not the shutdown's panic
    kinds = {m.type for t, m in plain if first_s + LEAD_MS / 1000 < t < last_s}
    assert {"clock", "note_on", "note_off"} <= kinds  # answers, metronome and clock out
    assert len(planned) > 100
    assert planned == pytest.approx([LEAD_MS] * len(planned), abs=1e-9)


def test_duet_reactions_keep_their_time():
    engine, sent = _demo(LEAD_MS, mode="duet")
    reactions = [r for r in engine.scheduler.records if r.source == "duet" and r.message.type == "note_on"
                 and r.planned_s == r.actual_s and any(abs(r.actual_s - e.t_s) < 1e-12 for e in _call_ons())]
    assert reactions, "the duet reacted at the player's notes' own instants"
    assert engine.scheduler.dropped == 0


def _call_ons():
    from improv.demo import call_events
    from improv.events import NoteOn
    return [e for e in call_events(100.0, built_in_call()) if isinstance(e, NoteOn)]


def test_latency_ms_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="time.latency_ms"):
        load_settings(None, {"time.latency_ms": 500})


def test_the_run_option_sets_time_latency_ms():
    from improv.commands.run import build_overrides
    assert build_overrides(latency_ms=2.5) == {"time.latency_ms": 2.5}
    assert load_settings(None, build_overrides(latency_ms=-3.0)).time.latency_ms == -3.0
