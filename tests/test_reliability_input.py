"""Bad live input: running status, velocity-0 note-ons, note-offs without note-ons, re-struck keys,
SysEx and clock floods, pitches outside the vocabulary, other channels, garbage bytes.

Three levels. The engine on a ManualClock with a FakeMidiOut (exact: the model's token history
and every message sent are compared with what the clean events alone give); the daemon's input
path (`Engine.feed_message`, the framed messages the rtmidi callback queues), without threads;
and `improv run` over real JACK ports, where a raw-bytes client sends a hostile stream.

At 120 bpm one beat is 0.5 s; the beat clock starts at t = 0.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from improv.clock import ManualClock
from improv.daemon import Daemon
from improv.engine import Engine
from improv.events import MidiParser, NoteOff, NoteOn
from improv.midi_in import MidiInput
from improv.settings import load_settings
from tests.fakes import FakeMidiOut, FakeModel

SPB = 0.5

SYSEX = [0xF0, 0x7E, 0x7F, 0x06, 0x01] + [0x11, 0x22, 0x33] * 300 + [0xF7]
CLOCK_FLOOD = [0xF8] * 500
# Bytes that a byte-stream parser must read as nothing, whatever came before (each one starts
# with a status byte that cancels running status, or is real-time): undefined system common and
# real-time bytes, a tune request, active sensing, SysEx, program change, pitch bend, aftertouch,
# and stray data bytes after a system-common byte.
STREAM_GARBAGE = (
    [0xF4, 1, 2, 3] + [0xF5, 77] + [0xF9, 0xFD, 0xFE, 0xF6, 5, 6] + SYSEX + CLOCK_FLOOD
    + [0xC0, 5, 0xE0, 0, 64, 0xD0, 3, 0xA0, 60, 10] + [0xF0, 1, 2, 3, 0xF8, 4, 0xF7, 9, 9]
)


def make(overrides=None, model=None):
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    s = load_settings(None, {"time.bpm": 120.0, "sampling.seed": 3, **(overrides or {})})
    return Engine(model or FakeModel(), s, clock, port), port, clock


def phrase(start_beats, pitches, channel=0, step=1.0, length=0.9, velocity=90):
    """[(t_s, bytes)] one note per `step` beats, each held `length` beats, note-off as 0x80."""
    out = []
    for i, p in enumerate(pitches):
        t = (start_beats + i * step) * SPB
        out += [(t, [0x90 | channel, p, velocity]), (t + length * SPB, [0x80 | channel, p, 0])]
    return sorted(out, key=lambda m: m[0])


CLEAN = phrase(2, [60, 62, 64, 65]) + phrase(14, [67, 65, 64, 62, 60]) + phrase(28, [72, 71])


def play_bytes(engine, timed, end_s):
    """Feed (t_s, bytes) as framed messages (the live input path) at their times, then run on."""
    for t, data in timed:
        engine.run_until(t)
        engine.feed_message(t, data)
    engine.run_until(end_s)


def play_daemon(daemon, timed, end_s):
    """The daemon's input path without threads: each framed message at its time."""
    play_bytes(daemon.engine, timed, end_s)


def keys_down(engine):
    return engine.improviser.listener.keys_down(0.0)


def names(model, ids):
    return [model.vocab.name(i) for i in ids]


def assert_paired(port):
    """Every note-on sent is released exactly once and nothing sounds at the end."""
    sounding: set[tuple[int, int]] = set()
    for _, m in port.sent:
        if m.type == "note_on" and m.velocity > 0:
            assert (m.channel, m.note) not in sounding, f"re-struck without a note-off: {m}"
            sounding.add((m.channel, m.note))
        elif m.type in ("note_off", "note_on"):
            assert (m.channel, m.note) in sounding, f"note-off for a note that is not on: {m}"
            sounding.discard((m.channel, m.note))
    assert port.sounding() == set()


