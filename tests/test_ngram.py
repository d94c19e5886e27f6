from __future__ import annotations

import math
import time

import numpy as np
import pytest

from training.metrics import Metrics
from training.ngram import fit_ngram, fit_ngrams

V = 12


def random_pieces(seed: int = 0, count: int = 20, vocab: int = V) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=rng.integers(5, 60)).astype(np.int32) for _ in range(count)]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_probabilities_sum_to_one(order):
    model = fit_ngram(random_pieces(), V, order)
    for context in ([0], [3, 4], [1, 1, 1, 1, 1, 1], [11, 10, 9, 8], [5, 5]):
        dist = model.prob_dist(context)
        assert dist.shape == (V,) and (dist > 0).all()
        assert math.isclose(dist.sum(), 1.0, abs_tol=1e-9)


def test_unseen_tokens_and_contexts_still_get_probability():
    pieces = [np.array([0, 1, 2, 1, 2, 1, 2], dtype=np.int32)]
    model = fit_ngram(pieces, 6, 3)
    dist = model.prob_dist([5, 4])  # a context never seen
    assert math.isclose(dist.sum(), 1.0) and dist[5] > 0
    assert np.isfinite(model.log_probs(np.array([0, 5, 4, 3]))).all()


def test_order_one_is_the_discounted_unigram_interpolated_with_uniform():
    pieces = [np.array([0, 1, 1, 2, 2, 2, 2, 3, 3], dtype=np.int32), np.array([4, 2, 2, 1], dtype=np.int32),
              np.array([4, 5], dtype=np.int32)]
    vocab = 7
    model = fit_ngram(pieces, vocab, 1)
    counts = np.bincount(np.concatenate([p[1:] for p in pieces]), minlength=vocab).astype(float)  # first tokens are given
    n1, n2 = (counts == 1).sum(), (counts == 2).sum()
    d = n1 / (n1 + 2 * n2)
    assert n1 and n2
    expected = (np.maximum(counts - d, 0) + d * (counts > 0).sum() / vocab) / counts.sum()
    assert model.discounts == [pytest.approx(d)]
    for context in ([0], [4, 2, 2]):
        assert np.allclose(model.prob_dist(context), expected)


def test_higher_orders_learn_a_repetitive_sequence_better():
    riff = [1, 2, 3, 2, 1, 4, 5, 4]
    train = [np.array(riff * 20, dtype=np.int32), np.array(riff * 15, dtype=np.int32)]
    test = [np.array(riff * 5, dtype=np.int32)]
    nll = {n: m.metrics(test).nll for n, m in fit_ngrams(train, V).items()}
    assert nll[1] > nll[2] > nll[3]
    assert nll[3] >= nll[5] - 1e-6 and nll[5] < 0.1
    assert fit_ngrams(train, V)[3].metrics(test).acc == 1.0


def test_first_token_of_each_piece_is_given_not_scored():
    pieces = random_pieces(1)
    model = fit_ngram(pieces, V, 3)
    assert len(model.log_probs(pieces[0])) == len(pieces[0]) - 1
    report = model.metrics(pieces[:3])
    assert report.tokens == sum(len(p) - 1 for p in pieces[:3])
    pooled = -np.concatenate([model.log_probs(p) for p in pieces[:3]]).sum() / report.tokens
    assert math.isclose(report.nll, pooled) and math.isclose(report.ppl, math.exp(pooled))
    assert model.metrics([pieces[0][:1]]) == Metrics(None, None, None, 0)  # nothing to predict


def test_log_probs_match_prob_dist_of_each_prefix():
    pieces = random_pieces(2)
    model = fit_ngram(pieces, V, 4)
    piece = pieces[3][:10]
    for i in range(1, len(piece)):
        assert math.isclose(math.exp(model.log_probs(piece)[i - 1]), model.prob_dist(piece[:i])[piece[i]])


def test_the_start_of_a_piece_is_its_own_context():
    pieces = [np.array([0, 1, 2, 3], dtype=np.int32), np.array([0, 1, 2, 3], dtype=np.int32),
              np.array([5, 0, 1, 4], dtype=np.int32)]
    model = fit_ngram(pieces, 6, 4)  # contexts (start, 0, 1) and (5, 0, 1) differ
    assert model.prob_dist([0, 1])[2] > model.prob_dist([5, 0, 1])[2]
    assert model.prob_dist([0, 1])[4] < model.prob_dist([5, 0, 1])[4]


def test_argmax_accuracy_matches_prob_dist():
    pieces = random_pieces(3, count=5)
    model = fit_ngram(pieces, V, 2)
    test = pieces[:2]
    hits = sum(int(np.argmax(model.prob_dist(p[:i])) == p[i]) for p in test for i in range(1, len(p)))
    assert math.isclose(model.metrics(test, chunk=7).acc, hits / sum(len(p) - 1 for p in test))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        fit_ngram([np.array([0, 12])], V, 2)
    with pytest.raises(ValueError):
        fit_ngram([np.array([3])], V, 2)
    with pytest.raises(ValueError):
        fit_ngrams(random_pieces(), V, [0, 1])


def test_fast_enough_for_half_a_million_tokens():
    pieces = random_pieces(4, count=2000, vocab=200)
    pieces = [np.tile(p, 8) for p in pieces]  # ~520k tokens
    start = time.perf_counter()
    models = fit_ngrams(pieces, 200)
    models[5].metrics(pieces[:20])
    assert time.perf_counter() - start < 20  # about 1 s on one core; generous for a shared machine
