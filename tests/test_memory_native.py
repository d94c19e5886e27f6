"""improv/native/memory_mix.c (improv._memory_mix) against the Python it stands in for: the same
predictions and the same blend, over random tables in every state the memory passes through
(forgetting, rescaled, pruned, saved and loaded, contexts whose keys outgrow 64 bits)."""

from __future__ import annotations

import contextlib
import importlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import improv.blend
import improv.memory
from improv.blend import Blend
from improv.memory import Cursor, SessionMemory

if os.environ.get("IMPROV_REQUIRE_NATIVE") == "1":  # CI: a build that skipped the extension fails here
    native = importlib.import_module("improv._memory_mix")
else:
    native = pytest.importorskip("improv._memory_mix")

NAMES = ["BOS"] + [f"SHIFT_{i}" for i in range(1, 9)] + [f"ON_{p}" for p in range(48, 73)] + \
    [f"OFF_{p}" for p in range(48, 73)]
RTOL = 1e-12


@contextlib.contextmanager
def path(which):
    """The memory and the blend on one path: `native` (the extension) or None (their Python)."""
    improv.memory.native = improv.blend.native = which
    try:
        yield
    finally:
        improv.memory.native = improv.blend.native = native


def on_both(compute):
    """compute() on the C path and on the Python path, each result copied."""
    results = []
    for which in (native, None):
        with path(which):
            results.append(_copied(compute()))
    return results


def _copied(value):
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    return value.copy() if isinstance(value, np.ndarray) else value


def heard(tokens, order=4, half_life=0.0, max_contexts=12_000, seed=0) -> SessionMemory:
    """A memory that heard `tokens`, improv's own (weight 0.3) now and then."""
    memory = SessionMemory(NAMES, order=order, half_life_tokens=half_life, max_contexts=max_contexts)
    own = np.random.default_rng(seed).random(len(tokens)) < 0.3
    for token, mine in zip(tokens, own):
        memory.observe(int(token), 0.3 if mine else 1.0)
    return memory


def cursors(memory: SessionMemory, rng: np.random.Generator):
    """The memory's own cursor, cursors after some of what it heard, after never-heard tokens, empty."""
    yield memory.cursor
    yield Cursor()
    for _ in range(6):
        cursor = Cursor()
        for token in rng.integers(0, len(NAMES), rng.integers(1, 12)):
            memory.advance(cursor, int(token))
        yield cursor


def assert_same_predictions(memory: SessionMemory, seed: int = 0) -> None:
    for cursor in cursors(memory, np.random.default_rng(seed)):
        (p, depth), (p_py, depth_py) = on_both(lambda: memory.predict(cursor))
        assert depth == depth_py
        np.testing.assert_allclose(p, p_py, rtol=RTOL, atol=0)
        for table, ctx in ((memory.absolute, cursor.tokens), (memory.relative, cursor.relative)):
            (q, d), (q_py, d_py) = on_both(lambda: table.predict(ctx))
            assert d == d_py
            np.testing.assert_allclose(q, q_py, rtol=RTOL, atol=0)


def figures(rng: np.random.Generator, n: int) -> list[int]:
    """A player's figures (ON, SHIFT, OFF), moved about: the interval table has something to find."""
    tokens, pitch = [], 60
    figure = rng.integers(-3, 4, 4)
    while len(tokens) < n:
        if rng.random() < 0.1:
            figure = rng.integers(-3, 4, 4)
        for step in figure:
            pitch = int(np.clip(pitch + step, 48, 72))
            tokens += [NAMES.index(f"ON_{pitch}"), int(rng.integers(1, 9)), NAMES.index(f"OFF_{pitch}")]
    return tokens[:n]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.sampled_from([0.0, 3.0, 50.0]), st.sampled_from([4, 30, 12_000]),
       st.integers(0, 400))
def test_the_c_path_predicts_what_the_python_path_does(seed, order, half_life, max_contexts, n):
    rng = np.random.default_rng(seed)
    tokens = figures(rng, n) if rng.random() < 0.7 else list(rng.integers(0, len(NAMES), n))
    assert_same_predictions(heard(tokens, order, half_life, max_contexts, seed), seed)


