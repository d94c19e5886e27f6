"""improv.calibration without a MIDI system: fake loopbacks (one that echoes, one that is silent,
one whose port goes away), the figures and the advice, and `--write` keeping the rest of the file."""

from __future__ import annotations

import threading
import time

import pytest

from improv.calibration import Calibration, measure
from improv.errors import ConfigError, ImprovError
from improv.settings import load_settings
from improv.settings_file import write_setting


class FakeLoop:
    """rtmidi-like MidiOut and MidiIn at once: what is sent comes back after `delay_s` (or never)."""

    def __init__(self, delay_s: float | None) -> None:
        self.delay_s = delay_s
        self.callback = None
        self.sent: list[list[int]] = []

    def ignore_types(self, **_types) -> None:
        pass

    def set_callback(self, callback) -> None:
        self.callback = callback

    def cancel_callback(self) -> None:
        self.callback = None

    def send_message(self, data) -> None:
        self.sent.append(list(data))
        if self.delay_s is not None and self.callback is not None:
            threading.Timer(self.delay_s, self.callback, args=((list(data), 0.0),)).start()


def test_measures_an_echo_and_ends_every_probe():
    loop = FakeLoop(0.003)
    result = measure(loop, loop, probes=30)
    assert len(result.round_trips_ms) == 30 and result.lost == 0
    assert result.median_ms >= 3.0  # never less than the delay (a timer only fires late)
    ons = [m for m in loop.sent if m[0] == 0x90]
    offs = [m for m in loop.sent if m[0] == 0x80]
    assert len(ons) == len(offs) == 30
    assert len({m[2] for m in ons}) == 30  # each probe told apart by its velocity


def test_nothing_coming_back_is_one_line_saying_what_to_connect():
    loop = FakeLoop(None)
    start = time.perf_counter()
    with pytest.raises(ImprovError, match="nothing came back.*connect it to improv's input") as err:
        measure(loop, loop, probes=300)
    assert err.value.exit_code == 1 and "\n" not in str(err.value)
    assert time.perf_counter() - start < 5.0  # gave up after a few probes, not 300
    assert [m[0] for m in loop.sent].count(0x80) == [m[0] for m in loop.sent].count(0x90)


def test_a_port_that_goes_away_is_one_line():
    loop = FakeLoop(None)
    with pytest.raises(ImprovError, match="went away"):
        measure(loop, loop, probes=50, present=lambda: False)


def test_figures_and_advice():
    result = Calibration(tuple(float(x) for x in [2.0] * 98 + [2.5, 9.0]), sent=101)
    assert result.lost == 1
    assert result.median_ms == 2.0 and result.latency_ms == 2.0
    assert 2.0 < result.p99_ms <= 9.0
    assert "set time.latency_ms = 2" in result.report()
    one_hop = Calibration(result.round_trips_ms, sent=101, hops=1)  # `--loopback`: out to in inside the system
    assert one_hop.latency_ms == 4.0 and "twice" in one_hop.report()


def test_write_edits_the_line_in_place_keeping_comments(tmp_path):
    path = tmp_path / "improv.toml"
    path.write_text('# mine\n[mode]\nmode = "duet"  # along\n\n[time]\nbpm = 120.0\nlatency_ms = 1.0  # old\n'
                    "\n[output]\nchannel = 2\n")
    write_setting(path, "time", "latency_ms", 2.7)
    assert path.read_text() == ('# mine\n[mode]\nmode = "duet"  # along\n\n[time]\nbpm = 120.0\n'
                                "latency_ms = 2.7  # old\n\n[output]\nchannel = 2\n")


def test_write_adds_to_the_time_table_or_appends_one(tmp_path):
    with_time = tmp_path / "a.toml"
    with_time.write_text("[time]\nbpm = 90 # slow\n\n[mode]\nmode = \"call\"")
    write_setting(with_time, "time", "latency_ms", -1.5)
    assert with_time.read_text() == "[time]\nbpm = 90 # slow\nlatency_ms = -1.5\n\n[mode]\nmode = \"call\"\n"
    without = tmp_path / "b.toml"
    without.write_text("[output]\nchannel = 3\n")
    write_setting(without, "time", "latency_ms", 3)
    settings = load_settings(without)
    assert settings.time.latency_ms == 3.0 and settings.output.channel == 3
    new = tmp_path / "c.toml"
    write_setting(new, "time", "latency_ms", 0.6)
    assert new.read_text() == "[time]\nlatency_ms = 0.6\n"


def test_write_leaves_a_broken_file_alone(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[time\nbpm = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        write_setting(path, "time", "latency_ms", 1.0)
    assert path.read_text() == "[time\nbpm = \n"
