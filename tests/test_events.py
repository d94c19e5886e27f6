"""improv.events: the byte-stream parser real devices need."""

from __future__ import annotations

import mido
from hypothesis import given, settings
from hypothesis import strategies as st

from improv.events import (ClockTick, Continue, Control, MidiParser, NoteOff, NoteOn, ProgramChange, SongPosition,
                           Start, Stop, parse_message)


def feed(data, t=1.0):
    return MidiParser().feed(t, data)


def test_note_on_off_and_cc():
    assert feed([0x91, 60, 100, 0x81, 60, 0, 0xB2, 64, 127]) == [
        NoteOn(1.0, 1, 60, 100), NoteOff(1.0, 1, 60), Control(1.0, 2, 64, 127)]


def test_running_status():
    assert feed([0x90, 60, 100, 62, 90, 60, 0]) == [
        NoteOn(1.0, 0, 60, 100), NoteOn(1.0, 0, 62, 90), NoteOff(1.0, 0, 60)]


def test_velocity_zero_note_on_is_note_off():
    assert feed(bytes([0x95, 72, 0])) == [NoteOff(1.0, 5, 72)]


def test_realtime_interleaved_inside_a_message():
    assert feed([0x90, 0xF8, 60, 0xFA, 100, 0xFC, 0xFB]) == [
        ClockTick(1.0), Start(1.0), NoteOn(1.0, 0, 60, 100), Stop(1.0), Continue(1.0)]


def test_sysex_is_skipped_and_realtime_inside_it_kept():
    data = [0xF0, 0x7E, 1, 2, 0xF8, 3, 0xF7, 0x90, 60, 1]
    assert feed(data) == [ClockTick(1.0), NoteOn(1.0, 0, 60, 1)]


def test_status_byte_ends_an_unterminated_sysex():
    assert feed([0xF0, 1, 2, 3, 0x80, 60, 0]) == [NoteOff(1.0, 0, 60)]


def test_sysex_flood_costs_nothing_and_yields_nothing():
    parser = MidiParser()
    assert parser.feed(0.0, bytes([0xF0]) + bytes(range(128)) * 8000) == []
    assert parser._data == []
    assert parser.feed(0.0, [0xF7, 0x90, 61, 5]) == [NoteOn(0.0, 0, 61, 5)]


def test_data_without_status_is_ignored():
    assert feed([60, 100, 0x90, 60, 100]) == [NoteOn(1.0, 0, 60, 100)]


def test_system_common_cancels_running_status():
    assert feed([0x90, 60, 100, 0xF3, 1, 62, 100]) == [NoteOn(1.0, 0, 60, 100)]


def test_song_position_pointer():
    assert feed([0xF2, 0x10, 0x01]) == [SongPosition(1.0, 16 + 128)]


def test_program_change_is_an_event_pitch_bend_and_aftertouch_are_dropped():
    assert feed([0xC3, 5, 0xE0, 0, 64, 0xD0, 3, 0x90, 60, 9]) == [ProgramChange(1.0, 3, 5), NoteOn(1.0, 0, 60, 9)]
    assert feed([0xC0, 1, 2]) == [ProgramChange(1.0, 0, 1), ProgramChange(1.0, 0, 2)]  # running status


def test_messages_split_across_feeds():
    parser = MidiParser()
    assert parser.feed(1.0, [0x90, 60]) == []
    assert parser.feed(2.0, [100]) == [NoteOn(2.0, 0, 60, 100)]


def test_parse_message():
    assert parse_message(3.0, [0x90, 64, 0]) == NoteOff(3.0, 0, 64)
    assert parse_message(3.0, [0xF8]) == ClockTick(3.0)
    assert parse_message(3.0, [0x90, 64]) is None
    assert parse_message(3.0, [0x90, 0xF8, 64, 10]) == NoteOn(3.0, 0, 64, 10)


def test_never_raises_on_nonsense_input():
    parser = MidiParser()
    assert parser.feed(0.0, None) == []  # type: ignore[arg-type]
    assert parser.feed(0.0, [-1, 256, "x", 3.5, None, 0x90, 60, 1]) == [NoteOn(0.0, 0, 60, 1)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_garbage_never_raises_and_chunking_does_not_matter(data, cuts):
    whole = MidiParser().feed(0.0, bytes(data))
    parser, chunked, start = MidiParser(), [], 0
    for cut in sorted(cuts) + [len(data)]:
        chunked += parser.feed(0.0, bytes(data[start:cut]))
        start = max(start, cut)
    assert chunked == whole
    for event in whole:
        if isinstance(event, (NoteOn, NoteOff, Control)):
            assert 0 <= event.channel <= 15 and 0 <= getattr(event, "pitch", 0) <= 127
        if isinstance(event, NoteOn):
            assert event.velocity >= 1


_messages = st.one_of(
    st.builds(lambda c, n, v: mido.Message("note_on", channel=c, note=n, velocity=v),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127)),
    st.builds(lambda c, n: mido.Message("note_off", channel=c, note=n), st.integers(0, 15), st.integers(0, 127)),
    st.builds(lambda c, n, v: mido.Message("control_change", channel=c, control=n, value=v),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127)),
)


def _expected(msg: mido.Message):
    if msg.type == "note_on" and msg.velocity > 0:
        return NoteOn(0.0, msg.channel, msg.note, msg.velocity)
    if msg.type in ("note_on", "note_off"):
        return NoteOff(0.0, msg.channel, msg.note)
    return Control(0.0, msg.channel, msg.control, msg.value)


@settings(max_examples=200, deadline=None)
@given(st.lists(_messages, max_size=30), st.data())
def test_round_trip_with_running_status_and_realtime_anywhere(messages, data):
    stream, last_status = [], None
    for msg in messages:
        raw = msg.bytes()
        if raw[0] == last_status and data.draw(st.booleans()):
            raw = raw[1:]  # running status, as a sender may use it
        last_status = msg.bytes()[0]
        stream += raw
    for _ in range(data.draw(st.integers(0, 10))):
        stream.insert(data.draw(st.integers(0, len(stream))), 0xF8)
    events = MidiParser().feed(0.0, stream)
    assert [e for e in events if not isinstance(e, ClockTick)] == [_expected(m) for m in messages]
    assert sum(isinstance(e, ClockTick) for e in events) == stream.count(0xF8)
