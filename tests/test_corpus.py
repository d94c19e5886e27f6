"""Corpus ingestion: parsing, skipping bad files, the worker time limit, the cache, splits, keys."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import mido
import numpy as np
import pytest
from rich.console import Console

from improv.errors import ConfigError, DataError
from improv.tokens import TokenConfig, decode_ids
from training import corpus, data, encode
from training.data import load_dataset, load_pieces, piece_notes, split_names

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]


def write_midi(path: Path, pitches, *, tpb: int = 480, velocity: int = 90, extra=()) -> Path:
    """A one-track MIDI file: each pitch one beat long, then `extra` (delta ticks, message) pairs."""
    track = mido.MidiTrack()
    for pitch in pitches:
        track.append(mido.Message("note_on", note=pitch, velocity=velocity, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=tpb))
    for delta, msg in extra:
        track.append(msg.copy(time=delta))
    mid = mido.MidiFile(ticks_per_beat=tpb)
    mid.tracks.append(track)
    mid.save(str(path))
    return path


def melodies(folder: Path, count: int, shift: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_midi(folder / f"song{i:02d}.mid", [p + shift + (i % 3) for p in C_MAJOR])
    return folder


def quiet(tmp_path: Path, **kwargs):
    """load_dataset with a private cache, no progress bar, and the console captured."""
    out = io.StringIO()
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    result = load_dataset(console=Console(file=out, width=200), show_progress=False, **kwargs)
    return result, out.getvalue()


def all_names(result) -> list[str]:
    return [n for split in data.SPLITS for n in result.names[split]]


# Parsers injected through corpus.PARSERS run in spawned workers, so they live at module level.
def hang_parser(path, normalize_key=False):
    time.sleep(600)


def exploding_parser(path, normalize_key=False):
    raise AssertionError("parsed although the cache should have answered")


# --------------------------------------------------------------------------- MIDI parsing


def test_midi_beats_velocities_drums_and_overlaps(tmp_path):
    extra = [
        (0, mido.Message("note_on", channel=9, note=36, velocity=100)),  # drums: dropped
        (240, mido.Message("note_off", channel=9, note=36)),
        (0, mido.Message("note_on", note=70, velocity=50)),
        (240, mido.Message("note_on", note=70, velocity=60)),  # re-strike ends the first 70
        (480, mido.Message("note_off", note=70)),
        (0, mido.Message("note_on", note=72, velocity=70)),  # never released: ends with the track
        (960, mido.MetaMessage("end_of_track")),
    ]
    path = write_midi(tmp_path / "a.mid", [60], tpb=480, velocity=33, extra=extra)
    [piece] = corpus.parse_midi(path)
    rows = [tuple(r[:4]) for r in piece.notes]
    assert rows == [(0.0, 1.0, 60, 33), (1.5, 0.5, 70, 50), (2.0, 1.0, 70, 60), (3.0, 2.0, 72, 70)]


def test_midi_type1_tracks_are_voices(tmp_path):
    mid = mido.MidiFile(type=1, ticks_per_beat=96)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=400000)]))  # conductor
    for pitch in (72, 60):
        mid.tracks.append(mido.MidiTrack([mido.Message("note_on", note=pitch, velocity=80),
                                          mido.Message("note_off", note=pitch, time=192)]))
    mid.save(str(tmp_path / "t.mid"))
    [piece] = corpus.parse_midi(tmp_path / "t.mid")
    assert [(r[2], r[4]) for r in piece.notes] == [(60, 1), (72, 0)]
    assert piece.notes[0, 1] == 2.0  # tempo-free: 192 ticks at 96 per beat


# --------------------------------------------------------------------------- scores


def test_score_ties_chords_grace_rests(tmp_path):
    from music21 import chord, note, stream, tie

    part = stream.Part()
    a, b = note.Note("C4", quarterLength=1.0), note.Note("C4", quarterLength=2.0)
    a.tie, b.tie = tie.Tie("start"), tie.Tie("stop")
    part.append([a, b, note.Rest(quarterLength=1.0), chord.Chord(["E4", "G4"], quarterLength=1.0)])
    part.append(note.Note("D5").getGrace())
    part.append(note.Note("B4", quarterLength=1.0))
    path = stream.Score([part]).write("musicxml", fp=tmp_path / "s.musicxml")
    [piece] = corpus.parse_score(Path(path))
    assert [tuple(r[:3]) for r in piece.notes] == [(0.0, 3.0, 60), (4.0, 1.0, 64), (4.0, 1.0, 67), (5.0, 1.0, 71)]


ABC_TWO_TUNES = """%% a file header
X:1
T:one
M:4/4
L:1/4
K:D
D2FA|d2AF|GBce|d4|]

