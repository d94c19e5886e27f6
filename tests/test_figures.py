"""The call's figures come back in the answer's top line (improv.figures), varied, never replayed whole."""

from __future__ import annotations

import numpy as np

from benchmarks.music import measure
from improv.figures import (GAIN_FIGURE, LINE_SCALE, MAX_RUN, TOP_FIRST_SCALE, TOP_LAST_SCALE, Figures, _voices, intervals,
                            top_line)
from improv.phrase_shape import ONSET_TOLERANCE_BEATS
from improv.tokens import Note
from improv.model_step import StepModel
from tests.test_listening import answer, line

ON_ID = np.arange(128)  # a vocabulary where ON_p has id p


def _offered(figures: Figures, pitches, sounding=0, highest=None, onset_top=None) -> dict[int, float]:
    fl = figures.line()
    fl.pitches.clear()
    fl.pitches.extend(pitches)
    fl.onset_top = onset_top
    out = np.zeros(128)
    fl.add_bonus(out, sounding, highest)
    return {int(p): float(out[p]) for p in np.flatnonzero(out)}


def test_the_top_line_is_each_onsets_highest_new_note_unless_a_higher_one_still_sounds():
    notes = [Note(0, 2, 72, 80), Note(0, 1, 60, 80), Note(1, 1, 64, 80),  # 64 moves under the held 72
             Note(2, 1, 74, 80), Note(2, 1, 62, 80), Note(3, 1, 71, 80)]
    assert top_line(notes) == [72, 74, 71]
    assert intervals([72, 74, 71]) == [2, -3]


def test_a_figure_is_offered_from_where_the_line_stands_transposed():
    call = line([60, 62, 64, 60, 67, 65, 64, 62])  # figure (+2, +2, -4) and others
    figures = Figures.of(call, ON_ID)
    offered = _offered(figures, [70, 72, 74])  # the figure's opening, a fifth higher
    assert max(offered, key=offered.get) == 70  # 74 - 4: the figure completed, transposed
    assert offered[70] > max(v for p, v in offered.items() if p != 70)


def test_the_line_may_not_replay_the_call_whole():
    steps = [2, 2, -4, 7, -2, -1, -2]
    call = line(np.cumsum([60] + steps).tolist())
    figures = Figures.of(call, ON_ID)
    replayed = np.cumsum([50] + steps[:MAX_RUN]).tolist()  # the call's first MAX_RUN intervals, again
    offered = _offered(figures, replayed)
    assert replayed[-1] + steps[MAX_RUN] not in offered  # the next one would replay MAX_RUN + 1 in a row
    fewer = np.cumsum([50] + steps[1:MAX_RUN]).tolist()
    assert fewer[-1] + steps[MAX_RUN] in _offered(figures, fewer)


def test_in_a_chord_only_a_note_that_can_be_the_top_is_offered():
    call = [Note(i, 0.9, p + d, 80) for i, p in enumerate([72, 74, 76, 72, 79]) for d in (-12, -5, 0)]
    up = Figures.of(call, ON_ID)  # chords written low to high: the top comes last
    assert _offered(up, [72, 74, 76], sounding=0) == {}  # the chord's first note is its lowest
    assert 72 in _offered(up, [72, 74, 76], sounding=2, highest=64)
    assert 72 not in _offered(up, [72, 74, 76], sounding=2, highest=73)  # it would sit under 73
    down = Figures.of(call, ON_ID, top_first=True)  # high to low: the top comes first
    assert 72 in _offered(down, [72, 74, 76], sounding=0)
    assert _offered(down, [72, 74, 76], sounding=1, highest=76, onset_top=76) == {}


def test_a_chord_calls_top_line_is_offered_more_strongly_most_where_it_is_the_last_note():
    """A chord call's figures are offered to the answer's top line more strongly than a single
    line's (the chord's other notes pull against them): most where the top note is the chord's
    last decision (low to high, under the harmony placed first), less where it is its first."""
    chords = [Note(i, 0.9, p + d, 80) for i, p in enumerate([72, 74, 76, 72, 79]) for d in (-12, -5, 0)]
    single = line([72, 74, 76, 72, 79])
    assert _offered(Figures.of(chords, ON_ID), [72, 74, 76], sounding=2, highest=64)[72] == \
        TOP_LAST_SCALE * GAIN_FIGURE
    assert _offered(Figures.of(single, ON_ID), [72, 74, 76])[72] == GAIN_FIGURE
    assert _offered(Figures.of(chords, ON_ID, top_first=True), [72, 74, 76])[72] == TOP_FIRST_SCALE * GAIN_FIGURE
    assert _offered(Figures.of(single, ON_ID, top_first=True), [72, 74, 76])[72] == GAIN_FIGURE


def test_a_chord_call_answered_by_a_line_offers_its_figures_to_every_note_of_the_line():
    """A melody model's line, chords voiced under it (improv.voicing): each of its notes is the top."""
    chords = [Note(i, 0.9, p + d, 80) for i, p in enumerate([72, 74, 76, 72, 79]) for d in (-12, -5, 0)]
    as_line = Figures.of(chords, ON_ID, as_line=True)
    assert _offered(as_line, [72, 74, 76], sounding=0)[72] == LINE_SCALE * GAIN_FIGURE
    assert _offered(Figures.of(chords, ON_ID), [72, 74, 76], sounding=0) == {}  # as chords: not the top


def _echo(model, overrides, seeds=range(6)):
    call = line([60, 62, 64, 60, 67, 65, 64, 67, 69, 67, 65, 64, 62, 64, 60, 59])
    got = [measure(call, answer(call, overrides, seed=s, model=model)) for s in seeds]
    return float(np.mean([m.echo for m in got if m is not None])), max(m.copy for m in got if m is not None)


def test_answers_take_up_the_calls_figures_without_copying_the_call():
    model = StepModel.load("bach-lstm")  # a real model: its lines are melodic enough to measure
    echo_on, copied = _echo(model, {"listen.memory": False})
    echo_off, _ = _echo(model, {"listen.memory": False, "listen.figures": False})
    assert echo_on >= echo_off + 0.25, (echo_on, echo_off)
    assert not copied


def _top_line_by_definition(notes):
    line, ordered, i = [], sorted(notes, key=lambda n: (n.onset_beats, -n.pitch)), 0
    while i < len(ordered):
        onset, top = ordered[i].onset_beats, ordered[i].pitch
        while i < len(ordered) and ordered[i].onset_beats - onset <= ONSET_TOLERANCE_BEATS:
            i += 1
        held = [n.pitch for n in notes if n.onset_beats < onset - ONSET_TOLERANCE_BEATS
                and n.onset_beats + n.duration_beats > onset + ONSET_TOLERANCE_BEATS]
        if not held or top >= max(held):
            line.append(top)
    return line


def _voices_by_definition(notes):
    return max([1] + [sum(1 for m in notes if m.onset_beats <= n.onset_beats + ONSET_TOLERANCE_BEATS
                          < m.onset_beats + m.duration_beats) for n in notes])


def test_the_sweeps_agree_with_the_definitions_on_random_voicings():
    rng = np.random.default_rng(2)
    for _ in range(300):
        onsets = np.round(rng.uniform(0, 8, rng.integers(1, 40)) * 12) / 12  # on a tick grid, chords too
        notes = [Note(float(o), float(rng.choice([1 / 12, 0.25, 0.5, 1.0, 3.0])), int(rng.integers(40, 80)), 80)
                 for o in onsets]
        assert top_line(notes) == _top_line_by_definition(notes)
        assert _voices(notes) == _voices_by_definition(notes)
