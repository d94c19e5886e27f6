"""improv.scheduler: due-time sending on a ManualClock, cancel semantics, pairing under any
interleaving, and two thread tests on the real clock with generous bounds."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from improv.clock import ManualClock, MonotonicClock
from improv.scheduler import Planned
from improv.midi_out import MidiOut
from improv.scheduler import Scheduler
from tests.fakes import FakeMidiOut


def rig(clock=None, **kwargs):
    """Hand-driven tests jump the clock, so the late-note policy is off unless a test sets it."""
    kwargs.setdefault("max_late_s", math.inf)
    clock = clock or ManualClock()
    port = FakeMidiOut(clock)
    return clock, port, Scheduler(MidiOut(port), clock, **kwargs)


def on(t, pitch, source="response", channel=0):
    return Planned(t, "on", pitch, 100, channel, source)


def off(t, pitch, source="response", channel=0):
    return Planned(t, "off", pitch, 0, channel, source)


def test_sends_what_is_due_in_order_and_records_planned_vs_actual():
    clock, port, s = rig()
    s.add([on(1.0, 60), off(2.0, 60), on(1.5, 62), off(1.5, 62)])
    assert s.run_pending(0.9) == []
    clock.set(1.6)
    sent = s.run_pending()
    assert [(m.type, m.note) for m in sent] == [("note_on", 60), ("note_on", 62), ("note_off", 62)]
    assert [(r.planned_s, r.actual_s) for r in s.records] == [(1.0, 1.6), (1.5, 1.6), (1.5, 1.6)]
    assert s.next_due_s() == 2.0
    stats = s.stats()
    assert stats.count == 3 and stats.late == 3 and stats.max_ms == pytest.approx(600.0)


def test_on_and_off_at_the_same_instant_keep_their_order():
    _, port, s = rig()
    s.add([on(1.0, 60), off(1.0, 60)])
    s.run_pending(1.0)
    assert [m.type for m in port.messages] == ["note_on", "note_off"]


def test_cancel_drops_unsent_and_releases_sounding_of_that_source_only():
    clock, port, s = rig()
    s.add([on(1.0, 60), off(3.0, 60), on(2.5, 64), off(3.0, 64), on(1.0, 48, "thru"), off(4.0, 48, "thru")])
    s.run_pending(1.0)
    s.cancel("response", now_s=2.0)
    assert port.sounding() == {(0, 48)}
    assert s.pending("response") == 0 and s.pending("thru") == 1
    s.run_pending(5.0)
    assert port.sounding() == set()
    assert [m.note for m in port.messages if m.type == "note_on"] == [60, 48]


def test_cancel_with_a_cutoff_keeps_earlier_notes_with_their_ends():
    _, port, s = rig()
    s.add([on(1.0, 60), off(1.2, 60), on(1.1, 62), on(2.0, 64), off(2.5, 64), off(3.0, 62), on(3.5, 65)])
    s.run_pending(2.1)  # 60 on/off, 62 on, and 64 went out "after the planner looked"
    s.add([Planned(1.5, "cancel", source="response")])
    assert port.sounding() == {(0, 62)}  # 64 started after the cutoff: released at once
    assert s.pending() == 1  # 62 keeps its planned end; 64's off and 65 are gone
    s.run_pending(3.0)
    assert port.sounding() == set()


def test_cancel_everything_with_star():
    _, port, s = rig()
    s.add([on(0.0, 60, "duet"), on(0.0, 61, "thru"), on(5.0, 62)])
    s.run_pending(0.0)
    s.add([Planned(-math.inf, "cancel", source="*")])
    assert port.sounding() == set() and s.pending() == 0


def test_off_for_a_note_the_source_does_not_hold_is_not_sent():
    _, port, s = rig()
    s.add([on(0.0, 60, "thru"), off(0.1, 60, "response")])
    s.run_pending(1.0)
    assert port.sounding() == {(0, 60)}


def test_a_very_late_note_on_is_dropped_and_counted():
    clock, port, s = rig(max_late_s=0.1)
    s.add([on(1.0, 60), off(2.0, 60), on(1.9, 61)])
    s.run_pending(1.95)
    assert [m.note for m in port.messages] == [61]
    assert s.dropped == 1
    s.run_pending(2.0)
    assert port.sounding() == {(0, 61)}


def test_realtime_plans():
    _, port, s = rig()
    s.add([Planned(0.0, "start", source="clock"), Planned(0.0, "clock", source="clock")])
    s.run_pending(0.0)
    assert [m.type for m in port.messages] == ["start", "clock"]


def test_panic_drops_plans_and_silences():
    _, port, s = rig()
    s.add([on(0.0, 60), on(1.0, 61)])
    s.run_pending(0.0)
    s.panic(0.5)
    s.run_pending(2.0)
    assert port.sounding() == set() and s.pending() == 0
    assert any(m.type == "control_change" and m.control == 123 for m in port.messages)


# The pairing property under any interleaving of plans, cancels, clock and panics: test_fuzz.py.


# ---------------------------------------------------------------------- the thread, real clock


def _wait_for(predicate, timeout_s=2.0):
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if predicate():
            return True
        time.sleep(0.001)
    return predicate()


def test_thread_sends_at_due_times():
    clock, port, s = rig(MonotonicClock())
    s.start()
    try:
        t0 = clock.now()
        s.add([on(t0 + 0.02 + 0.01 * i, 60 + i) for i in range(5)] + [off(t0 + 0.1, 60 + i) for i in range(5)])
        assert _wait_for(lambda: len(port.sent) == 10)
    finally:
        s.stop()
    assert [r.planned_s for r in s.records] == sorted(r.planned_s for r in s.records)
    assert all(0 <= r.actual_s - r.planned_s < 0.05 for r in s.records)  # generous: 2 shared cores
    assert s.stats().count == 10


def test_a_new_earlier_plan_wakes_the_thread_at_once():
    clock, port, s = rig(MonotonicClock(), spin_s=0.0)
    s.start()
    try:
        t0 = clock.now()
        s.add([on(t0 + 30.0, 70)])  # the thread now waits ~30 s ...
        time.sleep(0.01)
        s.add([on(clock.now() + 0.01, 60)])  # ... and must wake for this one
        assert _wait_for(lambda: len(port.sent) == 1, timeout_s=1.0)
        planned, actual, msg, source = s.records[0]
        assert msg.note == 60 and actual - planned < 0.05 and source == "response"
    finally:
        s.stop()


def test_records_say_which_source_sent_each_message_and_the_take_keeps_only_improvs():
    from improv.events import NoteOn
    from improv.record import Take, Taps
    from improv.settings import load_settings

    settings = load_settings(None, {"output.thru": True, "time.metronome": True, "time.metronome_channel": 1})
    take = Take()
    taps = Taps(take, settings)
    _, port, s = rig()
    s.on_record = taps.record
    taps.player(NoteOn(0.1, 0, 64, 90))
    s.add([on(0.0, 76, "metronome"), off(0.03, 76, "metronome"),  # a click on improv's channel
           on(0.1, 64, "thru"), off(0.5, 64, "thru"),  # the player's echo
           on(0.2, 64, "duet"), off(0.3, 64, "duet"),  # improv on the pitch the player holds
           on(0.4, 67), Planned(0.6, "clock", source="clock")])
    for t in (0.0, 0.03, 0.1, 0.2, 0.3, 0.4):
        s.run_pending(t)
    s.panic(0.45)  # releases 67, which no plan ended
    sources = [r.source for r in s.records]
    assert sources[:4] == ["metronome", "metronome", "thru", "duet"]
    assert {r.source for r in s.records if r.message.type == "note_on" and r.message.note == 67} == {"response"}
    assert sources[-1] == "panic"
    notes = take.notes("improv", origin_s=0.0, bpm=60.0)  # (the echo still held 64 at 0.3: it sounded on)
    assert [(n.pitch, n.onset_beats, n.duration_beats) for n in notes] == [
        (64, 0.2, pytest.approx(0.25)), (67, 0.4, pytest.approx(0.05))]


def test_a_note_that_ends_as_another_starts_is_released_first():
    """Beats turned into seconds round apart: the off due a hair after the on is the same instant,
    and a synth must never hear one voice too many (the duet's reaction at a polyphony limit)."""
    _, port, s = rig()
    s.add([on(1.0, 60, "duet"), off(2.0 + 1e-12, 60, "duet")])
    s.run_pending(1.0)
    s.add([on(2.0, 64, "duet"), off(3.0, 64, "duet")])
    s.run_pending(2.0 + 1e-12)
    assert [(m.type, m.note) for m in port.messages] == [("note_on", 60), ("note_off", 60), ("note_on", 64)]
    s.add([on(3.0, 64, "duet"), off(4.0, 64, "duet")])  # re-struck as it ends: the old one ends first
    s.run_pending(3.0)
    assert [(m.type, m.note) for m in port.messages[3:]] == [("note_off", 64), ("note_on", 64)]
    assert port.sounding() == {(0, 64)}


class FramePort(FakeMidiOut):
    """A sample-accurate port (improv's JACK client): takes each message `lead` ahead with its due time."""

    def __init__(self, clock, lead_s):
        super().__init__(clock)
        self.lead = lead_s
        self.handed = []  # (handed at, due, message)

    def send_at(self, msg, due_s):
        self.handed.append((self.clock.now(), due_s, msg))

    def lead_s(self):
        return self.lead


def test_a_sample_accurate_port_gets_each_plan_its_lead_ahead_with_its_time():
    clock = ManualClock()
    port = FramePort(clock, lead_s=0.002)
    s = Scheduler(MidiOut(port), clock, max_late_s=math.inf, lead_s=0.010)  # time.latency_ms 10
    s.add([on(1.0, 60), off(1.5, 60)])
    assert s.next_due_s() == pytest.approx(1.0 - 0.010 - 0.002)
    assert s.run_pending(0.987) == []
    clock.set(0.9885)
    assert len(s.run_pending(0.9885)) == 1
    handed_at, due, msg = port.handed[0]
    assert (handed_at, due, msg.type) == (0.9885, pytest.approx(0.990), "note_on")
    assert s.records[-1].actual_s == pytest.approx(0.990)  # it goes out at its frame, not when handed
    clock.set(1.4885)
    s.run_pending(1.4885)
    assert port.handed[1][1] == pytest.approx(1.490) and port.handed[1][2].type == "note_off"
    s.cancel()  # nothing sounds, nothing waits: no message
    assert port.sent == [] and len(port.handed) == 2


def test_a_cancelled_note_already_handed_over_gets_its_off_at_once():
    clock = ManualClock()
    port = FramePort(clock, lead_s=0.002)
    s = Scheduler(MidiOut(port), clock, max_late_s=math.inf)
    s.add([on(1.0, 60), off(1.5, 60)])
    clock.set(0.999)
    s.run_pending(0.999)  # the note-on waits in the port, due at 1.0
    released = s.cancel("response", after_s=0.9995)
    assert [m.type for m in released] == ["note_off"] and [m.type for _, m in port.sent] == ["note_off"]
    assert s.pending() == 0  # (the port keeps the off behind its on: tests/test_jack_midi.py)


def test_the_thread_is_woken_only_for_an_earlier_send():
    """A plan already due is sent by `add` itself; waking the sending thread for it as well would
    have it take the GIL from the engine between the thru echo and the reaction."""
    clock = MonotonicClock()
    _, port, s = rig(clock)
    s.start()
    try:
        s.add([on(clock.now() + 10.0, 60)])
        time.sleep(0.05)  # the thread waits for it
        woken = []
        notify = s._cond.notify
        s._cond.notify = lambda *a: (woken.append(1), notify(*a))
        for pitch in (61, 62, 63):
            s.add([on(clock.now(), pitch)])  # a reaction: sent at once, on this thread
        assert len(port.sent) == 3 and woken == []
        s.add([on(clock.now() + 5.0, 64)])  # earlier than what the thread waits for
        assert woken == [1]
    finally:
        s.stop()