X:2
T:two
M:3/4
L:1/4
K:C
CEG|c3|]
"""


def test_abc_opus_gives_one_piece_per_tune_and_normalizes_key(tmp_path):
    (tmp_path / "tunes.abc").write_text(ABC_TWO_TUNES)
    pieces = corpus.parse_abc(tmp_path / "tunes.abc", normalize_key=True)
    assert [p.name for p in pieces] == ["#1", "#2"]
    assert pieces[0].key_shift == -2 and pieces[1].key_shift == 0  # D major -> C; already C
    assert [n.pitch for n in pieces[0].to_notes(pieces[0].key_shift)][:4] == [60, 64, 67, 72]


# --------------------------------------------------------------------------- skipping and errors


def test_bad_files_are_skipped_with_reasons(tmp_path):
    folder = melodies(tmp_path / "music", 2)
    (folder / "corrupt.mid").write_bytes(np.random.default_rng(0).bytes(300))
    (folder / "empty.mid").write_bytes(b"")
    (folder / "notes.mid").write_text("this is a shopping list, not music\n")
    (folder / "README.txt").write_text("ignored: not a music extension")
    result, out = quiet(tmp_path, data=[folder])
    assert sorted(all_names(result)) == [f"{folder.as_posix()}/song00.mid", f"{folder.as_posix()}/song01.mid"]
    reasons = dict(result.skipped)
    assert set(reasons) == {f"{folder.as_posix()}/{n}" for n in ("corrupt.mid", "empty.mid", "notes.mid")}
    assert reasons[f"{folder.as_posix()}/empty.mid"] == "empty file"
    assert all(reasons.values())
    assert "skipped 3 of 5 files:" in out
    assert "notes.mid:" in out


def test_no_usable_file_raises_data_error(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.mid").write_bytes(b"")
    (folder / "b.mid").write_text("not midi")
    with pytest.raises(DataError, match=r"no usable music in .*junk \(2 files skipped\).*--corpus bach"):
        quiet(tmp_path, data=[folder])


def test_bad_options(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        quiet(tmp_path, data=[tmp_path / "missing"])
    with pytest.raises(ConfigError, match="unknown corpus 'nope'; use one of bach, essen, .*airds.*palestrina"):
        quiet(tmp_path, corpus=["nope"])
    with pytest.raises(ConfigError, match="key="):
        quiet(tmp_path, corpus=["bach"], key="major")


def test_hanging_parse_is_killed(tmp_path, monkeypatch):
    monkeypatch.setitem(corpus.PARSERS, ".hang", hang_parser)
    folder = melodies(tmp_path / "music", 1)
    (folder / "stuck.hang").write_text("anything")
    start = time.monotonic()
    result, out = quiet(tmp_path, data=[folder], file_timeout_s=1.0, workers=2)
    assert time.monotonic() - start < 60
    assert all_names(result) == [f"{folder.as_posix()}/song00.mid"]
    [(name, reason)] = result.skipped
    assert name.endswith("stuck.hang") and "timed out after 1 s" in reason


# --------------------------------------------------------------------------- cache


def test_cache_hit_parses_nothing(tmp_path, monkeypatch):
    folder = melodies(tmp_path / "music", 3)
    first, _ = quiet(tmp_path, data=[folder])
    monkeypatch.setitem(corpus.PARSERS, ".mid", exploding_parser)
    second, _ = quiet(tmp_path, data=[folder])
    assert second.skipped == [] and second.data_hash == first.data_hash
    with pytest.raises(DataError, match="3 files skipped"):  # another setting is a miss: parsed again
        quiet(tmp_path, data=[folder], key="normalize")


def test_an_entry_from_an_older_encoding_keeps_its_parse_and_is_encoded_anew(tmp_path, monkeypatch):
    folder = melodies(tmp_path / "music", 2)
    first, _ = quiet(tmp_path, data=[folder])
    entry = sorted((tmp_path / "cache").rglob("*.npz"))[0]
    with np.load(entry) as z:
        stored = dict(z)
    meta = json.loads(str(stored["meta"]))
    del meta["encoding"]  # as written before ENCODING_VERSION existed
    stored["meta"] = np.array(json.dumps(meta))
    stored["ids"] = np.zeros_like(stored["ids"])  # whatever an older encoding made of the notes
    np.savez(entry, **stored)
    monkeypatch.setitem(corpus.PARSERS, ".mid", exploding_parser)
    again, _ = quiet(tmp_path, data=[folder])
    assert again.data_hash == first.data_hash and not again.skipped
    with np.load(entry) as z:  # rewritten at the current encoding
        assert json.loads(str(z["meta"]))["encoding"] == encode.ENCODING_VERSION
        assert z["ids"].any()


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPROV_CACHE", str(tmp_path / "envcache"))
    quiet(tmp_path, data=[melodies(tmp_path / "m", 1)], cache_dir=None)
    assert list((tmp_path / "envcache").rglob("*.npz"))


def test_corrupt_entry_is_a_miss_and_writes_are_atomic(tmp_path, monkeypatch):
    folder = melodies(tmp_path / "music", 3)
    first, _ = quiet(tmp_path, data=[folder], workers=0)
    entries = sorted((tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 3
    entries[0].write_bytes(b"PK\x03\x04 truncated")
    entries[1].write_bytes(entries[1].read_bytes()[:100])
    again, _ = quiet(tmp_path, data=[folder], workers=0)
    assert again.data_hash == first.data_hash and not again.skipped
    for entry in entries:
        entry.unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encode.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quiet(tmp_path, data=[folder], workers=0)
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_non_empty(tmp_path):
    names = [f"piece{i}" for i in range(23)]
    a, b = split_names(names, seed=1), split_names(list(reversed(names)), seed=1)
    assert a == b and a != split_names(names, seed=2)
    assert [sum(v == s for v in a.values()) for s in data.SPLITS] == [19, 2, 2]
    assert sorted(split_names(["x", "y", "z"]).values()) == ["test", "train", "valid"]
    result, _ = quiet(tmp_path, data=[melodies(tmp_path / "music", 10)], split_seed=3)
    again, _ = quiet(tmp_path, data=[tmp_path / "music"], split_seed=3)
    assert result.names == again.names and result.data_hash == again.data_hash
    groups = [set(result.names[s]) for s in data.SPLITS]
    assert all(groups) and sum(map(len, groups)) == len(set.union(*groups)) == 10


def test_max_pieces_takes_the_first_pieces_before_splitting(tmp_path):
    folder = melodies(tmp_path / "music", 6)
    result, _ = quiet(tmp_path, data=[folder], max_pieces=4)
    assert sorted(all_names(result)) == [f"{folder.as_posix()}/song{i:02d}.mid" for i in range(4)]


# --------------------------------------------------------------------------- keys and vocabulary


def test_key_normalize_puts_a_transposed_melody_back_in_c(tmp_path):
    write_midi(tmp_path / "d.mid", [p + 2 for p in C_MAJOR])  # D major
    result, _ = quiet(tmp_path, data=[tmp_path / "d.mid"], key="normalize")
    [ids] = result.splits["train"]
    assert [n.pitch for n in decode_ids(ids, result.vocab)] == C_MAJOR
    assert corpus.key_shift_of(corpus.notes_array([(i, 1, p + 2, 80, 0) for i, p in enumerate(C_MAJOR)])) == -2


def test_augment_multiplies_train_only(tmp_path):
    folder = melodies(tmp_path / "music", 10)
    plain, _ = quiet(tmp_path, data=[folder])
    aug, _ = quiet(tmp_path, data=[folder], key="augment")
    assert len(aug.splits["train"]) == 12 * len(plain.splits["train"])
    assert aug.names["valid"] == plain.names["valid"] and aug.names["test"] == plain.names["test"]
    assert {n.rsplit("@", 1)[-1] for n in aug.names["train"] if "@" in n} == {f"{s:+d}" for s in range(-6, 6) if s}
    narrow = TokenConfig(pitch_min=60, pitch_max=74)  # the melodies span 60..74 at most: few shifts fit
    write_midi(tmp_path / "one.mid", [60, 70])
    small, _ = quiet(tmp_path, data=[tmp_path / "one.mid"], key="augment", token_config=narrow)
    assert small.names["train"] == [f"{(tmp_path / 'one.mid').as_posix()}{s}" for s in ("", "@+1", "@+2", "@+3", "@+4")]


def test_min_count_prunes_on_train_and_fallback_keeps_ids_valid(tmp_path):
    folder = melodies(tmp_path / "music", 10)
    full, _ = quiet(tmp_path, data=[folder])
    pruned, _ = quiet(tmp_path, data=[folder], min_count=40)
    assert len(pruned.vocab) < len(full.vocab)
    assert all(a.max() < len(pruned.vocab) for s in data.SPLITS for a in pruned.splits[s])
    assert pruned.data_hash != full.data_hash


# --------------------------------------------------------------------------- music21 corpora


def test_bach_corpus_loads_five_chorales_as_events_and_grid(tmp_path):
    result, _ = quiet(tmp_path, corpus=["bach"], max_pieces=5)
    assert result.description == "music21 corpus bach, 5 pieces"
    names = all_names(result)
    assert len(names) == 5 and all(n.startswith("bach/bwv") for n in names)
    assert all(a[0] == result.vocab.id("BOS") and a.dtype == np.int32 for s in data.SPLITS for a in result.splits[s])
    grid = TokenConfig(scheme="grid", pitch_min=36, pitch_max=81)
    gridded, _ = quiet(tmp_path, corpus=["bach"], max_pieces=2, token_config=grid)
    assert len(gridded.vocab) == 47 and all(len(a) % 4 == 0 for s in data.SPLITS for a in gridded.splits[s])


def test_corpus_listings_without_parsing():
    bach = corpus.corpus_sources("bach")
    assert 340 <= len(bach) <= 371 and all(s.path.is_file() for s in bach)
    assert len(corpus.corpus_sources("essen")) >= 20
    assert len(corpus.corpus_sources("oneills")) >= 30
    assert len(corpus.corpus_sources("ryans")) >= 1000
    sizes = {"airds": 6, "miscfolk": 2, "nottingham": 1, "palestrina": 1300, "monteverdi": 49, "trecento": 100}
    for name, at_least in sizes.items():
        sources = corpus.corpus_sources(name)
        assert len(sources) >= at_least, name
        assert all(s.name.startswith(f"{name}/") and s.path.suffix.lower() in corpus.PARSERS for s in sources), name
    assert not [s for s in corpus.corpus_sources("monteverdi") if s.path.suffix == ".rntxt"]  # analyses, not music


@pytest.mark.parametrize("name, pick", [("palestrina", 0), ("trecento", 0), ("monteverdi", 0)])
def test_new_corpora_give_notes(name, pick):
    """One file of each corpus added for issue 15 parses into pieces with notes (music21, in-process)."""
    source = corpus.corpus_sources(name)[pick]
    pieces = [p for p in corpus.PARSERS[source.path.suffix.lower()](source.path) if isinstance(p, corpus.Piece)]
    assert pieces and all(len(p.notes) > 50 for p in pieces), [len(p.notes) for p in pieces]


def test_ryans_abc_corpus_loads(tmp_path):
    result, _ = quiet(tmp_path, corpus=["ryans"], max_pieces=3)
    assert len(all_names(result)) == 3 and all(n.startswith("ryans/") for n in all_names(result))


def test_max_pieces_counts_per_corpus(tmp_path):
    """Several corpora in one run each give `max_pieces` pieces; the first corpus does not take them all."""
    result, _ = quiet(tmp_path, corpus=["ryans", "nottingham"], max_pieces=2)
    names = all_names(result)
    assert sorted(n.split("/")[0] for n in names) == ["nottingham"] * 2 + ["ryans"] * 2, names
    assert result.description == "music21 corpus ryans + music21 corpus nottingham, 4 pieces"


def test_load_pieces_and_piece_notes(tmp_path):
    folder = melodies(tmp_path / "music", 3)
    pieces = load_pieces(data=[folder], cache_dir=tmp_path / "cache")
    assert [name.rsplit("/", 1)[-1] for name, _ in pieces] == ["song00.mid", "song01.mid", "song02.mid"]
    notes = piece_notes(str(folder), 1, cache_dir=tmp_path / "cache")
    assert [n.pitch for n in notes] == [p + 1 for p in C_MAJOR]
    with pytest.raises(DataError, match="only 3 usable pieces"):
        piece_notes(str(folder), 5, cache_dir=tmp_path / "cache")


def test_workers_do_not_rerun_an_unguarded_script(tmp_path):
    """Workers are spawned; a caller's script without `if __name__ == "__main__"` must still work."""
    import subprocess
    import sys

    folder = melodies(tmp_path / "music", 2)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from training.data import load_dataset\n"
        f"c = load_dataset(data=[{str(folder)!r}], cache_dir={str(tmp_path / 'cache')!r}, workers=2, show_progress=False)\n"
        "print('pieces', sum(len(v) for v in c.names.values()))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "pieces 2"
