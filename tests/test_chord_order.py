"""A chord's notes reach the model in its vocabulary's order, whatever order they arrive in
(improv/stream_encoder.py, improv/context.py): the state, the logits, the session memory and the
blend end exactly where an offline encoding of the same notes leaves them."""

from __future__ import annotations

import numpy as np
import pytest

from improv.blend import Blend
from improv.context import ModelContext, TimedModel
from improv.memory import SessionMemory
from improv.model_step import StepModel
from improv.tokens import Note, TokenConfig, Vocabulary, encode_notes
from tests.fakes import FakeModel

# three onsets of chords, the first two held into the next (a key released as the next chord starts)
CHORDS = [(0.0, 1.0, (60, 64, 67, 72)), (1.0, 1.0, (62, 65, 69, 74)), (2.0, 2.0, (59, 62, 67, 74))]


def chord_notes() -> list[Note]:
    return [Note(onset, length, pitch, 80) for onset, length, pitches in CHORDS for pitch in pitches]


def events_against(notes: list[Note], chord_order: str) -> list[tuple[float, str, int]]:
    """(beats, "on"/"off", pitch) in the opposite of `chord_order`'s order within each tick (for
    "up": note-ons highest first, the note-offs after them, highest first; but a key struck again
    is released first, as on a keyboard)."""
    sign = 1 if chord_order == "down" else -1
    ons = [(n.onset_beats, "on", n.pitch) for n in notes]
    offs = [(n.onset_beats + n.duration_beats, "off", n.pitch) for n in notes]
    again = {(beats, pitch) for beats, _, pitch in ons}

    def order(e):
        beats, kind, pitch = e
        if kind == "on":
            return beats, 1, sign * pitch
        return beats, 0 if (beats, pitch) in again else 2, sign * pitch
    return sorted(ons + offs, key=order)


def reference(model: TimedModel, notes: list[Note]) -> ModelContext:
    """The offline encoding of `notes`, heard token by token and learned at once."""
    context = ModelContext(model, SessionMemory(model.vocab.names), Blend(4))
    for token in encode_notes(notes, model.vocab, bos=False):
        context.hear(int(token))
    return context


def live(model: TimedModel, events, step_each: bool, learn_each: bool = True) -> ModelContext:
    """`events` as they come: stepped at once (`step_each`: each note re-sorted into what was
    stepped) or left queued, and the lessons asked for after each, as the engine does."""
    context = ModelContext(model, SessionMemory(model.vocab.names), Blend(4))
    for beats, kind, pitch in events:
        if kind == "on":
            context.note_on(beats, pitch, 80)
        else:
            context.note_off(beats, pitch)
        if step_each:
            context.catch_up(64)
        if learn_each:
            context.learn()
    context.catch_up(context.queued)
    context.seal()
    context.learn()
    return context


def _model(name: str) -> TimedModel:
    if name == "fake-down":
        return TimedModel(FakeModel(vocab=Vocabulary(TokenConfig(pitch_min=36, pitch_max=96, chord_order="down"))))
    return TimedModel(StepModel.load(name))


def _state_arrays(state) -> list[np.ndarray]:
    if hasattr(state, "tensors"):
        return [*state.tensors.values(), *([] if state.history is None else [state.history])]
    return [np.array([state.last, state.position])]


@pytest.mark.parametrize("name", ["bach-lstm", "bach-wavenet", "fake-down"])
@pytest.mark.parametrize("step_each", [True, False], ids=["stepped-then-re-sorted", "re-sorted-in-queue"])
def test_chords_in_any_order_are_heard_as_the_offline_encoding(name, step_each):
    model = _model(name)
    notes = chord_notes()
    events = events_against(notes, model.vocab.config.chord_order)
    want, got = reference(model, notes), live(model, events, step_each)
    assert got.ready
    assert np.array_equal(got.logits, want.logits)
    assert got.state.position == want.state.position
    for a, b in zip(_state_arrays(got.state), _state_arrays(want.state)):
        assert np.array_equal(a, b)
    assert got.memory.to_dict() == want.memory.to_dict()
    assert np.array_equal(got.blend._model_w, want.blend._model_w)


def test_a_rewind_steps_the_onset_again_and_nothing_before_it():
    model = TimedModel(FakeModel())
    context = ModelContext(model, SessionMemory(model.vocab.names), Blend(4))
    context.note_on(0.0, 60, 80)
    context.note_off(1.0, 60)
    context.note_on(1.0, 67, 80)
    context.catch_up(64)
    fed = len(model.model.fed)
    context.note_on(1.0, 64, 80)  # sorts before ON_67, which was stepped
    assert not context.ready and context.queued == 3  # OFF_60, ON_64, ON_67: the onset again
    context.catch_up(64)
    names = [model.vocab.name(t) for t in model.model.fed[fed:]]
    assert names == ["OFF_60", "ON_64", "ON_67"]
    assert context.memory.context[-3:] == model.vocab.ids(["OFF_60", "ON_64", "ON_67"]).tolist()


def test_the_latest_onsets_lessons_wait_until_it_is_over():
    model = TimedModel(FakeModel())
    context = ModelContext(model, SessionMemory(model.vocab.names), Blend(4))
    context.note_on(0.0, 67, 80)
    context.catch_up(64)
    assert context.learn() == 0 and context.memory.tokens_seen == 0  # a note of that tick may yet come
    context.note_on(0.5, 60, 80)
    context.catch_up(64)
    assert context.learn() == 2 and context.memory.tokens_seen == 2  # ON_67 and the SHIFT after it


@pytest.mark.parametrize("seed", range(6))
def test_random_chords_and_step_budgets_end_as_the_offline_encoding(seed):
    """Chords of 1-5 notes held for random lengths (a key free before it is struck again), each
    tick's events in a random order (a key struck again released first), the model stepped a
    random few tokens after each event and the lessons asked for at random: the memory and the
    blend end as the offline encoding leaves them."""
    rng = np.random.default_rng(seed)
    model = TimedModel(FakeModel(vocab=Vocabulary(TokenConfig(pitch_min=36, pitch_max=96, velocity_bins=4,
                                                              chord_order=("up", "down")[seed % 2]))))
    notes, free, t = [], {}, 0.0  # free: pitch -> when its key is up again
    for _ in range(12):
        ready = [p for p in range(48, 85) if free.get(p, 0.0) <= t]
        for pitch in rng.choice(ready, rng.integers(1, 6), replace=False):
            length = float(rng.choice([0.25, 0.5, 1.0, 1.5]))
            notes.append(Note(t, length, int(pitch), int(rng.integers(20, 120))))
            free[int(pitch)] = t + length
        t += float(rng.choice([0.25, 0.5, 1.0]))
    velocity = {(n.onset_beats, n.pitch): n.velocity for n in notes}
    events = [(n.onset_beats, "on", n.pitch) for n in notes] + \
             [(n.onset_beats + n.duration_beats, "off", n.pitch) for n in notes]
    events.sort(key=lambda e: (e[0], not (e[1] == "off" and (e[0], e[2]) in velocity), rng.random()))
    want = reference(model, notes)
    got = ModelContext(model, SessionMemory(model.vocab.names), Blend(4))
    for beats, kind, pitch in events:
        if kind == "on":
            got.note_on(beats, pitch, velocity[(beats, pitch)])
        else:
            got.note_off(beats, pitch)
        got.catch_up(int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            got.learn()
    got.catch_up(got.queued)
    got.seal()
    got.learn()
    assert got.memory.to_dict() == want.memory.to_dict()
    assert np.array_equal(got.blend._model_w, want.blend._model_w)