def test_the_paths_agree_through_rescales_and_prunes():
    rng = np.random.default_rng(1)
    memory = SessionMemory(NAMES, order=4, half_life_tokens=3.0, max_contexts=40)
    rescaled = pruned = False
    for i, token in enumerate(figures(rng, 1500)):
        scale = memory.absolute._scale
        memory.observe(token)
        rescaled |= memory.absolute._scale < scale
        pruned |= len(memory.absolute.table) < 40 < len(memory.absolute.table) + 5
        if i % 50 == 0:
            assert_same_predictions(memory, i)
    assert rescaled and pruned


def test_the_paths_agree_where_context_keys_outgrow_64_bits():
    memory = heard(figures(np.random.default_rng(2), 600), order=8)
    assert max(memory.relative.table) > 2**64  # (the interval table's ids run past the vocabulary)
    assert_same_predictions(memory)


def test_the_paths_agree_on_a_memory_saved_and_loaded(tmp_path):
    memory = heard(figures(np.random.default_rng(3), 500), half_life=40.0)
    memory.save(tmp_path / "m.json")
    assert_same_predictions(SessionMemory.load(tmp_path / "m.json", NAMES))


def test_an_empty_memory_is_uniform_on_both_paths():
    memory = SessionMemory(NAMES)
    (p, depth), (p_py, depth_py) = on_both(lambda: memory.predict())
    assert depth == depth_py == 0
    np.testing.assert_allclose(p, p_py, rtol=RTOL)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([np.float32, np.float64]), st.floats(0.1, 40.0),
       st.sampled_from([None, 0.0, 0.3, 1.0]), st.booleans())
def test_the_c_path_blends_what_the_python_path_does(seed, dtype, spread, memory_weight, masked):
    rng = np.random.default_rng(seed)
    memory = heard(figures(rng, int(rng.integers(0, 300))), order=int(rng.integers(1, 6)))
    logits = (rng.normal(size=len(NAMES)) * spread).astype(dtype)
    if masked:  # a sampler's mask as -inf logits; a spread of 40 puts most under the floor
        logits[rng.random(len(NAMES)) < 0.3] = -np.inf
    blend = Blend(memory.order, memory_weight)
    for depth in range(memory.order + 1):
        p = memory.predict()[0]
        mixed, mixed_py = on_both(lambda: blend.mix(logits, p, depth))
        np.testing.assert_allclose(mixed, mixed_py, rtol=RTOL, atol=RTOL)  # log p: absolute error = p's relative


def test_the_blend_respects_masks_on_both_paths():
    from improv.sampling import Sampler

    rng = np.random.default_rng(4)
    memory = heard(figures(rng, 300))
    logits = rng.normal(size=len(NAMES)).astype(np.float32)
    mask = rng.random(len(NAMES)) < 0.2
    for which in (native, None):
        with path(which):
            p, depth = memory.predict()
            mixed = Blend(memory.order).mix(logits, p, depth)
            assert np.exp(mixed).sum() == pytest.approx(1.0, rel=1e-9)
            sampler = Sampler(1.0, rng=np.random.default_rng(1))
            assert all(mask[sampler.sample(mixed, mask)] for _ in range(50))


def test_the_c_path_refuses_arrays_it_would_misread():
    memory = heard(figures(np.random.default_rng(5), 100))
    counts = memory.absolute
    with pytest.raises(TypeError):  # float32 into a float64 buffer
        native.witten_bell(counts._p.astype(np.float32), counts.unigram, counts.unigram_total, counts.unigram_types,
                           counts._scale, counts.table, memory.cursor.tokens, counts.order)
    with pytest.raises(TypeError):  # not contiguous
        native.blend(np.empty(len(NAMES)), np.zeros(2 * len(NAMES))[::2], memory.predict()[0], 0.5, 1e-12)
    with pytest.raises(ValueError):
        native.blend(np.empty(len(NAMES)), np.zeros(3), memory.predict()[0], 0.5, 1e-12)
    with pytest.raises(IndexError):
        native.intervals(np.empty(len(NAMES)), counts._p, memory.relative._p, np.full(len(NAMES), 10**6))