def reference(overrides=None, timed=CLEAN, end_s=30.0):
    model = FakeModel()
    engine, port, _ = make(overrides, model)
    play_bytes(engine, timed, end_s)
    return model, port


# --------------------------------------------------------------------------- the engine, exact


def test_a_garbage_sysex_and_clock_flood_leaves_the_context_exactly_as_the_clean_events_do():
    clean_model, clean_port = reference()
    assert clean_port.note_ons(), "the clean phrases are answered"
    model = FakeModel()
    engine, port, _ = make(model=model)
    hostile = [(t, STREAM_GARBAGE + data + STREAM_GARBAGE) for t, data in CLEAN]
    play_bytes(engine, hostile, 30.0)
    assert model.fed == clean_model.fed  # the model's whole token history, token by token
    assert port.sent == clean_port.sent  # and so every answer, at the same times
    assert_paired(port)


def test_running_status_and_velocity_zero_note_ons_read_as_the_plain_messages():
    clean_model, clean_port = reference()
    model = FakeModel()
    engine, port, _ = make(model=model)
    compact, last = [], None
    for t, data in CLEAN:  # note-offs as note-on velocity 0, so one status byte serves them all
        status, pitch, velocity = data
        if status & 0xF0 == 0x80:
            status, velocity = 0x90 | (status & 0x0F), 0
        compact.append((t, [pitch, velocity] if status == last else [status, pitch, velocity]))
        last = status
    assert any(len(d) == 2 for _, d in compact)  # running status is really used
    parser = MidiParser()  # a byte stream (a MIDI file, a serial port), parsed across messages
    for t, data in compact:
        engine.run_until(t)
        for event in parser.feed(t, data):
            engine.feed(event)
    engine.run_until(30.0)
    assert model.fed == clean_model.fed and port.sent == clean_port.sent


def test_other_channels_are_filtered_out_with_the_channel_setting():
    clean_model, clean_port = reference({"output.input_channel": 1})
    model = FakeModel()
    engine, port, _ = make({"output.input_channel": 1}, model)
    noise = {t: [b for ch in range(1, 16) for b in (0x90 | ch, 50 + ch, 100, 0xB0 | ch, 22, 127,
                                                    0xB0 | ch, 123, 0, 0x80 | ch, 50 + ch, 0)]
             for t, _ in CLEAN}  # notes, a mode switch and All Notes Off on channels 2..16
    play_bytes(engine, [(t, noise[t] + data) for t, data in CLEAN], 30.0)
    assert model.fed == clean_model.fed and port.sent == clean_port.sent
    assert engine.improviser.mode == "call"


def test_note_offs_without_note_ons_change_nothing():
    clean_model, clean_port = reference({"output.thru": True})
    model = FakeModel()
    engine, port, _ = make({"output.thru": True}, model)
    strays = [(t, [0x80, p, 0, 0x90, p + 1, 0]) for t, _ in CLEAN for p in (40, 90)]
    play_bytes(engine, sorted(strays + CLEAN, key=lambda m: m[0]), 30.0)
    assert model.fed == clean_model.fed and port.sent == clean_port.sent
    assert_paired(port)


def test_pitches_outside_the_vocabulary_use_its_octave_fallback():
    """The fake model's vocabulary covers 36..96: the context hears a pitch moved by whole
    octaves into the range (ON and OFF alike, so the note still pairs up); the answer keeps to
    the sampling range, and nothing sticks."""
    model = FakeModel()
    assert model.vocab.config.pitch_min == 36 and model.vocab.config.pitch_max == 96
    engine, port, _ = make({"output.thru": True}, model)
    play_bytes(engine, phrase(2, [5, 120, 0, 127, 60], length=1.1), 20.0)  # legato: one phrase
    heard = [n for n in names(model, model.fed) if n.startswith(("ON_", "OFF_"))]
    # 5 -> 41 (three octaves up), 120 -> 96, 0 -> 36, 127 -> 91; no UNK anywhere
    assert heard[:10] == ["ON_41", "ON_96", "OFF_41", "ON_36", "OFF_96", "ON_91", "OFF_36", "ON_60",
                          "OFF_91", "OFF_60"]
    assert "UNK" not in names(model, model.fed)
    assert [m.note for _, m in port.note_ons()][:5] == [5, 120, 0, 127, 60]  # thru echoes as played
    answer = [m.note for t, m in port.note_ons() if t > 7 * SPB]
    assert answer and all(36 <= p <= 96 for p in answer)
    assert_paired(port)


