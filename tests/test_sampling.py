from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from improv.keys import scale_pitch_classes
from improv.sampling import (
    Sampler,
    TokenMasks,
    base_mask,
    key_mask,
    pitch_range_mask,
    polyphony_mask,
)
from improv.tokens import TokenConfig, Vocabulary

EVENT = Vocabulary(TokenConfig())
GRID = Vocabulary(TokenConfig(scheme="grid", pitch_min=36, pitch_max=81))

finite = st.floats(-30, 30, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def logits_and_mask(draw, min_size=2, max_size=40):
    size = draw(st.integers(min_size, max_size))
    logits = draw(arrays(np.float32, size, elements=finite))
    mask = draw(arrays(np.bool_, size))
    if not mask.any():
        mask[draw(st.integers(0, size - 1))] = True
    return logits, mask


@given(logits_and_mask(), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.integers(0, 10),
       st.sampled_from([0.1, 0.5, 0.9, 1.0]), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_never_returns_a_masked_token(lm, temperature, top_k, top_p, seed):
    logits, mask = lm
    sampler = Sampler(temperature, top_k, top_p, np.random.default_rng(seed))
    for _ in range(5):
        assert mask[sampler.sample(logits, mask)]


@given(arrays(np.float32, st.integers(2, 40), elements=finite), st.integers(1, 10), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_top_k_samples_among_the_k_largest(logits, k, seed):
    sampler = Sampler(1.0, top_k=k, rng=np.random.default_rng(seed))
    kth = np.sort(logits)[::-1][min(k, len(logits)) - 1]
    for _ in range(5):
        assert logits[sampler.sample(logits)] >= kth


@given(arrays(np.float32, st.integers(2, 40), elements=finite), st.floats(0.05, 0.99), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_top_p_samples_inside_the_nucleus(logits, top_p, seed):
    sampler = Sampler(1.0, top_p=top_p, rng=np.random.default_rng(seed))
    p = np.exp(logits.astype(np.float64) - logits.max())
    p /= p.sum()
    for _ in range(5):
        token = sampler.sample(logits)
        more_likely = p[p > p[token]].sum()  # the nucleus needs `token` only if these fall short
        assert more_likely < top_p + 1e-9


@given(logits_and_mask(), st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_same_seed_same_tokens(lm, seed):
    logits, mask = lm
    a = Sampler(1.2, 5, 0.9, np.random.default_rng(seed))
    b = Sampler(1.2, 5, 0.9, np.random.default_rng(seed))
    assert [a.sample(logits, mask) for _ in range(20)] == [b.sample(logits, mask) for _ in range(20)]


def test_temperature_zero_is_argmax_of_the_allowed():
    logits = np.array([5.0, 1.0, 3.0, 4.0], dtype=np.float32)
    sampler = Sampler(0.0, rng=np.random.default_rng(0))
    assert sampler.sample(logits) == 0
    assert sampler.sample(logits, np.array([False, True, True, True])) == 3


def test_frequencies_follow_softmax_at_temperature_one():
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    sampler = Sampler(1.0, rng=np.random.default_rng(1))
    counts = np.bincount([sampler.sample(logits) for _ in range(20000)], minlength=3) / 20000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.015)


def test_high_temperature_flattens_low_sharpens():
    logits = np.log(np.array([0.7, 0.2, 0.1], dtype=np.float32))
    share = {}
    for t in (0.3, 3.0):
        sampler = Sampler(t, rng=np.random.default_rng(2))
        share[t] = np.mean([sampler.sample(logits) == 0 for _ in range(4000)])
    assert share[0.3] > 0.9 > 0.5 > share[3.0]


def test_empty_mask_falls_back_to_unmasked_and_counts_it():
    logits = np.array([0.0, 9.0, 0.0], dtype=np.float32)
    sampler = Sampler(0.0, rng=np.random.default_rng(0))
    assert sampler.sample(logits, np.zeros(3, dtype=bool)) == 1
    assert sampler.fallbacks == 1


def test_all_minus_inf_logits_sample_uniformly_from_the_allowed():
    logits = np.full(4, -np.inf, dtype=np.float32)
    mask = np.array([False, True, False, True])
    sampler = Sampler(1.0, rng=np.random.default_rng(0))
    assert {sampler.sample(logits, mask) for _ in range(50)} == {1, 3}
    assert Sampler(0.0).sample(logits, mask) == 1


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 0.8), (1.0, 5, 1.0), (1.3, 8, 0.9)])
def test_distribution_is_the_law_sample_draws_from(temperature, top_k, top_p):
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 1.5, 20).astype(np.float32)
    mask = rng.random(20) < 0.6
    weights = np.empty(20)
    assert Sampler(temperature, top_k, top_p, np.random.default_rng(0)).distribution(logits, mask, weights)
    p = weights / weights.sum()
    sampler, n = Sampler(temperature, top_k, top_p, np.random.default_rng(1)), 20000
    sampled = np.bincount([sampler.sample(logits, mask) for _ in range(n)], minlength=20) / n
    assert set(np.flatnonzero(sampled)) == set(np.flatnonzero(p))
    assert np.abs(sampled - p).max() < 0.02


