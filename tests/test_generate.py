from __future__ import annotations

import struct
import zlib
from fractions import Fraction

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from improv.cli import app
from improv.errors import ConfigError, DataError, ImprovError
from improv.generate import GenerateOptions, continue_notes, generate, load_seed, notes_to_grid, seed_event_ids, summary
from improv.midifile import read_midi, read_midi_tracks, write_midi
from improv.pianoroll import encode_png, rich_roll, roll_cells, text_roll, write_png
from improv.sampling import Sampler
from improv.tokens import Note, TokenConfig, Vocabulary, encode_notes, grid_to_ids

EVENT = Vocabulary(TokenConfig())
GRID = Vocabulary(TokenConfig(scheme="grid", pitch_min=36, pitch_max=81))


class FakeState:
    def __init__(self) -> None:
        self.position = 0

    def copy(self) -> FakeState:
        twin = FakeState()
        twin.position = self.position
        return twin

    def copy_into(self, other: FakeState) -> None:
        other.position = self.position


class FakeStepModel:
    """The StepModel interface over a (V, V) table: logits depend on the last token only."""

    def __init__(self, vocab: Vocabulary, table: np.ndarray, name: str = "fake", meta: dict | None = None) -> None:
        self.vocab, self.table, self.name, self.kind = vocab, table.astype(np.float32), name, "lstm"
        self.meta = meta or {"name": name, "kind": "lstm", "vocabulary": vocab.to_dict(), "train_config": {}}
        self.steps = 0

    def new_state(self) -> FakeState:
        return FakeState()

    def step(self, token: int, state: FakeState) -> np.ndarray:
        state.position += 1
        self.steps += 1
        return self.table[token]

    @classmethod
    def bigram(cls, vocab: Vocabulary, sequences, smoothing: float = 0.1, **kwargs) -> FakeStepModel:
        counts = np.full((len(vocab), len(vocab)), smoothing)
        for seq in sequences:
            np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
        return cls(vocab, np.log(counts / counts.sum(axis=1, keepdims=True)), **kwargs)


def scale(start: float = 0.0, length: float = 1.0, pitches=(60, 62, 64, 65, 67, 69, 71, 72)) -> list[Note]:
    return [Note(start + i * length, length, p) for i, p in enumerate(pitches)]


def event_fake() -> FakeStepModel:
    return FakeStepModel.bigram(EVENT, [encode_notes(scale(), EVENT), encode_notes(scale(length=0.5), EVENT)])


# --------------------------------------------------------------------------- seeds


def names(ids) -> list[str]:
    return [EVENT.name(int(i)) for i in ids]


def test_seed_cut_keeps_offs_at_the_cut_and_holds_notes_across_it():
    notes = [Note(0, 2, 60), Note(1, 0.5, 64), Note(1.5, 3, 67), Note(3, 1, 72)]
    ids, cut = seed_event_ids(notes, EVENT, 2.0)
    assert cut == 24
    assert names(ids) == ["BOS", "ON_60", "SHIFT_12", "ON_64", "SHIFT_6", "OFF_64", "ON_67", "SHIFT_6", "OFF_60"]


def test_seed_cut_pads_silence_up_to_the_cut():
    ids, cut = seed_event_ids([Note(0, 1, 60)], EVENT, 3.0)
    assert names(ids) == ["BOS", "ON_60", "SHIFT_12", "OFF_60", "SHIFT_24"] and cut == 36


def test_seed_without_cut_runs_to_the_next_whole_beat():
    ids, cut = seed_event_ids([Note(0, 1.5, 60)], EVENT, None)
    assert cut == 24 and names(ids)[-2:] == ["OFF_60", "SHIFT_6"]


def test_notes_to_grid_puts_the_highest_pitches_first():
    frames = notes_to_grid([Note(0, 1, 60), Note(0, 0.5, 72), Note(0.5, 0.5, 48)], voices=2, steps_per_beat=4, steps=5)
    assert frames.tolist() == [[72, 60], [72, 60], [60, 48], [60, 48], [0, 0]]


def test_load_seed_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_seed(seed_midi="a.mid", seed_corpus="bach", seed_piece=0, seed_beats=None)
    with pytest.raises(DataError):
        load_seed(seed_midi=tmp_path / "missing.mid", seed_corpus=None, seed_piece=0, seed_beats=None)
    write_midi(tmp_path / "empty.mid", {"x": []})
    with pytest.raises(DataError):
        load_seed(seed_midi=tmp_path / "empty.mid", seed_corpus=None, seed_piece=0, seed_beats=None)
    assert load_seed(seed_midi=None, seed_corpus=None, seed_piece=0, seed_beats=None) == ([], None)