def test_a_pitch_with_no_octave_in_the_vocabulary_becomes_unk():
    from improv.tokens import TokenConfig, Vocabulary

    model = FakeModel(vocab=Vocabulary(TokenConfig(pitch_min=60, pitch_max=66)))
    engine, port, _ = make({"sampling.pitch_lo": 60, "sampling.pitch_hi": 66}, model)
    play_bytes(engine, phrase(2, [70, 61], length=1.1), 12.0)
    heard = [n for n in names(model, model.fed) if not n.startswith("SHIFT_")]
    assert heard[:5] == ["BOS", "UNK", "ON_61", "UNK", "OFF_61"]
    assert_paired(port)


@pytest.mark.parametrize("thru", [False, True])
def test_a_re_struck_key_through_the_daemon_leaves_nothing_on(thru):
    """A key struck twice without a release, then released once (a doubled note-on from a
    merger or a flaky contact): the player's key is up, so nothing may sound."""
    engine, port, clock = make({"output.thru": thru})
    daemon = Daemon(engine, MidiInput(None))
    timed = [(1.0, [0x90, 60, 90]), (1.2, [0x90, 60, 80]), (1.5, [0x80, 60, 0])]
    play_daemon(daemon, timed, 1.6)
    assert port.sounding() == set()
    assert keys_down(engine) == [] and engine.improviser.state == "waiting"  # the phrase ends
    play_daemon(daemon, [], 8.0)
    assert port.note_ons(), "the phrase is answered"
    assert_paired(port)


def test_a_re_struck_key_fed_to_the_engine_directly_leaves_no_thru_note_on():
    engine, port, _ = make({"output.thru": True})
    engine.run_until(1.6, [NoteOn(1.0, 0, 60, 90), NoteOn(1.2, 0, 60, 80), NoteOff(1.5, 0, 60)])
    assert port.sounding() == set()


def test_framed_garbage_never_joins_the_next_message():
    """Over a real port every message is framed: a truncated or status-less fragment is dropped
    instead of completing with the next message's bytes into a note nobody played."""
    clean_model, clean_port = reference()
    model = FakeModel()
    engine, port, _ = make(model=model)
    daemon = Daemon(engine, MidiInput(None))
    fragments = [[0x90, 61], [70], [0x90], [71, 72], [0xB0, 22], [0xF0, 1, 2], [0xF2, 3], [5, 6, 7],
                 [0xF4], [0xF5, 1], [0xF9], [0xFD], [0xFF], [0xF8], [0xFE], SYSEX, [0xF7]]
    timed = []
    for t, data in CLEAN:
        timed += [(t, f) for f in fragments] + [(t, data)] + [(t, f) for f in fragments]
    play_daemon(daemon, timed, 30.0)
    assert model.fed == clean_model.fed and port.sent == clean_port.sent
    assert_paired(port)


def test_a_clock_flood_while_following_midi_clock_never_leaves_a_note_on():
    engine, port, _ = make({"time.clock": "midi", "output.thru": True})
    daemon = Daemon(engine, MidiInput(None))
    ticks = [(i * SPB / 24, [0xF8]) for i in range(24 * 40)]
    flood = [(10.0 + i * 1e-5, [0xF8]) for i in range(3000)]  # 3000 ticks in 30 ms
    timed = [(0.0, [0xFA])] + ticks + flood + phrase(4, [60, 62, 64, 65]) + phrase(26, [67, 69])
    play_daemon(daemon, sorted(timed, key=lambda m: m[0]), 25.0)
    assert port.note_ons(), "answers before and after the flood"
    play_daemon(daemon, [(25.0, [0xFC])], 40.0)  # Stop
    engine.shutdown()
    assert_paired(port)


