"""`improv demo`: the real engine on a simulated clock, a piano roll, and demo.mid."""

from __future__ import annotations

import time

import mido
import pytest
from typer.testing import CliRunner

from improv.cli import app
from improv.demo import COUNT_IN_BEATS, DemoOptions, run_demo
from tests.fakes import FakeModel


def test_run_demo_with_a_fake_model(tmp_path, capsys):
    result = run_demo(FakeModel(), DemoOptions(out=tmp_path / "demo.mid", seed=1))
    assert result.response, "improv answered"
    assert result.first_note_grid_error_ms == pytest.approx(0.0, abs=1e-6)
    call_end = max(n.onset_beats + n.duration_beats for n in result.call)
    assert min(n.onset_beats for n in result.response) > call_end
    assert (min(n.onset_beats for n in result.response) + COUNT_IN_BEATS) % 1.0 == pytest.approx(0.0)
    midi = mido.MidiFile(str(result.midi_path))
    names = [t.name for t in midi.tracks]
    assert "player" in names and "improv" in names
    out = capsys.readouterr().out
    assert "wrote" in out and "answer" in out


def test_same_seed_same_answer(tmp_path):
    a = run_demo(FakeModel(), DemoOptions(out=None, seed=5), show=False)
    b = run_demo(FakeModel(), DemoOptions(out=None, seed=5), show=False)
    assert a.response == b.response


def test_duet_demo(tmp_path):
    result = run_demo(FakeModel(), DemoOptions(out=tmp_path / "duet.mid", mode="duet"), show=False)
    assert result.response
    assert min(n.onset_beats for n in result.response) < max(n.onset_beats for n in result.call)


def test_improv_demo_command_exits_0_and_writes_demo_mid(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["demo", "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 10.0
    assert (tmp_path / "demo.mid").is_file()
    assert "answer" in result.output


def test_improv_demo_without_a_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPROV_MODELS", str(tmp_path))
    result = CliRunner().invoke(app, ["demo", "--model", "nope", "--out", str(tmp_path / "x.mid")])
    assert result.exit_code == 2
    assert "no model at nope" in result.output
