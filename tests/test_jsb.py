"""The JSB 16th-note benchmark loader: its own 229/76/77 split and the 47-class grid encoding.
The archive is the `jsb_archive` fixture (tests/conftest.py: ../shared/data beside the repository)."""

from __future__ import annotations

import io
import tarfile
import numpy as np
import pytest
from rich.console import Console

from improv.errors import ConfigError
from improv.tokens import TokenConfig, ids_to_grid
from training import jsb
from training.data import load_dataset, load_pieces

def load(**kwargs):
    return load_dataset(console=Console(file=io.StringIO()), show_progress=False, **kwargs)


@pytest.fixture(scope="module")
def benchmark(jsb_archive):
    return load(data=[jsb_archive])


def test_split_sizes_steps_and_vocabulary(benchmark):
    assert {s: len(a) for s, a in benchmark.splits.items()} == {"train": 229, "valid": 76, "test": 77}
    assert sum(len(a) for a in benchmark.splits["train"]) == 220_912 == 4 * 55_228
    assert sum(len(a) for a in benchmark.splits["valid"]) == 4 * 18_408
    assert len(benchmark.vocab) == 47 and benchmark.vocab.config == jsb.JSB_TOKEN_CONFIG
    assert benchmark.names["train"][0] == "train/chorale_000" and benchmark.names["test"][-1] == "test/chorale_381"
    assert benchmark.description.startswith("JSB 16th-note CSVs")


def test_hands_on_ml_class_mapping(benchmark, jsb_archive):
    chorales = jsb.read_jsb(jsb_archive)
    frames = chorales["train"][0][1]
    ids = benchmark.splits["train"][0]
    expected = np.where(frames > 0, frames - 35, 0).reshape(-1)  # 0 = silence, 1..46 = MIDI 36..81
    assert np.array_equal(ids, expected) and ids.dtype == np.int32
    assert np.array_equal(ids_to_grid(ids, benchmark.vocab), frames)
    every = np.concatenate([a for split in benchmark.splits.values() for a in split])
    assert every.min() == 0 and every.max() == 46


def test_extracted_folder_gives_the_same_data(benchmark, jsb_archive, tmp_path):
    with tarfile.open(jsb_archive, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = next(p.parent for p in tmp_path.rglob("train"))
    assert jsb.is_jsb(root) and jsb.is_jsb(jsb_archive) and not jsb.is_jsb(tmp_path / "nothing")
    assert load(data=[root]).data_hash == benchmark.data_hash


def test_augment_transposes_train_only_within_range(jsb_archive):
    aug = load(data=[jsb_archive], key="augment", max_pieces=5)
    assert len(aug.splits["valid"]) == 5 and len(aug.splits["test"]) == 5
    assert 5 < len(aug.splits["train"]) <= 5 * 12
    for name, ids in zip(aug.names["train"], aug.splits["train"]):
        assert ids.min() >= 0 and ids.max() <= 46, name  # no transposition left MIDI 36..81


def test_normalize_and_event_scheme(jsb_archive):
    normal = load(data=[jsb_archive], key="normalize", max_pieces=3)
    assert len(normal.vocab) == 47 and all(len(a) % 4 == 0 for a in normal.splits["train"])
    events = load(data=[jsb_archive], max_pieces=2, token_config=TokenConfig())
    assert events.splits["train"][0][0] == events.vocab.id("BOS")


def test_jsb_must_come_alone_and_pieces_have_notes(jsb_archive):
    with pytest.raises(ConfigError, match="own split"):
        load(data=[jsb_archive], corpus=["bach"])
    [(name, piece)] = load_pieces(data=[jsb_archive], max_pieces=1)
    assert name == "train/chorale_000" and set(piece.notes[:, 4]) == {0, 1, 2, 3}