def test_a_lost_clock_silences_the_duet_until_the_player_plays_again():
    """The engine treats a lost MIDI clock as a Stop: the duet's notes are released and it does
    not start again by itself (it did, 5 ms later, at the dead clock's last tempo)."""
    engine, port, _ = make({"time.clock": "midi", "mode.mode": "duet", "mode.max_response_beats": 8.0})
    daemon = Daemon(engine, MidiInput(None))
    ticks = [(i * SPB / 24, [0xF8]) for i in range(24 * 4)]  # 4 beats, then the cable is pulled
    timed = [(0.0, [0xFA])] + ticks + phrase(1, [60, 62])
    play_daemon(daemon, sorted(timed, key=lambda m: m[0]), 2.0)
    assert port.note_ons(), "the duet played along"
    play_daemon(daemon, [], 20.0)
    lost_at = max(t for t, m in port.sent if m.type == "note_off")
    assert lost_at < 3.0 and port.sounding() == set()
    assert not [t for t, m in port.note_ons() if t > lost_at], "the duet started again by itself"
    assert engine.next_wakeup_s() is None
    play_daemon(daemon, phrase(42, [64]), 25.0)  # the player plays again: so does improv
    assert [t for t, m in port.note_ons() if m.note != 64 and t >= 21.0]
    engine.shutdown()
    assert_paired(port)


# --------------------------------------------------------------------------- properties

_message = st.one_of(
    st.tuples(st.sampled_from([0x80, 0x90, 0x90, 0x90, 0xB0]), st.integers(0, 2), st.integers(0, 127),
              st.integers(0, 127)).map(lambda m: [m[0] | m[1], m[2], m[3]]),
    st.lists(st.integers(0, 255), min_size=1, max_size=3),  # anything a port may frame
    st.just(SYSEX), st.just([0xF8]), st.just([0xFA]), st.just([0xFC]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(0.0, 0.4), _message), min_size=1, max_size=60),
       st.booleans(), st.booleans(), st.sampled_from(["internal", "midi"]))
def test_whatever_arrives_once_the_input_goes_away_nothing_sounds(messages, thru, duet, clock):
    engine, port, _ = make({"output.thru": thru, "mode.mode": "duet" if duet else "call",
                            "time.clock": clock, "output.input_channel": 1,
                            "mode.max_response_beats": 8.0})
    daemon = Daemon(engine, MidiInput(None))
    t, timed = 0.0, []
    for gap, data in messages:
        t += gap
        timed.append((t, data))
    play_daemon(daemon, timed, t + 0.01)
    daemon.port_changed("input lost")  # the keys still down are released
    daemon.handle_port_changes()
    assert keys_down(daemon.engine) == []
    play_daemon(daemon, [], t + 60.0)
    assert port.sounding() == set()
    assert engine.next_wakeup_s() is None  # quiet: no key is still down for the improviser
    engine.shutdown()
    assert_paired(port)


# --------------------------------------------------------------------------- over JACK

jack = pytest.mark.jack