def test_corpus_seed_without_music21_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "music21" else real(name, *a))
    with pytest.raises(ImprovError, match="needs music21"):
        load_seed(seed_midi=None, seed_corpus="bach", seed_piece=0, seed_beats=None)
    monkeypatch.delenv("IMPROV_VERBOSE", raising=False)
    result = CliRunner().invoke(app, ["generate", "--model", "x", "--seed-corpus", "bach", "--out", str(tmp_path / "x.mid")])
    assert result.exit_code in (1, 2) and "improv:" in result.output


# --------------------------------------------------------------------------- continuing


def test_event_continuation_covers_the_beats_and_keeps_the_seed():
    model, beats = event_fake(), 6.0
    seed = scale()[:4]
    result = continue_notes(model, seed, beats=beats, sampler=Sampler(1.0, rng=np.random.default_rng(3)))
    tpb = EVENT.config.ticks_per_beat
    new = result.ids[result.seed_tokens :]
    shift_ticks = sum(int(EVENT.name(int(t))[6:]) for t in new if EVENT.name(int(t)).startswith("SHIFT_"))
    assert beats * tpb <= shift_ticks < beats * tpb + EVENT.config.max_shift_ticks
    assert result.seed == seed and result.seed_end_beats == 4.0
    assert all(n.onset_beats >= 4.0 for n in result.notes)
    assert not {"BOS", "UNK"} & set(names(new))
    assert result.steps == model.steps == len(result.ids) - 1  # the last sampled token is never fed


def test_same_rng_seed_repeats_the_continuation():
    runs = [continue_notes(event_fake(), scale()[:3], beats=8, sampler=Sampler(1.0, 10, 0.95, np.random.default_rng(7)))
            for _ in range(2)]
    assert np.array_equal(runs[0].ids, runs[1].ids)


def test_no_seed_starts_from_bos():
    result = continue_notes(event_fake(), [], beats=4, sampler=Sampler(0.0))
    assert result.seed_tokens == 1 and result.ids[0] == EVENT.id("BOS") and result.seed == []
    assert result.seed_end_beats == 0.0 and result.notes


def test_max_polyphony_is_respected():
    table = np.zeros((len(EVENT), len(EVENT)))
    table[:, [i for i, n in enumerate(EVENT.names) if n.startswith("ON_")]] = 5.0  # a model that loves chords
    result = continue_notes(FakeStepModel(EVENT, table), [], beats=4, max_polyphony=3,
                            sampler=Sampler(1.0, rng=np.random.default_rng(0)))
    edges = sorted([(n.onset_beats, 1) for n in result.notes] + [(n.onset_beats + n.duration_beats, -1) for n in result.notes],
                   key=lambda e: (e[0], e[1]))
    assert max(np.cumsum([e[1] for e in edges])) <= 3


def test_a_model_that_never_shifts_still_stops():
    table = np.zeros((len(EVENT), len(EVENT)))
    table[:, EVENT.id("ON_60")] = 50.0
    result = continue_notes(FakeStepModel(EVENT, table), [], beats=2, sampler=Sampler(0.0))
    assert len(result.ids) < 2 * 64 + 20


def test_grid_continuation_writes_whole_frames():
    chorale = notes_to_grid([Note(0, 2, 72), Note(0, 2, 67), Note(0, 2, 64), Note(0, 2, 48),
                             Note(2, 2, 74), Note(2, 2, 67), Note(2, 2, 65), Note(2, 2, 50)], 4, 4, 16)
    model = FakeStepModel.bigram(GRID, [grid_to_ids(chorale, GRID)])
    seed = [Note(0, 1, 72), Note(0, 1, 64)]
    result = continue_notes(model, seed, beats=3, sampler=Sampler(1.0, rng=np.random.default_rng(0)), seed_beats=1)
    assert len(result.ids) == (1 + 3) * 4 * 4 and result.seed_end_beats == 1.0
    assert all(n.onset_beats >= 1.0 for n in result.notes) and result.notes
    assert {n.pitch for n in result.seed} == {72, 64}
    assert max(n.onset_beats + n.duration_beats for n in result.notes) <= 4.0


