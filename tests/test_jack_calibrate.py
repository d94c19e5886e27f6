"""`improv calibrate` over a private JACK server: a loopback of known added delay (the harness's
jack_delay.c, a whole number of periods) is measured within 0.2 ms; nothing connected is one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from improv.cli import app

pytestmark = [pytest.mark.jack, pytest.mark.timeout(120)]

rtmidi = pytest.importorskip("rtmidi")
from benchmarks.harness.clients import JackDelay, Player  # noqa: E402

DELAY_PERIODS = 4


def _calibrate(*args: str):
    return CliRunner().invoke(app, ["calibrate", "--backend", "jack", *args])


def _median_ms(output: str) -> float:
    return float(output.split("round trip median ")[1].split(" ms")[0])


def test_a_known_added_delay_is_measured_within_0_2_ms(jack_server, tmp_path):
    direct = _calibrate("--loopback", "--probes", "300")
    assert direct.exit_code == 0, direct.output
    frames = DELAY_PERIODS * round(jack_server.period_s * 48000)
    delay = JackDelay(jack_server.env, frames)
    try:
        settings = tmp_path / "improv.toml"
        settings.write_text("# mine\n[time]\nbpm = 120.0  # the band\n")
        delayed = _calibrate("--in", delay.outlet, "--out", delay.inlet, "--probes", "300",
                             "--write", str(settings))
    finally:
        delay.close()
    assert delayed.exit_code == 0, delayed.output
    added_ms = _median_ms(delayed.output) - _median_ms(direct.output)
    assert added_ms == pytest.approx(frames / 48000 * 1000, abs=0.2), (direct.output, delayed.output,
                                                                      jack_server.xruns())
    assert "set time.latency_ms = " in delayed.output
    text = settings.read_text()
    assert text.startswith("# mine\n[time]\nbpm = 120.0  # the band\nlatency_ms = ")


def test_nothing_connected_is_one_line_exit_1(jack_server):
    silent = Player("silent")  # a source that sends nothing; the probes go to a delay wired to nowhere
    dead_end = JackDelay(jack_server.env, 64, client="dead-end")
    try:
        result = _calibrate("--in", silent.port, "--out", dead_end.inlet, "--probes", "50")
    finally:
        dead_end.close()
        silent.close()
    assert result.exit_code == 1, result.output
    assert "nothing came back" in result.output and "connect" in result.output
    assert result.output.count("\n") == 1


def test_no_loopback_named_is_one_line_exit_1():
    result = CliRunner().invoke(app, ["calibrate"])
    assert result.exit_code == 1
    assert "needs a loopback" in result.output and "--loopback" in result.output