def _hostile_stream(spb: float) -> list[tuple[float, list[int]]]:
    """(offset_s, message) on channel 1: a call with every kind of trouble woven in."""
    call = [(0.0, [0x90, 60, 90]), (0.5, [0x90, 60, 0]),  # velocity-0 note-off
            (1.0, [0x90, 62, 90]), (1.1, [0x90, 62, 70]), (1.4, [0x80, 62, 0]),  # re-struck key
            (2.0, [0x90, 5, 90]), (2.4, [0x80, 5, 0]),  # below the vocabulary
            (3.0, [0x90, 125, 90]), (3.4, [0x80, 125, 0])]  # above it
    # every release once more a moment later: a release of a key that is up (one more kind of
    # trouble), and a key a busy non-realtime jackd lost the release of is still let go
    call += [(o + 0.05, [0x80, m[1], 0]) for o, m in call if m[0] == 0x80 or m[2] == 0]
    trouble = [[0x80, 40, 0], [0x80, 41, 0],  # releases of keys never pressed
               [0x93, 100, 100], [0x83, 100, 0], [0xB4, 22, 127], [0xB5, 123, 0],  # other channels
               [0x90, 61], [70], [71, 72], [0xF4], [0xF5, 1], [0xF9], [0xFD], [0xC0, 3],
               [0xE0, 0, 64], [0xA0, 60, 10], [0xF0, 1, 2], SYSEX, [0xFE]]
    msgs = [(o * spb, m) for o, m in call]
    for i, m in enumerate(trouble * 4):
        msgs.append((i * 4.0 * spb / (4 * len(trouble)), m))
    msgs += [(0.2 * spb + i * 0.002, [0xF8]) for i in range(1000)]  # a clock flood: 500/s for 2 s
    return sorted(msgs, key=lambda x: x[0])


@jack
@pytest.mark.timeout(180)
def test_improv_run_survives_a_hostile_stream_over_jack(jack_server, tiny_model_dir, tmp_path):
    rtmidi = pytest.importorskip("rtmidi")
    from benchmarks.harness.clients import Player, Recorder, sleep_until
    from benchmarks.harness.notes import note_ons, sounding_in_log
    from tests.test_jack import _phrase, assert_nothing_sounds, start_improv_on

    assert rtmidi
    tag = __import__("uuid").uuid4().hex[:4]
    raw, rec = Player(f"raw-{tag}"), Recorder(f"rec-{tag}")
    improv = start_improv_on(jack_server, tiny_model_dir, tmp_path, "--bpm", "120", "--seed", "2",
                             "--channel", "1", "--thru", "--range", "48-84")
    try:
        jack_server.connect(raw.port, jack_server.wait_port(":improv in"))
        jack_server.connect(jack_server.wait_port(":improv out"), rec.port)
        time.sleep(0.1)
        spb = 60.0 / 120.0
        for round_ in range(2):  # a hostile call, then a clean one: improv answers both
            k0 = improv.next_beat(time.perf_counter() + 0.3)
            stream = _hostile_stream(spb) if round_ == 0 else _phrase([0, 1], [64, 67], 0.5, spb)
            stream += [(o + 0.05, m) for o, m in stream if round_ == 1 and m[0] == 0x80]  # (as above)
            stream.sort(key=lambda x: x[0])
            before = len(rec.received)
            start = improv.beat_time(k0)
            for offset, data in stream:
                sleep_until(start + offset)
                raw.rt.send_message(data)
            after = start + (4.0 if round_ == 0 else 2.5) * spb  # the call's last note-on
            assert rec.wait_for(lambda m: any(t > after for t, _ in note_ons(m[before:])),
                                timeout_s=15), (
                f"round {round_}: no answer; {jack_server.xruns()}; {improv.output()[-1500:]}")
            sleep_until(start + 14 * spb)  # the answer (as long as the call, <= 4 beats) is over
            assert improv.proc.poll() is None, improv.output()
        stop_s = time.perf_counter()
    finally:
        code = improv.stop()
        raw.close()
        rec.close()
    assert code == 0, improv.output()
    assert "Traceback" not in improv.output()
    assert_nothing_sounds(rec, jack_server)
    # what improv sent (its own log: a busy non-realtime jackd may lose an event on the way)
    sent = improv.sent()
    assert not sounding_in_log(sent, before_s=stop_s), "improv left a note on"
    thru = [r.pitch for r in sent if r.kind == "note_on" and r.source == "thru"]
    assert 100 not in thru, "channel 4 was echoed although --channel 1"
    assert thru.count(62) == 2 and 5 in thru and 125 in thru  # the re-struck key: two strikes
