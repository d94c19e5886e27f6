"""Chords voiced under a melody model's line where the call has chords (improv.voicing): the call's
texture measured, the voicer's chords (in key, under the top note, ended with it, never on a
blocked key), the probe that tells a melody model from a chorale model, and the rule through the
engine (a line model answers chords with chords, a line with a line)."""

from __future__ import annotations

import numpy as np

from improv.figures import Figures
from improv.keys import Key, scale_pitch_classes
from improv.model_step import StepModel
from improv.pairing import pair_messages
from improv.phrase import GenEvent
from improv.phrase_shape import PhraseShape
from improv.tokens import Note
from improv.voicing import MAJOR_TRIADS, SOFTER, Texture, Voicer, writes_chords
from tests.fakes import FakeModel, FakeState
from tests.test_listening import MELODY, answer, chords, line

C_MAJOR_TRIADS = [frozenset(pcs) for pcs, _ in MAJOR_TRIADS]


class LineModel(FakeModel):
    """A melody model: a note starts only right after time moves (one note per onset)."""

    writes_chords = False

    def step(self, token_id: int, state: FakeState) -> np.ndarray:
        logits = super().step(token_id, state)
        kind = self.vocab.name(int(token_id)).partition("_")[0]
        if kind not in ("SHIFT", "VEL", "BOS"):
            logits = logits.copy()
            for i, name in enumerate(self.vocab.names):
                if name.startswith(("ON_", "VEL_")):
                    logits[i] = -30.0
        return logits


def _texture(on_beat=4.0, off_beat=1.0, max_chord=4, bass=48.0):
    return Texture(on_beat, off_beat, max_chord, bass)


def _line_events(pitches, step=1.0, length=0.9, start=0.0):
    events = []
    for i, p in enumerate(pitches):
        events += [GenEvent(start + i * step, "on", p, 80), GenEvent(start + i * step + length, "off", p)]
    return sorted(events, key=lambda e: e.beats)


def test_the_calls_texture():
    assert Texture.of(line(MELODY)) is None  # a single line is answered by a single line
    t = Texture.of(chords([48, 53, 55, 48]) + [Note(0.5, 0.4, 67, 90)])
    assert t.on_beat == 3.0 and t.off_beat == 1.0 and t.max_chord == 3 and t.bass == 50.5


def test_voices_are_a_chord_of_the_key_under_the_top_note_and_end_with_it():
    rng = np.random.default_rng(0)
    voicer = Voicer(_texture(), Key(0, "major"), (40, 84), 4, rng)
    blocked = {55}
    top_line = [72, 71, 69, 67, 69, 71, 72, 76]
    out = voicer.flush(_line_events(top_line), lambda: blocked)
    ons = [e for e in out if e.kind == "on"]
    assert len(ons) == 4 * len(top_line)  # three voices under every note on the beat
    for beats in sorted({e.beats for e in ons}):
        chord = [e for e in ons if e.beats == beats]
        top = max(chord, key=lambda e: e.pitch)
        assert top.pitch == top_line[int(beats)] and top.velocity == 80
        voices = [e for e in chord if e is not top]
        assert all(v.pitch < top.pitch - 2 and 40 <= v.pitch and v.pitch not in blocked for v in voices)
        assert all(v.velocity == 80 - SOFTER for v in voices)
        classes = {e.pitch % 12 for e in chord}
        assert any(classes <= triad for triad in C_MAJOR_TRIADS) and classes <= scale_pitch_classes(0, "major")
        assert min(v.pitch for v in voices) <= 55  # the bass near the call's
    notes, hanging = pair_messages([(e.beats, (0x90, e.pitch, 80) if e.kind == "on" else (0x80, e.pitch, 0))
                                    for e in out])
    assert not hanging
    for n in notes:  # every voice ends with its top note
        assert abs((n.end - n.start) - 0.9) < 1e-9


def test_off_the_beat_the_calls_sparser_texture_and_a_line_that_writes_chords_gets_fewer_voices():
    voicer = Voicer(_texture(on_beat=4.0, off_beat=1.0), Key(0, "major"), (36, 84), 4, np.random.default_rng(1))
    out = voicer.flush(_line_events([72, 74, 76, 77], step=0.5, length=0.45), lambda: ())
    per_onset = {b: sum(1 for e in out if e.kind == "on" and e.beats == b) for b in (0.0, 0.5, 1.0, 1.5)}
    assert per_onset[0.0] == 4 and per_onset[1.0] == 4 and per_onset[0.5] == 1 and per_onset[1.5] == 1
    two = Voicer(_texture(), Key(0, "major"), (36, 84), 4, np.random.default_rng(1))
    events = [GenEvent(0.0, "on", 72, 80), GenEvent(0.0, "on", 64, 80), GenEvent(0.9, "off", 72),
              GenEvent(0.9, "off", 64)]
    assert sum(1 for e in two.flush(events, lambda: ()) if e.kind == "on") == 4  # two voices more