def test_grid_without_seed_starts_from_a_chord():
    model = FakeStepModel(GRID, np.zeros((len(GRID), len(GRID))))
    result = continue_notes(model, [], beats=1, sampler=Sampler(0.0))
    assert sorted(n.pitch for n in result.seed) == [48, 64, 67, 72]


def test_generate_writes_midi_and_png(tmp_path):
    seed_file = write_midi(tmp_path / "seed.mid", {"melody": scale()[:4]})
    result = generate(event_fake(), GenerateOptions(out=tmp_path / "out.mid", seed_midi=seed_file, beats=4, seed=1,
                                                     temperature=0.9, top_p=0.95, png=tmp_path / "out.png"))
    tracks = read_midi_tracks(tmp_path / "out.mid")
    assert list(tracks) == ["seed", "improv"] and tracks["seed"] == scale()[:4]
    assert len(tracks["improv"]) == len(result.notes)
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    line = summary(result, tmp_path / "out.mid", tmp_path / "out.png")
    assert "ms/step" in line and "new notes" in line and "\n" not in line


def test_generate_rejects_bad_sampling_options(tmp_path):
    with pytest.raises(ConfigError):
        generate(event_fake(), GenerateOptions(out=tmp_path / "x.mid", top_p=0.0))
    with pytest.raises(ConfigError):
        generate(event_fake(), GenerateOptions(out=tmp_path / "x.mid", beats=0))


# --------------------------------------------------------------------------- end to end, real ONNX