def test_distribution_of_an_empty_mask_is_none():
    sampler, weights = Sampler(), np.full(5, 7.0)
    assert not sampler.distribution(np.zeros(5, dtype=np.float32), np.zeros(5, dtype=bool), weights)
    assert (weights == 7.0).all() and sampler.fallbacks == 0


def test_vocabulary_size_can_change_between_calls():
    sampler = Sampler(1.0, rng=np.random.default_rng(0))
    assert sampler.sample(np.zeros(3, dtype=np.float32)) < 3
    assert sampler.sample(np.zeros(7, dtype=np.float32)) < 7


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        Sampler(**kwargs)


# --------------------------------------------------------------------------- masks


def test_base_mask_forbids_only_bos_and_unk():
    mask = base_mask(EVENT)
    assert not mask[EVENT.id("BOS")] and not mask[EVENT.id("UNK")]
    assert mask.sum() == len(EVENT) - 2
    assert base_mask(GRID).all()


def test_pitch_range_mask_forbids_only_starts_outside():
    mask = pitch_range_mask(EVENT, 48, 72)
    assert mask[EVENT.id("ON_48")] and mask[EVENT.id("ON_72")]
    assert not mask[EVENT.id("ON_47")] and not mask[EVENT.id("ON_73")]
    assert mask[EVENT.id("OFF_30")] and mask[EVENT.id("SHIFT_3")]  # ending notes and time stay allowed
    grid = pitch_range_mask(GRID, 60, 70)
    assert grid[GRID.id("REST")] and grid[GRID.id("P_60")] and not grid[GRID.id("P_59")]


def test_key_mask_uses_pitch_classes():
    c_major = scale_pitch_classes(0, "major")
    mask = key_mask(EVENT, c_major)
    assert mask[EVENT.id("ON_60")] and mask[EVENT.id("ON_71")] and not mask[EVENT.id("ON_61")]
    assert mask[EVENT.id("OFF_61")]


def test_polyphony_mask_forbids_all_ons_at_the_limit():
    on_ids = [i for i, n in enumerate(EVENT.names) if n.startswith("ON_")]
    assert polyphony_mask(EVENT, 2, 3)[on_ids].all()
    at_limit = polyphony_mask(EVENT, 3, 3)
    assert not at_limit[on_ids].any() and at_limit[EVENT.id("OFF_60")] and at_limit[EVENT.id("SHIFT_1")]
    assert polyphony_mask(EVENT, 50, 0)[on_ids].all()  # 0 = no limit


def test_token_masks_combine_rules_into_a_reused_buffer():
    masks = TokenMasks(EVENT)
    first = masks.allowed(pitch_range=(60, 72), pitch_classes={0, 4, 7})
    assert first[EVENT.id("ON_64")] and not first[EVENT.id("ON_65")] and not first[EVENT.id("ON_76")]
    expected = pitch_range_mask(EVENT, 60, 72) & key_mask(EVENT, {0, 4, 7})
    assert np.array_equal(first, expected)
    second = masks.allowed(sounding=4, max_polyphony=4)
    assert second is first  # no allocation per step
    assert not second[EVENT.id("ON_64")]
