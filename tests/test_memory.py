"""improv.memory (the session memory) and improv.blend (its mix with the step model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from improv.blend import PRIOR_SHALLOW, SHARE, Blend
from improv.errors import ModelError
from improv.memory import Cursor, SessionMemory

NAMES = [f"SHIFT_{i}" for i in range(1, 9)] + [f"ON_{p}" for p in (60, 62)] + [f"OFF_{p}" for p in (60, 62)]


def after(memory: SessionMemory, tokens) -> Cursor:
    """A cursor that has seen `tokens` (the memory learns nothing from it)."""
    cursor = Cursor()
    for token in tokens:
        memory.advance(cursor, token)
    return cursor


def learned(sequence, order=3, half_life=0.0, **kw) -> SessionMemory:
    memory = SessionMemory(NAMES, order=order, half_life_tokens=half_life, **kw)
    for token in sequence:
        memory.observe(token)
    return memory


def test_a_repeated_figure_is_predicted_from_its_context():
    memory = learned([1, 2, 3, 4] * 6 + [1, 2])
    p, depth = memory.predict()
    assert depth == 3  # the whole context (order 3: two tokens) was seen
    assert int(np.argmax(p)) == 3 and p[3] > 0.8
    assert p.sum() == pytest.approx(1.0)
    assert memory.prob(3)[1] == 3 and memory.prob(3)[0] == pytest.approx(p[3], abs=0.02)  # (not renormalised)


def test_an_unseen_context_backs_off_to_what_was_heard_at_all():
    memory = learned([1, 2, 1, 2, 1, 2])
    p, depth = memory.predict(after(memory, [7, 8]))  # never heard: order 0 only
    assert depth == 1
    assert p[1] > p[5] and p[2] > p[5] and p[5] > 0  # heard tokens first, the rest still possible
    assert p.sum() == pytest.approx(1.0)


def test_forgetting_lets_new_material_take_over():
    old_then_new = [1, 2] * 200 + [1, 3] * 40
    remembers = learned(old_then_new, half_life=0.0)  # no forgetting
    forgets = learned(old_then_new, half_life=20.0)
    assert remembers.prob(3, after(remembers, [1]))[0] < 0.2
    assert forgets.prob(3, after(forgets, [1]))[0] > 0.75  # 400 old tokens faded under 80 new ones


def test_a_figure_is_recognised_at_another_pitch():
    """The interval table: C-D heard, then D: the memory expects E's pitch class of step... here
    the vocabulary has only C and D, so a figure C D C D is offered back from D as D C? No: as
    the same intervals, up a tone then down a tone."""
    memory = learned([8, 0, 9, 0, 8, 0, 9, 0, 8, 0], order=3)  # ON_60 SHIFT ON_62 SHIFT ...
    fresh = SessionMemory(NAMES, order=3, half_life_tokens=0.0)
    for token in [8, 0, 9, 0, 8, 0, 9, 0, 8, 0]:
        fresh.relative.observe(fresh.cursor.relative, fresh._relative_id(token, fresh.cursor.ref_pitch), 1.0)
        fresh.advance(fresh.cursor, token)
    assert memory.predict()[0][9] > 0.8  # after C and a shift: D, as heard
    assert fresh.predict()[0][9] > memory.predict()[0][8]  # from intervals alone, too


def test_memory_stays_bounded_and_faint_contexts_go():
    rng = np.random.default_rng(0)
    memory = learned(rng.integers(0, 12, 20_000), order=4, half_life=200.0, max_contexts=500)
    assert memory.contexts <= 2 * 2 * 500  # two tables, each pruned back to 500 past 1000
    assert memory.prob(int(memory.context[-1]))[0] > 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 11), max_size=60), st.integers(1, 5), st.floats(0.0, 1.0),
       st.lists(st.booleans(), min_size=12, max_size=12))
def test_the_blend_is_a_distribution_that_respects_every_mask(tokens, order, weight, allowed):
    """Whatever was heard and however it is mixed, the sampler's masks still hold."""
    from improv.sampling import Sampler

    memory = learned(tokens, order=order)
    logits = np.random.default_rng(len(tokens)).normal(size=12).astype(np.float32)
    p, depth = memory.predict()
    blend = Blend(order, memory_weight=weight)
    mixed = blend.mix(logits, p, depth)
    if blend.model_weight(depth) < 1.0:  # log-probabilities of a distribution
        assert np.exp(mixed).sum() == pytest.approx(1.0, rel=1e-6)
    else:  # the model alone: its logits as they are
        assert mixed is logits
    mask = np.array(allowed)
    if mask.any():
        sampler = Sampler(1.0, rng=np.random.default_rng(1))
        assert all(mask[sampler.sample(mixed, mask)] for _ in range(20))