def test_an_onset_at_the_frontier_waits_until_it_is_complete():
    voicer = Voicer(_texture(), Key(0, "major"), (36, 84), 4, np.random.default_rng(2))
    first = voicer.add([GenEvent(0.0, "on", 72, 80)], frontier=0.0, blocked=lambda: ())
    assert first == []  # the model may still add notes at this tick
    out = voicer.add([], frontier=0.25, blocked=lambda: ())
    assert sum(1 for e in out if e.kind == "on") == 4


def test_the_probe_tells_a_melody_model_from_a_chorale_model():
    assert writes_chords(StepModel.load("folk-lstm")) is False
    assert writes_chords(StepModel.load("bach-lstm")) is True
    assert writes_chords(LineModel()) is False


def test_a_melody_model_answers_chords_with_chords_and_a_line_with_a_line():
    call = chords([48, 53, 55, 48] * 2)
    voiced = [PhraseShape.of(answer(call, seed=seed, model=LineModel())) for seed in range(3)]
    assert all(s.notes_per_onset >= 2.0 and s.max_chord >= 3 for s in voiced)
    bare = [PhraseShape.of(answer(call, {"listen.voicing": False, "listen.memory": False}, seed=seed, model=LineModel()))
            for seed in range(3)]
    assert all(s.max_chord == 1 for s in bare)  # the model alone: a line
    lines = [PhraseShape.of(answer(line(MELODY), seed=seed, model=LineModel())) for seed in range(3)]
    assert all(s.max_chord == 1 for s in lines)


def test_a_voiced_line_is_not_offered_a_note_a_fourth_time_running():
    call = [Note(i, 0.9, p + d, 80) for i, p in enumerate([71, 71, 71, 71, 74, 72]) for d in (-12, -5, 0)]
    on_id = np.arange(128)
    line_figures = Figures.of(call, on_id, as_line=True)
    fl = line_figures.line()
    fl.pitches.clear()
    fl.pitches.extend([67, 71, 71, 71])
    out = np.zeros(128)
    fl.add_bonus(out, 0, None)
    assert out[71] == 0.0  # a third repeat is not offered
    fl.pitches.extend([69, 71, 71])
    out[:] = 0.0
    fl.add_bonus(out, 0, None)
    assert out[71] > 0.0  # a second one is


def test_the_duets_line_over_a_players_chords_is_not_voiced():
    """In a duet the player brings the chords (and each of their notes gets its reaction): improv's
    line stays a line, free to move between them."""
    from improv.events import NoteOff, NoteOn
    from tests.test_duet import duet_ons, make

    engine, _, _ = make({"sampling.key": "C major"}, model=LineModel())
    events, starts = [], []
    for i, root in enumerate([48, 53, 55, 48] * 3):  # a chord a beat (0.5 s), held 0.4 s
        t = 1.0 + 0.5 * i
        starts.append(t)
        for d in (0, 4, 7):
            events += [NoteOn(t, 0, root + d, 90), NoteOff(t + 0.4, 0, root + d)]
    engine.run_until(8.0, sorted(events, key=lambda e: (e.t_s, isinstance(e, NoteOn))))
    line = [r for r in duet_ons(engine) if all(abs(r.planned_s - t) > 1e-6 for t in starts)]
    assert len(line) >= 4  # the line plays among the chords
    by_time: dict[float, int] = {}
    for r in line:
        by_time[round(r.planned_s, 6)] = by_time.get(round(r.planned_s, 6), 0) + 1
    assert max(by_time.values()) == 1  # one note at a time: no chords voiced under it


def test_in_a_minor_key_the_voices_are_its_triads_with_a_major_dominant():
    from improv.voicing import MINOR_TRIADS

    a_minor = [frozenset((9 + c) % 12 for c in pcs) for pcs, _ in MINOR_TRIADS]
    voicer = Voicer(_texture(), Key(9, "minor"), (40, 84), 4, np.random.default_rng(3))
    top_line = [76, 74, 72, 71, 69, 68, 69, 71, 72, 76]  # E D C B A G# A B C E
    out = voicer.flush(_line_events(top_line), lambda: ())
    for beats in sorted({e.beats for e in out if e.kind == "on"}):
        chord = {e.pitch % 12 for e in out if e.kind == "on" and e.beats == beats}
        assert len(chord) >= 2 and any(chord <= triad for triad in a_minor), (beats, chord)
    sharp_seven = [e for e in out if e.kind == "on" and e.pitch % 12 == 8]
    chords_with_it = {frozenset(x.pitch % 12 for x in out if x.kind == "on" and x.beats == e.beats) for e in sharp_seven}
    assert chords_with_it and all(c <= frozenset({4, 8, 11}) for c in chords_with_it)  # G# only in E major (V)
