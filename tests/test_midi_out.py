"""improv.midi_out: NoteTracker pairing, panic, a port that fails."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from improv.midi_out import MidiOut, NoteTracker
from tests.fakes import FakeMidiOut


def kinds(port):
    return [(m.type, getattr(m, "note", getattr(m, "control", None))) for m in port.messages]


def test_note_off_for_a_silent_note_is_dropped():
    port = FakeMidiOut()
    out = MidiOut(port)
    assert out.note_off(60) == []
    assert port.sent == []


def test_restrike_sends_the_note_off_first_and_last_holder_releases():
    port = FakeMidiOut()
    out = MidiOut(port, channel_default=2)
    out.note_on(60, 100)
    out.note_on(60, 90)
    assert kinds(port) == [("note_on", 60), ("note_off", 60), ("note_on", 60)]
    assert out.note_off(60) == []  # the other holder still holds it
    assert len(out.note_off(60)) == 1
    assert port.sounding() == set()
    assert all(m.channel == 2 for m in port.messages)


def test_panic_releases_tracked_notes_then_all_notes_off_and_sustain_per_channel():
    port = FakeMidiOut()
    out = MidiOut(port, channel_default=0)
    out.note_on(60, 100)
    out.note_on(64, 100, channel=9)
    out.panic()
    assert port.sounding() == set()
    ccs = sorted((m.channel, m.control, m.value) for m in port.messages if m.type == "control_change")
    assert ccs == [(0, 64, 0), (0, 123, 0), (9, 64, 0), (9, 123, 0)]
    assert len(out.tracker) == 0


def test_close_panics_once_and_closes_the_port():
    port = FakeMidiOut()
    out = MidiOut(port)
    out.note_on(60, 100)
    out.close()
    out.close()
    assert port.closed
    assert sum(m.type == "note_off" for m in port.messages) == 1


def test_a_failing_port_is_logged_once_and_state_is_kept(caplog):
    port = FakeMidiOut(fail=True)
    out = MidiOut(port)
    with caplog.at_level(logging.ERROR):
        out.note_on(60, 100)
        out.note_on(62, 100)
    assert out.send_errors == 2
    assert len([r for r in caplog.records if "send failed" in r.message]) == 1
    assert out.tracker.sounding() == [(0, 60), (0, 62)]
    port.fail = False
    out.panic()
    assert sorted(m.note for m in port.messages if m.type == "note_off") == [60, 62]


def test_velocity_is_clamped():
    port = FakeMidiOut()
    MidiOut(port).note_on(60, 0)
    assert port.messages[0].velocity == 1


def test_tracker_counts():
    t = NoteTracker()
    assert t.on(0, 60) is False
    assert t.on(0, 60) is True
    assert (0, 60) in t and t.count(0, 60) == 2
    assert t.off(0, 60) is False
    assert t.off(0, 60) is True
    assert t.off(0, 60) is False
    assert len(t) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["on", "off", "panic"]), st.integers(0, 1), st.integers(60, 63)),
                max_size=60))
def test_every_note_on_gets_exactly_one_note_off(ops):
    port = FakeMidiOut()
    out = MidiOut(port)
    for op, channel, pitch in ops:
        if op == "on":
            out.note_on(pitch, 100, channel)
        elif op == "off":
            out.note_off(pitch, channel)
        else:
            out.panic()
    out.panic()
    sounding: set[tuple[int, int]] = set()
    for msg in port.messages:
        key = (getattr(msg, "channel", None), getattr(msg, "note", None))
        if msg.type == "note_on":
            assert key not in sounding, "a note-on on a sounding pitch without its note-off first"
            sounding.add(key)
        elif msg.type == "note_off":
            assert key in sounding, "a note-off for a note that is not sounding"
            sounding.discard(key)
    assert sounding == set()