def test_improv_generate_end_to_end(tiny_model_dir, tmp_path):
    seed = write_midi(tmp_path / "seed.mid", {"melody": scale()[:6]})
    out, png = tmp_path / "gen.mid", tmp_path / "gen.png"
    args = ["generate", "--model", str(tiny_model_dir), "--out", str(out), "--png", str(png), "--seed-midi", str(seed),
            "--beats", "4", "--seed", "5", "--top-k", "20", "--max-polyphony", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ms/step" in result.output
    tracks = read_midi_tracks(out)
    assert tracks["seed"] == scale()[:6]
    assert all(n.onset_beats >= 6 for n in tracks.get("improv", []))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = CliRunner().invoke(app, args[:4] + [str(tmp_path / "again.mid")] + args[5:])
    assert again.exit_code == 0 and (tmp_path / "again.mid").read_bytes() == out.read_bytes()


def test_improv_generate_reports_a_missing_model_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("IMPROV_VERBOSE", raising=False)
    result = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.mid")])
    assert result.exit_code == 2 and "no model at" in result.output



# --------------------------------------------------------------------------- MIDI files


def test_midi_round_trip_is_exact_with_named_tracks(tmp_path):
    player = [Note(0, 1, 60, 90), Note(0.25, 0.5, 64, 70), Note(1 / 3, 2 / 3, 67, 64)]
    improv = [Note(2, 1.5, 72, 100)]
    path = write_midi(tmp_path / "t.mid", {"player": player, "improv": improv}, bpm=90)
    midi = mido.MidiFile(str(path))
    assert midi.type == 1 and len(midi.tracks) == 3
    tempo = [m for m in midi.tracks[0] if m.type == "set_tempo"][0].tempo
    assert tempo == mido.bpm2tempo(90)
    tracks = read_midi_tracks(path)
    assert tracks["player"] == sorted(player, key=lambda n: (n.onset_beats, n.pitch)) and tracks["improv"] == improv
    assert read_midi(path) == sorted(player + improv, key=lambda n: (n.onset_beats, n.pitch))


def test_every_note_on_has_its_note_off_even_for_overlaps(tmp_path):
    notes = [Note(0, 2, 60), Note(1, 2, 60), Note(1, 0.5, 60), Note(4, 1, 62)]
    path = write_midi(tmp_path / "o.mid", notes)
    for track in mido.MidiFile(str(path)).tracks[1:]:
        sounding, now = {}, 0
        for msg in track:
            now += msg.time
            if msg.type == "note_on":
                assert msg.note not in sounding
                sounding[msg.note] = now
            elif msg.type == "note_off":
                assert sounding.pop(msg.note) < now
        assert not sounding
    assert read_midi(path) == [Note(0, 1, 60), Note(1, 2, 60), Note(4, 1, 62)]


def test_reading_treats_velocity_zero_as_note_off_and_skips_drums(tmp_path):
    midi = mido.MidiFile(type=0, ticks_per_beat=96)
    track = mido.MidiTrack([
        mido.Message("note_on", note=60, velocity=80, time=0),
        mido.Message("note_on", note=36, velocity=80, channel=9, time=0),
        mido.Message("note_on", note=60, velocity=0, time=48),
        mido.Message("note_on", note=62, velocity=70, time=48),  # never ended: ends with the track
        mido.MetaMessage("end_of_track", time=96),
    ])
    midi.tracks.append(track)
    midi.save(str(tmp_path / "v.mid"))
    assert read_midi(tmp_path / "v.mid") == [Note(0, 0.5, 60, 80), Note(1, 1, 62, 70)]


def test_unreadable_midi_is_a_data_error(tmp_path):
    (tmp_path / "bad.mid").write_bytes(b"not midi at all")
    with pytest.raises(DataError):
        read_midi(tmp_path / "bad.mid")


twelfths = st.integers(0, 96).map(lambda k: Fraction(k, 12))


@given(st.lists(st.tuples(twelfths, st.integers(1, 24), st.integers(21, 108), st.integers(1, 127)), max_size=30))
@settings(max_examples=60, deadline=None)
def test_round_trip_property(tmp_path_factory, raw):
    notes, ends = [], {}
    for onset, ticks, pitch, vel in sorted(raw):
        if onset >= ends.get(pitch, -1):  # one note per pitch at a time: the file format's own limit
            notes.append(Note(float(onset), ticks / 12, pitch, vel))
            ends[pitch] = onset + Fraction(ticks, 12)
    path = write_midi(tmp_path_factory.mktemp("rt") / "p.mid", {"a": notes})
    back = read_midi(path)
    expected = sorted(notes, key=lambda n: (n.onset_beats, n.pitch))
    assert [(n.pitch, n.velocity) for n in back] == [(n.pitch, n.velocity) for n in expected]
    assert np.allclose([(n.onset_beats, n.duration_beats) for n in back], [(n.onset_beats, n.duration_beats) for n in expected])


# --------------------------------------------------------------------------- piano rolls


def test_text_roll_rows_are_pitches_and_columns_sixteenths():
    seed, cont = [Note(0, 1, 60)], [Note(1, 0.5, 62)]
    cells, lo = roll_cells([seed, cont], steps_per_beat=4)
    assert lo == 60 and cells.shape == (3, 6)
    assert cells[2].tolist() == [1, 2, 2, 2, 0, 0] and cells[0].tolist() == [0, 0, 0, 0, 3, 4]
    text = text_roll([seed, cont], ascii_only=True)
    rows = text.splitlines()
    assert len(rows) == 3 and rows[0].startswith("  D4") and rows[2].startswith("  C4")
    assert rows[2].endswith("#===|-") and rows[0].endswith("|...@-")
    assert rich_roll([seed, cont]).plain == text_roll([seed, cont])


def test_text_roll_of_one_plain_note_list_and_a_window():
    text = text_roll(scale(), start_beats=2, end_beats=4, steps_per_beat=2, lo=60, hi=72)
    assert len(text.splitlines()) == 13 and all(len(r) == 5 + 4 for r in text.splitlines())


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(height, width, 3)


def test_png_encoder_round_trips_pixels():
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(image)), image)


def test_png_piano_roll_draws_parts_in_their_colours(tmp_path):
    path = write_png(tmp_path / "r.png", [[Note(0, 1, 60)], [Note(1, 1, 64)]], labels=("seed", "improv"),
                     pixels_per_beat=10, pixels_per_pitch=4)
    image = decode_png(path.read_bytes())
    left, top = 40, 16  # the axes' margins (improv.pianoroll._framed)
    roll = image[top:top + 9 * 4, left:left + 20]  # pitches 58..66 (2 of margin), 2 beats
    seed_px = roll[(66 - 60) * 4 + 2, 5]
    cont_px = roll[(66 - 64) * 4 + 2, 15]
    assert tuple(seed_px) == (66, 133, 244) and tuple(cont_px) == (244, 140, 36)
    ink = (image != 255).any(axis=2)
    assert ink[top + (66 - 60) * 4 - 6:top + (66 - 60) * 4 + 8, :left].any()  # "C4" beside its row
    assert ink[:top, left:].any()  # the bar number
    legend = image[top + 9 * 4:]
    assert (legend == (66, 133, 244)).all(axis=2).any() and (legend == (244, 140, 36)).all(axis=2).any()
    assert ink[top + 9 * 4:, left + 18:].any()  # the legend's words
