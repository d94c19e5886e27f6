"""improv.settings: frozen dataclasses from TOML, and one-line errors naming file, key and fix."""

from __future__ import annotations

import dataclasses

import pytest

from improv.errors import ConfigError
from improv.settings import ModeSettings, Settings, load_settings


def write(tmp_path, text):
    path = tmp_path / "improv.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    s = load_settings()
    assert s == Settings()
    assert s.mode.mode == "call" and s.mode.silence_beats == 1.0
    assert s.cc.temperature == 21 and s.output.channel == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mode.mode = "duet"  # type: ignore[misc]


def test_toml_file_and_overrides(tmp_path):
    path = write(tmp_path, """
[mode]
mode = "duet"
response_length = "2 bars"
end_cc = 85
[sampling]
temperature = 1        # an int is fine for a float
key = "A minor"
seed = 7
[output]
input_channel = "omni"
[cc]
mode = "off"
""")
    s = load_settings(path, {"sampling.temperature": 0.5, "time": {"bpm": 90}})
    assert s.mode.mode == "duet" and s.mode.end_cc == 85
    assert s.mode.fixed_length_beats == 8.0
    assert s.sampling.temperature == 0.5 and s.sampling.key == "A minor" and s.sampling.seed == 7
    assert s.time.bpm == 90.0
    assert s.output.input_channel is None and s.cc.mode is None


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "[sampling]\ntemprature = 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert str(path) in message and "sampling.temprature" in message and "'temperature'" in message
    assert "\n" not in message


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[sampler\].*'sampling'"):
        load_settings(write(tmp_path, "[sampler]\ntemperature = 0.5\n"))


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"improv.toml: time.bpm must be a number, not 'fast'"):
        load_settings(write(tmp_path, '[time]\nbpm = "fast"\n'))
    with pytest.raises(ConfigError, match=r"output.thru must be true or false"):
        load_settings(write(tmp_path, "[output]\nthru = 1\n"))
    with pytest.raises(ConfigError, match=r'mode.end_cc must be an integer or "off"'):
        load_settings(write(tmp_path, "[mode]\nend_cc = 1.5\n"))


def test_bad_values_name_the_key_and_fix(tmp_path):
    cases = {
        '[mode]\nmode = "solo"\n': "mode.mode",
        '[mode]\nresponse_length = "3 weeks"\n': "mode.response_length",
        "[sampling]\ntop_p = 1.5\n": "sampling.top_p",
        '[sampling]\nkey = "H minor"\n': "key 'H minor'",
        "[output]\nchannel = 17\n": "output.channel",
        '[time]\nclock = "midi"\nsend_clock = true\n': "time.send_clock",
        "[cc]\ntemperature = 200\n": "cc.temperature",
    }
    for text, key in cases.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
            load_settings(write(tmp_path, text))
        assert str(err.value).startswith(str(tmp_path))


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[mode\n"))
    with pytest.raises(ConfigError, match="must be a table"):
        load_settings(write(tmp_path, "mode = 3\n"))


def test_response_length_in_beats():
    assert ModeSettings().response_beats(5.2) == 6.0  # as long as the call, whole beats
    assert ModeSettings(response_start="bar").response_beats(5.2) == 8.0  # whole bars
    assert ModeSettings(response_start="bar").response_beats(0.5) == 4.0
    assert ModeSettings(response_length="8 beats").response_beats(1.0) == 8.0
    assert ModeSettings(response_length="2 bars", beats_per_bar=3).response_beats(1.0) == 6.0
    assert ModeSettings(max_response_beats=16.0).response_beats(40.0) == 16.0
    assert ModeSettings(response_start="bar").grid_beats == 4.0
