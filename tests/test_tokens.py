"""Property tests of improv/tokens.py: round trips, streaming = offline, no drift, pruning fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from improv.stream_encoder import StreamEncoder
from improv.tokens import (DEFAULT_VELOCITY, Note, TokenConfig, Vocabulary, bin_velocity,
                           decode_ids, encode_notes, grid_to_ids, grid_to_notes, ids_to_grid, notes_to_names, quantize,
                           velocity_bin)

configs = st.builds(
    TokenConfig,
    ticks_per_beat=st.sampled_from([1, 4, 12, 24]),
    max_shift_ticks=st.integers(1, 48),
    pitch_min=st.integers(21, 60),
    pitch_max=st.integers(61, 108),
    velocity_bins=st.sampled_from([0, 1, 4, 8, 32]),
)


@st.composite
def config_and_notes(draw, max_notes: int = 40):
    """A config and notes at arbitrary (not tick-aligned) times, overlaps of one pitch included."""
    config = draw(configs)
    note = st.builds(
        Note,
        onset_beats=st.floats(0, 40, allow_nan=False),
        duration_beats=st.floats(0, 8, allow_nan=False),
        pitch=st.integers(config.pitch_min, config.pitch_max),
        velocity=st.integers(1, 127),
    )
    return config, draw(st.lists(note, max_size=max_notes))


def quantised(notes, config: TokenConfig) -> list[tuple[int, int, int, int]]:
    """(on tick, off tick, pitch, velocity) as `notes_to_names` quantises: notes last >= 1 tick."""
    tpb, out = config.ticks_per_beat, []
    for n in notes:
        on = quantize(n.onset_beats * tpb)
        out.append((on, max(on + 1, quantize((n.onset_beats + n.duration_beats) * tpb)), n.pitch, n.velocity))
    return out


def resolve_overlaps(notes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """The documented re-strike rule, written independently: within a chain of overlapping notes of
    one pitch each note ends where the next starts, and the last one ends when the whole chain does;
    a note struck again in the tick it started is the same note."""
    out = []
    for pitch in {p for _, _, p, _ in notes}:
        chain: list[tuple[int, int, int, int]] = []
        for note in sorted((n for n in notes if n[2] == pitch), key=lambda n: (n[0], n[3])):
            if chain and note[0] >= max(n[1] for n in chain):
                out += _close(chain)
                chain = []
            chain.append(note)
        out += _close(chain)
    return out


def _close(chain):
    end = max(n[1] for n in chain)
    starts = [n[0] for n in chain[1:]] + [end]
    return [(n[0], stop, n[2], n[3]) for n, stop in zip(chain, starts) if stop > n[0]]  # (no zero-length notes)


def decoded_velocity(velocity: int, config: TokenConfig) -> int:
    if not config.velocity_bins:
        return DEFAULT_VELOCITY
    return bin_velocity(velocity_bin(velocity, config.velocity_bins), config.velocity_bins)


@settings(max_examples=300, deadline=None)
@given(config_and_notes())
def test_encode_decode_round_trip(case):
    config, notes = case
    vocab = Vocabulary(config)
    expected = sorted((on, off, p, decoded_velocity(v, config))
                      for on, off, p, v in resolve_overlaps(quantised(notes, config)))
    ids = encode_notes(notes, vocab)
    tpb = config.ticks_per_beat
    got = sorted((round(n.onset_beats * tpb), round((n.onset_beats + n.duration_beats) * tpb), n.pitch, n.velocity)
                 for n in decode_ids(ids, vocab))
    assert ids.dtype == np.int32 and vocab.name(int(ids[0])) == "BOS"
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(configs, st.integers(1, 6), st.data())
def test_grid_round_trip(config, voices, data):
    config = TokenConfig(scheme="grid", pitch_min=config.pitch_min, pitch_max=config.pitch_max, grid_voices=voices)
    vocab = Vocabulary(config)
    cells = st.sampled_from([0, *config.pitches])
    frames = np.array(data.draw(st.lists(st.lists(cells, min_size=voices, max_size=voices), max_size=50)),
                      dtype=np.int64).reshape(-1, voices)
    ids = grid_to_ids(frames, vocab)
    assert ids.dtype == np.int32 and len(ids) == frames.size
    assert np.array_equal(ids_to_grid(ids, vocab), frames)
    notes = grid_to_notes(frames, steps_per_beat=4)
    assert sum(round(n.duration_beats * 4) for n in notes) == np.count_nonzero(frames)
    for n in notes:  # each note is a run of its pitch in some voice
        start, stop = round(n.onset_beats * 4), round((n.onset_beats + n.duration_beats) * 4)
        assert any((frames[start:stop, v] == n.pitch).all() for v in range(voices))


@st.composite
def config_notes_events(draw):
    """Tick-aligned notes without same-pitch overlaps, and their events in the canonical order."""
    config = draw(configs)
    tpb, notes, events = config.ticks_per_beat, [], []
    for pitch in draw(st.lists(st.integers(config.pitch_min, config.pitch_max), max_size=6, unique=True)):
        tick = 0
        for gap, length, velocity in draw(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 60),
                                                             st.integers(1, 127)), max_size=8)):
            on, tick = tick + gap, tick + gap + length
            notes.append(Note(on / tpb, length / tpb, pitch, velocity))
            events += [(on, 1, pitch, velocity), (tick, 0, pitch, 0)]
    return config, notes, sorted(events)


@settings(max_examples=300, deadline=None)
@given(config_notes_events())
def test_stream_encoder_equals_offline_encoding(case):
    config, notes, events = case
    vocab = Vocabulary(config)
    encoder, streamed, now = StreamEncoder(vocab), [], 0
    for tick, is_on, pitch, velocity in events:
        elapsed = (tick - now) / config.ticks_per_beat
        streamed += encoder.note_on(elapsed, pitch, velocity) if is_on else encoder.note_off(elapsed, pitch)
        now = tick
    assert streamed == encode_notes(notes, vocab, bos=False).tolist()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 12, 24]), st.lists(st.floats(0, 3, allow_nan=False), min_size=1, max_size=400))
@example(12, [1.125, 0.0])
def test_stream_encoder_never_drifts(tpb, gaps):
    """After every event the SHIFT ticks sent add up to the elapsed time within half a tick."""
    vocab = Vocabulary(TokenConfig(ticks_per_beat=tpb))
    shift_ticks = {vocab.id(n): int(n[6:]) for n in vocab.names if n.startswith("SHIFT_")}
    encoder, sent, elapsed_beats = StreamEncoder(vocab), 0, 0.0
    for i, gap in enumerate(gaps):
        ids = encoder.note_on(gap, 60, 80) if i % 2 else encoder.advance(gap)
        sent += sum(shift_ticks.get(t, 0) for t in ids)
        elapsed_beats += gap
        assert abs(sent - elapsed_beats * tpb) <= 0.5 + 1e-6


def test_stream_encoder_long_stream_stays_exact():
    vocab = Vocabulary(TokenConfig(ticks_per_beat=12))
    shift_ticks = {vocab.id(n): int(n[6:]) for n in vocab.names if n.startswith("SHIFT_")}
    encoder = StreamEncoder(vocab)
    sent = sum(shift_ticks.get(t, 0) for _ in range(100_000) for t in encoder.note_on(0.1, 60, 80))
    assert sent == 120_000  # 100,000 gaps of 1.2 ticks: rounding each would give 100,000


@st.composite
def pruned_vocab(draw):
    config = draw(st.one_of(configs, configs.map(lambda c: TokenConfig(
        scheme="grid", pitch_min=c.pitch_min, pitch_max=c.pitch_max))))
    vocab = Vocabulary(config)
    pitch_counts = {p: draw(st.integers(0, 100)) for p in config.pitches}
    counts = {}
    for name in vocab.names:
        kind, _, value = name.partition("_")
        counts[name] = pitch_counts[int(value)] if kind in ("ON", "OFF", "P") else draw(st.integers(0, 100))
    return vocab, vocab.pruned(counts, draw(st.integers(0, 101)))


names_to_look_up = st.one_of(
    st.builds(lambda k, v: f"{k}_{v}", st.sampled_from(["ON", "OFF", "P", "VEL", "SHIFT"]), st.integers(-20, 200)),
    st.sampled_from(["BOS", "UNK", "REST", "FOO", "ON_", "VEL_x"]),
)


@settings(max_examples=300, deadline=None)
@given(pruned_vocab(), st.lists(names_to_look_up, max_size=20))
def test_pruned_vocabulary_fallback_returns_a_kept_token(case, extra):
    full, pruned = case
    for name in [*full.names, *extra]:
        if name in pruned:
            continue
        kept = pruned.fallback(name)
        assert kept in pruned, (name, kept)
        assert pruned.names[pruned.id(name)] == kept
    for pitch in full.config.pitches:  # ON and OFF move together, so notes still pair up
        if full.config.scheme == "event":
            on, off = pruned.name(pruned.id(f"ON_{pitch}")), pruned.name(pruned.id(f"OFF_{pitch}"))
            assert on.replace("ON_", "OFF_") == off


def test_fallback_of_a_malformed_grid_name():
    assert Vocabulary(TokenConfig(scheme="grid")).fallback("P_x") == "REST"
    assert Vocabulary(TokenConfig()).fallback("ON_\u00b2") == "UNK"


def test_a_chord_after_an_exact_half_tick_stays_together():
    encoder = StreamEncoder(Vocabulary(TokenConfig()))
    encoder.advance(0.375)  # 4.5 ticks: rounds up to 5
    assert encoder.note_on(0.0, 60, 80) == [encoder.vocab.id("ON_60")]


def test_a_note_ended_in_the_tick_it_started_is_left_out():
    vocab = Vocabulary(TokenConfig())
    ids = vocab.ids(["BOS", "ON_60", "ON_60", "SHIFT_6", "OFF_60", "ON_62", "OFF_62", "SHIFT_6", "ON_64"])
    notes = decode_ids(ids, vocab)
    # ON_60 ON_60 in one tick: one note; ON_62 OFF_62 in one tick: none; an unended note: one tick
    assert [(n.onset_beats, n.duration_beats, n.pitch) for n in notes] == [(0.0, 0.5, 60), (1.0, 1 / 12, 64)]


def test_a_unison_doubled_by_two_parts_is_one_note_the_longest_at_the_loudest():
    # two parts on C4 from beat 0 (2 beats, 1 beat) under E4: one ON, never ON OFF ON in one tick
    notes = [Note(0, 2, 60, 70), Note(0, 1, 60, 100), Note(0, 1, 64, 90), Note(1, 1, 60, 80)]
    assert notes_to_names(notes, TokenConfig()) == [
        "BOS", "ON_60", "ON_64", "SHIFT_12", "OFF_64", "OFF_60", "ON_60", "SHIFT_12", "OFF_60"]  # then a re-strike
    loud = notes_to_names(notes[:2], TokenConfig(velocity_bins=8))
    assert loud[:3] == ["BOS", f"VEL_{velocity_bin(100, 8)}", "ON_60"] and loud.count("ON_60") == 1


def test_chord_order_down_writes_each_chord_top_note_first_and_decodes_the_same():
    notes = [Note(0, 1, 60, 80), Note(0, 1, 64, 80), Note(0, 1, 67, 80), Note(1, 1, 62, 80)]
    up = notes_to_names(notes, TokenConfig())
    down = notes_to_names(notes, TokenConfig(chord_order="down"))
    assert [n for n in up if n.startswith("ON")][:3] == ["ON_60", "ON_64", "ON_67"]
    assert [n for n in down if n.startswith("ON")][:3] == ["ON_67", "ON_64", "ON_60"]
    vocab = Vocabulary(TokenConfig(chord_order="down"))
    back = decode_ids(encode_notes(notes, vocab), vocab)
    assert sorted((n.onset_beats, n.pitch) for n in back) == sorted((n.onset_beats, n.pitch) for n in notes)
    with pytest.raises(ValueError, match="chord order"):
        TokenConfig(chord_order="sideways")


def test_the_default_chord_order_keeps_the_encoding_caches_keys():
    from training.encode import EncodeSettings

    assert "chord_order" not in EncodeSettings(TokenConfig()).fingerprint(".mid")
    assert "chord_order" in EncodeSettings(TokenConfig(chord_order="down")).fingerprint(".mid")


def _stream(encoder: StreamEncoder, events, tpb: int) -> list[int]:
    """Events (tick, is_on, pitch, velocity) streamed as they come; tokens taken back are dropped."""
    streamed, now = [], 0
    for tick, is_on, pitch, velocity in events:
        got = encoder.event((tick - now) / tpb, bool(is_on), pitch, velocity)
        del streamed[len(streamed) - encoder.taken_back:]
        streamed += [t for t, _ in got]
        now = tick
    return streamed


@settings(max_examples=300, deadline=None)
@given(config_notes_events(), st.sampled_from(["up", "down"]), st.randoms(use_true_random=False))
def test_a_tick_streamed_in_any_order_equals_the_offline_encoding(case, chord_order, rng):
    """A chord's notes (and the keys released with them) arrive in any order within their tick
    (one key's release still before it is struck again): the tokens are the vocabulary's
    canonical order all the same."""
    config, notes, events = case
    config = TokenConfig(**{**config.__dict__, "chord_order": chord_order})
    slots: dict[tuple[int, int], list[float]] = {}  # (tick, pitch) -> random places, in order
    for tick, _, pitch, _ in events:
        slots.setdefault((tick, pitch), []).append(rng.random())
    places = {key: sorted(values) for key, values in slots.items()}
    shuffled = sorted(events, key=lambda e: (e[0], places[(e[0], e[2])].pop(0)))
    vocab = Vocabulary(config)
    expected = encode_notes(notes, vocab, bos=False).tolist()
    assert _stream(StreamEncoder(vocab), shuffled, config.ticks_per_beat) == expected


def test_a_chord_high_to_low_is_heard_low_to_high_and_keeps_its_tags():
    vocab = Vocabulary(TokenConfig())
    encoder = StreamEncoder(vocab)
    assert encoder.event(0.0, True, 67, 80, "a") == [(vocab.id("ON_67"), "a")]
    assert encoder.event(0.0, True, 64, 80, "b") == [(vocab.id("ON_64"), "b"), (vocab.id("ON_67"), "a")]
    assert encoder.taken_back == 1
    assert encoder.event(0.0, True, 72, 80, "c") == [(vocab.id("ON_72"), "c")]
    assert encoder.taken_back == 0
    assert [t for t, _ in encoder.onset] == vocab.ids(["ON_64", "ON_67", "ON_72"]).tolist()
    assert encoder.event(0.5, True, 60, 80) == [(vocab.id("SHIFT_6"), None), (vocab.id("ON_60"), None)]
    assert encoder.new_onset and encoder.taken_back == 0


def test_a_note_too_short_for_a_tick_keeps_its_order():
    vocab = Vocabulary(TokenConfig())
    encoder = StreamEncoder(vocab)
    streamed = _stream(encoder, [(0, 1, 64, 80), (0, 1, 62, 80), (0, 0, 64, 0), (0, 1, 60, 80)], 12)
    assert streamed == vocab.ids(["ON_60", "ON_62", "ON_64", "OFF_64"]).tolist()
    # two such notes: their ends in pitch order too, whichever order they came in
    for events in ([(0, 1, 71, 80), (0, 1, 64, 80), (0, 0, 71, 0), (0, 0, 64, 0)],
                   [(0, 1, 64, 80), (0, 1, 71, 80), (0, 0, 64, 0), (0, 0, 71, 0)]):
        streamed = _stream(StreamEncoder(vocab), events, 12)
        assert streamed == vocab.ids(["ON_64", "ON_71", "OFF_64", "OFF_71"]).tolist()
