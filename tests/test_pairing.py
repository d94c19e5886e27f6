"""improv.pairing: the one note-on/note-off matcher (files, recordings, stuck-note checks)."""

from __future__ import annotations

import mido

from improv.pairing import NotePairer, Sounded, pair_messages


def test_restrike_ends_the_sounding_note_in_a_file_reading() -> None:
    notes, hanging = pair_messages([(0, [0x90, 60, 80]), (1, [0x90, 60, 70]), (3, [0x80, 60, 0])])
    assert notes == [Sounded(0, 1, 0, 60, 80), Sounded(1, 3, 0, 60, 70)]
    assert hanging == []


def test_stuck_note_check_needs_a_note_off_per_strike() -> None:
    timed = [(0, [0x90, 60, 80]), (1, [0x90, 60, 70]), (3, [0x80, 60, 0])]
    notes, hanging = pair_messages(timed, restrike_ends=False)
    assert notes == [Sounded(0, 3, 0, 60, 80)]
    assert hanging == [Sounded(1, 1, 0, 60, 70)]


def test_velocity_zero_and_mido_messages_and_channels() -> None:
    timed = [(0.0, mido.Message("note_on", note=64, velocity=90, channel=2)),
             (0.5, mido.Message("note_on", note=64, velocity=0, channel=1)),  # another channel: ignored
             (1.0, mido.Message("note_on", note=64, velocity=0, channel=2))]
    notes, hanging = pair_messages(timed)
    assert notes == [Sounded(0.0, 1.0, 2, 64, 90)] and hanging == []


def test_all_notes_off_ends_its_channel_only() -> None:
    pairer = NotePairer(restrike_ends=False)
    for t, msg in [(0, [0x90, 60, 80]), (0, [0x91, 62, 80]), (2, [0xB0, 123, 0])]:
        pairer.feed(t, msg)
    assert pairer.closed == [Sounded(0, 2, 0, 60, 80)]
    assert [(n.channel, n.pitch) for n in pairer.hanging] == [(1, 62)]
    assert pairer.notes(end=5)[-1] == Sounded(0, 5, 1, 62, 80)


def test_note_off_without_note_on_is_ignored() -> None:
    notes, hanging = pair_messages([(0, [0x80, 60, 0]), (1, [0x90, 61, 1]), (2, [0x80, 61, 0]), (3, [0xF8])])
    assert notes == [Sounded(1, 2, 0, 61, 1)] and hanging == []