def test_auto_weights_follow_the_better_predictor():
    blend = Blend(2)
    uniform = np.zeros(12)  # the model: no idea
    for _ in range(30):  # the memory saw every token coming
        blend.learn(uniform, 5, 0.9, depth=2)
    assert blend.model_weight(2) < 0.05 and blend.model_weight(0) == PRIOR_SHALLOW  # only that depth moved
    assert blend.model_weight(2) >= SHARE / 2
    for _ in range(30):  # the player changes: the model is right, the memory wrong
        blend.learn(np.where(np.arange(12) == 5, 10.0, 0.0), 5, 0.001, depth=2)
    assert blend.model_weight(2) > 0.95


def test_save_and_load_round_trip(tmp_path):
    memory = learned([1, 2, 3, 4] * 10, order=3, half_life=100.0)
    path = tmp_path / "me.json"
    memory.save(path)
    again = SessionMemory.load(path, NAMES)
    for ctx in ([1, 2], [3], [], [4, 1]):
        np.testing.assert_allclose(again.predict(after(again, ctx))[0], memory.predict(after(memory, ctx))[0], rtol=1e-9)
    assert again.cursor == memory.cursor and again.tokens_seen == memory.tokens_seen
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content, words", [
    (None, "cannot read"),
    ("{\"format\": \"improv-session-memory\", \"form", "corrupt or truncated"),
    ("[1, 2]", "not an improv session memory"),
    ("{\"format\": \"improv-session-memory\", \"format_version\": 99}", "format 99"),
    ("{\"format\": \"improv-session-memory\", \"format_version\": 1, \"vocabulary\": [\"X\"]}", "another model"),
    ("MALFORMED", "malformed"),
    ("BADTOKEN", "malformed"),
])
def test_every_bad_memory_file_is_one_line_naming_it(tmp_path, content, words):
    path = tmp_path / "m.json"
    good = learned([1, 2, 3] * 5).to_dict()
    if content == "MALFORMED":
        del good["order"]
        content = json.dumps(good)
    elif content == "BADTOKEN":
        good["absolute"][0][2][0][0] = 99
        content = json.dumps(good)
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelError) as err:
        SessionMemory.load(path, NAMES)
    assert str(path) in str(err.value) and words in str(err.value) and "\n" not in str(err.value)


def test_learning_put_off_until_after_the_reaction_learns_the_same():
    from improv.context import ModelContext, TimedModel
    from tests.fakes import FakeModel

    model = TimedModel(FakeModel())
    rng = np.random.default_rng(5)
    tokens = [int(t) for t in rng.integers(2, len(model.vocab), 300)]
    own = [bool(b) for b in rng.random(300) < 0.3]
    memory, blend = SessionMemory(model.vocab.names), Blend(4)  # learned at once, token by token
    state = model.new_state()
    logits = model.step(model.vocab.id("BOS"), state)
    later = ModelContext(model, SessionMemory(model.vocab.names), Blend(4), 0.3)
    for i, (token, mine) in enumerate(zip(tokens, own)):
        if not mine:
            blend.learn(logits, token, *memory.prob(token))
        memory.observe(token, 0.3 if mine else 1.0)
        logits = model.step(token, state)
        later._queue.append((token, mine))
        later.catch_up(1)
        assert later.memory.cursor == memory.cursor  # the cursor moves with each step
        if i % 7 == 6:
            later.learn()
    later.learn()
    assert later.memory.to_dict() == memory.to_dict()
    assert np.allclose(later.blend._model_w, blend._model_w)


def test_the_duet_reaction_is_handed_over_before_the_memory_learns_the_note(monkeypatch):
    from improv.events import NoteOn
    from tests.test_duet import make, melody

    engine, _, _ = make()
    engine.run_until(2.0, melody(n=3))  # the duet is playing along
    handed_when_counted: list[bool] = []
    count = SessionMemory.count

    def counting(self, *args):
        handed_when_counted.append(any(p.source == "duet" and p.kind == "on" and p.due_s == 2.0
                                       for *_, p in engine.scheduler._heap))
        return count(self, *args)

    monkeypatch.setattr(SessionMemory, "count", counting)
    engine.feed(NoteOn(2.0, 0, 45, 100))  # the reaction is planned in feed, the memory learns after it
    assert handed_when_counted and all(handed_when_counted)
