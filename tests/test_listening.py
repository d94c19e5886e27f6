"""Answers that follow the call (issue 14): texture, register, density, dynamics, through the
engine on a ManualClock; the session memory in the live path; `--memory` and `demo --call` at
the command line.

At 120 bpm one beat is 0.5 s; the beat clock starts at t = 0 (beat 0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from improv.clock import ManualClock
from improv.engine import Engine
from improv.events import NoteOff, NoteOn
from improv.phrase_shape import PhraseShape
from improv.settings import load_settings
from improv.tokens import Note
from tests.fakes import FakeMidiOut, FakeModel

SPB = 0.5
CALL_START = 4.0  # beats: a bar line


def answer(notes, overrides=None, seed=3, model=None):
    """The notes improv answered `notes` (beats from the call's start) with, beats from the same origin."""
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    s = load_settings(None, {"time.bpm": 120.0, "sampling.seed": seed, "mode.response_length": "call",
                             **(overrides or {})})
    engine = Engine(model or FakeModel(), s, clock, port)
    events = []
    for n in notes:
        t = (CALL_START + n.onset_beats) * SPB
        events += [NoteOn(t, 0, n.pitch, n.velocity), NoteOff(t + n.duration_beats * SPB, 0, n.pitch)]
    end = max(n.onset_beats + n.duration_beats for n in notes)
    engine.run_until((CALL_START + 2 * end + 8) * SPB, sorted(events, key=lambda e: (e.t_s, isinstance(e, NoteOn))))
    engine.shutdown()
    from improv.pairing import pair_messages

    played, hanging = pair_messages(port.sent, restrike_ends=False)
    assert not hanging
    call_end = CALL_START + end
    return [Note(n.start / SPB - CALL_START, (n.end - n.start) / SPB, n.pitch, n.velocity)
            for n in played if n.start / SPB >= call_end]


def line(pitches, step=0.5, length=0.45, velocity=90):
    return [Note(i * step, length, p, velocity) for i, p in enumerate(pitches)]


def chords(roots, step=1.0):
    return [Note(i * step, 0.9 * step, r + d, 90) for i, r in enumerate(roots) for d in (0, 4, 7)]


MELODY = (60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 71, 67, 65, 64)


def test_a_single_line_is_answered_by_a_single_line_and_chords_by_chords():
    for seed in range(4):
        a = PhraseShape.of(answer(line(MELODY), seed=seed))
        assert a is not None and a.max_chord == 1 and a.notes_per_onset == 1.0
    chordal = [PhraseShape.of(answer(chords([48, 53, 55, 48] * 2), seed=seed)) for seed in range(4)]
    assert max(s.max_chord for s in chordal) >= 2  # chords may come back as chords
    free = [PhraseShape.of(answer(line(MELODY), {"sampling.max_polyphony": 4}, seed=seed)) for seed in range(4)]
    assert max(s.max_chord for s in free) > 1  # the setting, when given, wins (the fake model plays chords)


def test_the_answer_stays_near_the_calls_register():
    high = [p + 19 for p in MELODY]  # G4..G5
    for seed in range(4):
        a = answer(line(high), seed=seed)
        median = float(np.median([n.pitch for n in a]))
        assert abs(median - np.median(high)) <= 7 and min(n.pitch for n in a) >= min(high) - 9
    free = [answer(line(high), {"listen.register": False, "listen.memory": False}, seed=seed) for seed in range(4)]
    assert min(min(n.pitch for n in a) for a in free) < min(high) - 9  # without the rule the fake wanders


def _density_error(notes, overrides):
    errors = []
    for seed in range(6):
        a = answer(notes, overrides, seed=seed)
        c, s = PhraseShape.of(notes), PhraseShape.of(a, span_beats=PhraseShape.of(notes).notes_per_beat and None)
        errors.append(abs(math.log2(s.notes_per_beat / c.notes_per_beat)) if s else 9.0)
    return float(np.mean(errors))


def test_the_answer_keeps_near_the_calls_density():
    sparse = line(MELODY[:8], step=1.0, length=0.9)  # quarter notes
    dense = line(MELODY, step=0.25, length=0.2)  # 16ths
    for notes in (sparse, dense):
        assert _density_error(notes, {}) < 0.6
    assert _density_error(sparse, {"listen.density": False, "listen.memory": False}) > \
        _density_error(sparse, {}) + 0.3  # the fake model alone plays far denser than quarter notes


class HoldingModel(FakeModel):
    """Would rather hold a note than end it (no table: only the fixed bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.table[:] = 0.0
        self.bias[[i for i, name in enumerate(self.vocab.names) if name.startswith("OFF_")]] = 0.0


def test_a_line_behind_the_calls_density_ends_its_note_to_start_the_next():
    dense = line(MELODY, step=0.25, length=0.2)
    errors = []
    for seed in range(6):
        a = PhraseShape.of(answer(dense, {"listen.memory": False}, seed=seed, model=HoldingModel()))
        errors.append(abs(math.log2(a.notes_per_beat / PhraseShape.of(dense).notes_per_beat)))
    assert np.mean(errors) < 2.0  # without the nudge to end a note when none may start: 3.4 (held to the end)


def test_velocities_follow_the_calls_level_and_accents():
    accented = [Note(n.onset_beats, n.duration_beats, n.pitch, 110 if n.onset_beats % 2 == 0 else 45)
                for n in line(MELODY, step=0.5)]
    a = answer(accented, {"sampling.max_polyphony": 1})
    on_the_beat = [n.velocity for n in a if (n.onset_beats + CALL_START) % 2 == 0]
    off_it = [n.velocity for n in a if (n.onset_beats * 4) % 4 == 2]
    assert on_the_beat and off_it and np.mean(on_the_beat) > np.mean(off_it) + 30
    quiet = answer(line(MELODY, velocity=35))
    assert all(25 <= n.velocity <= 45 for n in quiet)
    flat = answer(accented, {"sampling.max_polyphony": 1, "listen.dynamics": False})
    assert len({n.velocity for n in flat}) == 1  # the old rule: one velocity, the call's mean


def test_the_session_memory_learns_what_sounds_and_the_blend_learns_from_the_player():
    clock = ManualClock(0.0)
    engine = Engine(FakeModel(), load_settings(None, {"time.bpm": 120.0, "sampling.seed": 1}), clock,
                    FakeMidiOut(clock))
    memory = engine.improviser.memory
    events = [e for n in line(MELODY) for e in (NoteOn((CALL_START + n.onset_beats) * SPB, 0, n.pitch, 90),
                                                NoteOff((CALL_START + n.onset_beats + n.duration_beats) * SPB, 0, n.pitch))]
    engine.run_until(CALL_START * SPB + 4.0, events)
    heard = memory.tokens_seen
    assert heard >= 3 * len(MELODY)  # each note: its shift, its ON, its OFF at least
    engine.run_until(30.0)
    assert memory.tokens_seen > heard  # improv's own answer, once it sounded
    assert engine.improviser.following is not None and 0.0 < engine.improviser.following < 1.0


def test_the_follow_cc_fixes_the_memorys_weight():
    from improv.events import Control

    clock = ManualClock(0.0)
    engine = Engine(FakeModel(), load_settings(None, {"time.bpm": 120.0}), clock, FakeMidiOut(clock))
    engine.run_until(1.0, [Control(0.5, 0, 24, 127)])
    assert engine.improviser.settings.listen.follow == pytest.approx(0.9)
    assert engine.improviser.following == pytest.approx(0.9)
    engine.run_until(2.0, [Control(1.5, 0, 24, 0)])
    assert engine.improviser.following == 0.0


# --------------------------------------------------------------------------- the command line


def _one_line_exit_2(args, monkeypatch) -> str:
    from improv.cli import app

    monkeypatch.delenv("IMPROV_VERBOSE", raising=False)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("improv: "), result.output
    return lines[0]


def test_improv_run_rejects_a_bad_memory_file_before_opening_a_port(tiny_model_dir, tmp_path, monkeypatch):
    import improv.ports

    opened = []
    monkeypatch.setattr(improv.ports, "choose_backend", lambda name: "fake")
    monkeypatch.setattr(improv.ports, "open_port", lambda *a: opened.append(a) or pytest.fail("a port opened"))
    bad = tmp_path / "me.json"
    bad.write_text('{"format": "improv-session-memory", "format_version": 1, "vocab')
    line = _one_line_exit_2(["run", "--model", str(tiny_model_dir), "--memory", str(bad), "--quiet"], monkeypatch)
    assert str(bad) in line and "corrupt or truncated" in line and opened == []


def test_demo_answers_a_midi_file(tmp_path):
    from improv.cli import app
    from improv.midifile import read_midi_tracks, write_midi

    call = write_midi(tmp_path / "call.mid", {"drums": [], "tune": line(MELODY)}, bpm=90.0)
    out, png = tmp_path / "out.mid", tmp_path / "out.png"
    result = CliRunner().invoke(app, ["demo", "--call", str(call), "--out", str(out), "--png", str(png)])
    assert result.exit_code == 0, result.output
    tracks = read_midi_tracks(out)
    assert [n.pitch for n in tracks["player"]] == list(MELODY) and tracks["improv"]
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "90 bpm" in result.output  # the file's tempo


@pytest.mark.parametrize("content, words", [(None, "no such file"), (b"MThd garbage", "cannot read it as a MIDI file"),
                                            ("EMPTY", "has no notes")])
def test_demo_rejects_a_bad_call_file_in_one_line(tmp_path, monkeypatch, content, words):
    from improv.midifile import write_midi

    path = tmp_path / "call.mid"
    if content == "EMPTY":
        write_midi(path, {"silence": []}, bpm=100.0)
    elif content is not None:
        path.write_bytes(content)
    line = _one_line_exit_2(["demo", "--call", str(path), "--out", str(tmp_path / "o.mid")], monkeypatch)
    assert str(path) in line and words in line
