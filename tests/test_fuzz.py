"""Fuzzing what the other tests leave out (hypothesis).

* MIDI parser (`improv.events`): note messages buried in SysEx, undefined and real-time bytes, in
  any chunking, come out paired exactly as sent; framed parsing (`feed_message`, the live input)
  never lets one message leak into the next. (tests/test_events.py has the plain garbage and
  running-status round trips.)
* Tokens (`improv.tokens`): any id sequence decodes without raising to notes inside the vocabulary;
  pitches outside the vocabulary encode through the octave fallback with every ON paired by an OFF.
  (tests/test_tokens.py has the round trips.)
* Scheduler: pairing with the late-drop policy on, several channels, real-time plans and panics
  interleaved. (tests/test_scheduler.py has the pairing without late drops.)
* Corpus reader: random bytes under every music extension are skipped with a one-line reason,
  never raised, and whatever is read survives the cache round trip.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from improv.clock import ManualClock
from improv.events import ClockTick, MidiParser, NoteOff, NoteOn
from improv.midi_out import MidiOut
from improv.scheduler import Planned, Scheduler
from improv.tokens import Note, StreamDecoder, TokenConfig, Vocabulary, decode_ids, encode_notes
from tests.fakes import FakeMidiOut

pytestmark = pytest.mark.timeout(300)

# --------------------------------------------------------------------------- the MIDI parser

_note = st.tuples(st.sampled_from(["on", "off", "on0"]), st.integers(0, 15), st.integers(0, 127),
                  st.integers(1, 127))
_sysex = st.lists(st.integers(0, 0x7F), max_size=40).map(lambda b: [0xF0, *b, 0xF7])
_between = st.one_of(_sysex, st.sampled_from([[0xF4], [0xF5], [0xF6], [0xF9], [0xFD], [0xFE], [0xFF],
                                              [0xF4, 1, 2], [0xF5, 99]]))


def _raw(kind: str, channel: int, pitch: int, velocity: int) -> list[int]:
    if kind == "on":
        return [0x90 | channel, pitch, velocity]
    if kind == "on0":
        return [0x90 | channel, pitch, 0]
    return [0x80 | channel, pitch, velocity % 128]


def _expected(kind: str, channel: int, pitch: int, velocity: int):
    return NoteOn(0.0, channel, pitch, velocity) if kind == "on" else NoteOff(0.0, channel, pitch)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_note, st.lists(_between, max_size=2)), max_size=40), st.data())
def test_notes_buried_in_sysex_and_undefined_bytes_come_out_paired_in_any_chunking(notes, data):
    stream: list[int] = []
    for note, junk in notes:
        stream += _raw(*note)
        for block in junk:
            stream += block
    for _ in range(data.draw(st.integers(0, 12))):  # real-time bytes may land anywhere at all
        stream.insert(data.draw(st.integers(0, len(stream))), 0xF8)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser, events, start = MidiParser(), [], 0
    for cut in cuts + [len(stream)]:
        events += parser.feed(0.0, bytes(stream[start:cut]))
        start = max(start, cut)
    assert [e for e in events if not isinstance(e, ClockTick)] == [_expected(*n) for n, _ in notes]
    assert sum(isinstance(e, ClockTick) for e in events) == stream.count(0xF8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 255), min_size=1, max_size=6), max_size=40))
def test_framed_messages_never_leak_into_each_other(messages):
    parser = MidiParser()
    for message in messages:
        assert parser.feed_message(1.0, message) == MidiParser().feed(1.0, message)


# --------------------------------------------------------------------------- tokens

_configs = st.builds(TokenConfig, ticks_per_beat=st.sampled_from([1, 4, 12]), max_shift_ticks=st.integers(1, 30),
                     pitch_min=st.integers(30, 60), pitch_max=st.integers(61, 90),
                     velocity_bins=st.sampled_from([0, 4, 16]))


@settings(max_examples=200, deadline=None)
@given(_configs, st.data())
def test_any_id_sequence_decodes_to_notes_inside_the_vocabulary(config, data):
    vocab = Vocabulary(config)
    ids = data.draw(st.lists(st.integers(0, len(vocab) - 1), max_size=300))
    decoder = StreamDecoder(vocab)
    for token in ids:
        decoder.feed(token)
    for note in decode_ids(ids, vocab):
        assert config.pitch_min <= note.pitch <= config.pitch_max
        # a note ended in the tick it started (ON_p ON_p, ON_p OFF_p) sounds for no time: left out
        assert note.onset_beats >= 0 and note.duration_beats > 0 and 1 <= note.velocity <= 127


@settings(max_examples=200, deadline=None)
@given(_configs, st.lists(st.tuples(st.floats(0, 20), st.floats(0, 4), st.integers(0, 127)), max_size=30))
def test_pitches_outside_the_vocabulary_fall_back_by_octaves_and_stay_paired(config, raw):
    vocab = Vocabulary(config)
    notes = [Note(on, dur, pitch, 90) for on, dur, pitch in raw]
    names = [vocab.name(i) for i in encode_notes(notes, vocab)]
    depth: dict[int, int] = {}
    for name in names:
        kind, _, value = name.partition("_")
        if kind in ("ON", "OFF"):
            pitch = int(value)
            assert config.pitch_min <= pitch <= config.pitch_max
            depth[pitch] = depth.get(pitch, 0) + (1 if kind == "ON" else -1)
            assert depth[pitch] >= 0, f"OFF_{pitch} before its ON: {names}"
    assert all(d == 0 for d in depth.values()), names
    spans_an_octave = config.pitch_max - config.pitch_min >= 11
    played = {p % 12 for _, _, p in raw}
    heard = [int(n[3:]) for n in names if n.startswith("ON_")]
    if spans_an_octave:
        assert "UNK" not in names and {p % 12 for p in heard} <= played


# --------------------------------------------------------------------------- the scheduler

_op = st.one_of(
    st.tuples(st.just("plan"), st.sampled_from(["response", "duet", "thru", "metronome"]), st.integers(0, 2),
              st.integers(60, 61), st.floats(-0.3, 1.0), st.floats(0, 0.6)),
    st.tuples(st.just("cancel"), st.sampled_from(["response", "duet", "thru", "*"]), st.floats(-1, 1)),
    st.tuples(st.just("clock"), st.floats(0, 0.5)),
    st.tuples(st.just("run"), st.floats(0, 0.3)),
    st.tuples(st.just("panic")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=50))
def test_pairing_holds_with_late_note_ons_dropped_and_panics(ops):
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    s = Scheduler(MidiOut(port), clock, max_late_s=0.05)  # plans due in the past are late
    for op in ops:
        if op[0] == "plan":
            _, source, channel, pitch, start, length = op
            t = clock.now() + start
            s.add([Planned(t, "on", pitch, 100, channel, source), Planned(t + length, "off", pitch, 0, channel, source)])
        elif op[0] == "cancel":
            s.add([Planned(clock.now() + op[2] if op[2] > -1 else -math.inf, "cancel", source=op[1])])
        elif op[0] == "clock":
            s.add([Planned(clock.now() + op[1], "clock", source="clock")])
        elif op[0] == "run":
            clock.advance(op[1])
            s.run_pending()
        else:
            s.panic()
    clock.advance(10.0)
    s.run_pending()
    assert port.sounding() == set()
    sounding: set[tuple[int, int]] = set()
    ons = 0
    for _, msg in port.sent:
        if msg.type == "note_on":
            assert (msg.channel, msg.note) not in sounding
            sounding.add((msg.channel, msg.note))
            ons += 1
        elif msg.type == "note_off":
            assert (msg.channel, msg.note) in sounding
            sounding.discard((msg.channel, msg.note))
    assert ons == s.notes_sent  # and every note-on sent was counted (a dropped one is not sent)


# --------------------------------------------------------------------------- the corpus reader

@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([".mid", ".krn", ".abc", ".xml", ".musicxml", ".mxl"]),
       st.one_of(st.binary(max_size=2000), st.binary(max_size=60).map(lambda b: b"MThd\x00\x00\x00\x06" + b),
                 st.text(max_size=400).map(str.encode), st.binary(max_size=200).map(lambda b: b"X:1\nK:C\n" + b),
                 st.binary(max_size=200).map(lambda b: b"**kern\n" + b), st.binary(max_size=200).map(
                     lambda b: b"<?xml version='1.0'?><score-partwise>" + b)))
def test_random_bytes_as_music_files_are_skipped_with_a_reason(scratch, suffix, data):
    from training.corpus import PARSERS
    from training.encode import EncodeSettings, encode_file, read_entry, write_entry

    path = scratch / f"x{suffix}"
    path.write_bytes(data)
    settings_ = EncodeSettings(TokenConfig())
    result = encode_file(PARSERS[suffix], path, settings_)  # what a worker runs; never raises
    for skip in result.skipped:
        assert skip.reason and "\n" not in skip.reason and len(skip.reason) <= 160, skip
    vocab_size = len(Vocabulary(settings_.token_config))
    for piece in result.pieces:
        assert np.isfinite(piece.piece.notes).all()
        assert len(piece.ids) == 0 or 0 <= piece.ids.min() <= piece.ids.max() < vocab_size
    if result.cacheable:
        entry = scratch / "cache" / "entry.npz"
        write_entry(entry, result)
        back = read_entry(entry, Vocabulary(settings_.token_config))
        assert back is not None and [s.reason for s in back.skipped] == [s.reason for s in result.skipped]
        assert all(np.array_equal(a.ids, b.ids) for a, b in zip(back.pieces, result.pieces, strict=True))
