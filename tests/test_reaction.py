"""The duet's reaction choice (improv.reaction) on its own: the prepared table draws each note with
the probability the model gives it among the notes consonant with the keys held, never the struck
key itself, and the slow way keeps the same rules."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from improv.phrase import MaskRules
from improv.consonance import CONSONANT
from improv.reaction import Reaction
from improv.sampling import Sampler, TokenMasks
from improv.token_facts import TokenFacts
from tests.fakes import FakeModel


def make(seed=0):
    vocab = FakeModel().vocab
    facts = TokenFacts(vocab)
    performer = SimpleNamespace(facts=facts, masks=TokenMasks(facts),
                                sampler=Sampler(1.0, 0, 1.0, np.random.default_rng(seed)))
    logits = np.random.default_rng(3).normal(0.0, 1.0, len(vocab)).astype(np.float32)
    return Reaction(performer), facts, logits


def expected(facts, logits, rules, held, struck):
    """The law: softmax over ON_p in range, off the held keys, consonant with every key held."""
    p = np.zeros(len(logits))
    for pitch in range(rules.pitch_lo, rules.pitch_hi + 1):
        token = facts.on_id[pitch]
        if token >= 0 and pitch not in held and all((pitch - k) % 12 in CONSONANT for k in held):
            p[token] = np.exp(logits[token])
    return p / p.sum()


@pytest.mark.parametrize("held,struck", [((), 60), ((55,), 64), ((48, 55), 64)])
def test_the_prepared_table_draws_by_the_models_weights_among_the_consonant_notes(held, struck):
    reaction, facts, logits = make()
    rules = MaskRules(pitch_lo=48, pitch_hi=84, max_polyphony=4)
    n, counts = 6000, np.zeros(len(logits))
    for _ in range(n):
        reaction.prepare(lambda: logits, rules, held, (), 0, version=(1,))
        counts[facts.on_id[reaction.draw_ready(struck)]] += 1
        assert not reaction.ready  # spent
    p = expected(facts, logits, rules, (*held, struck), struck)
    assert set(np.flatnonzero(counts)) == set(np.flatnonzero(p))
    assert np.abs(counts / n - p).max() < 0.025


def test_the_slow_way_keeps_the_same_rules():
    reaction, facts, logits = make()
    rules = MaskRules(pitch_lo=48, pitch_hi=84, max_polyphony=4)
    picks = {reaction.choose(logits, rules, (55, 64), (60, 72), 1, 64) for _ in range(400)}
    assert picks and all(48 <= p <= 84 and p not in (55, 64, 60, 72) for p in picks)
    assert all((p - k) % 12 in CONSONANT for p in picks for k in (55, 64))
    assert reaction.choose(logits, rules, (55,), (), 4, 55) is None  # the polyphony is full


def test_a_table_is_remade_only_when_what_it_was_made_from_changed():
    reaction, facts, logits = make()
    rules, calls = MaskRules(pitch_lo=48, pitch_hi=84), []

    def logits_fn():
        calls.append(1)
        return logits

    for version in ((1,), (1,), (2,)):
        reaction.prepare(logits_fn, rules, (), (), 0, version)
    reaction.prepare(logits_fn, rules, (60,), (), 0, (2,))
    assert len(calls) == 3 and reaction.ready
