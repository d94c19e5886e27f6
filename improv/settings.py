"""Settings: frozen dataclasses, one per concern, units in the names; built from a TOML file.

Example ``improv.toml`` (every key optional; these are the defaults)::

    [mode]
    mode = "call"             # "call" (answer each phrase) | "duet" (play along)
    silence_beats = 1.0       # a phrase ends after this much silence with no key held
    response_start = "beat"   # the answer starts on the next "beat" | "bar"
    response_length = "call"  # "call" (as long as the call) | "8 beats" | "2 bars"
    beats_per_bar = 4
    overlap = false           # keep answering when the player plays again
    end_cc = "off"            # a CC number whose press (value >= 64) ends the phrase at once
    duet_horizon_beats = 0.5  # duet: how far ahead notes are planned (re-planned on every note)
    duet_react = true         # duet: answer each note at once with one the model picks to sound
                              # with it (0.8 x the player's velocity; the duet's line ends it)
    max_response_beats = 32.0

    [sampling]
    temperature = 0.9
    top_p = 0.95
    top_k = 0                 # 0: off
    pitch_lo = 36
    pitch_hi = 96
    max_polyphony = "call"     # "call": a single line answered by a single line, chords by chords (at most 4); or 1..16
    key = "auto"              # "auto" (detected from the calls) | "off" | a key: "A minor", "F#m"
    seed = "off"              # an integer makes the answers repeatable

    [time]
    bpm = 100.0
    clock = "internal"        # "internal" | "midi" (follow incoming MIDI clock)
    send_clock = false        # send 24-ppqn clock + start/stop as master (internal clock only)
    metronome = false
    grid_anchor = "call"      # "call": each call's first note is a bar line of the answer's grid
                              # "clock": the internal clock's own grid (from start-up); with a
                              # metronome, clock out or MIDI clock the grid is always the clock's
    metronome_channel = 10    # 1..16, as printed on the gear (10 = GM drums)
    metronome_accent_note = 76
    metronome_note = 77
    metronome_velocity = 100
    latency_ms = 0.0          # send what improv plans (answers, the duet's line, metronome, clock
                              # out) this much early, -50..50; measure it with `improv calibrate`
    keep_warm_ms = 0.0        # while idle, a scratch model step this often (e.g. 1; 0 = off), so the
                              # first step of a reaction finds the CPU awake: ~20-30 % of a core at 1 ms

    [output]
    channel = 1               # 1..16: the channel improv plays on
    thru = false              # echo the player's notes to the output
    input_channel = "omni"    # 1..16 or "omni": which input channel is the player

    [cc]                      # controller numbers (a knob's CC) or "off"
    temperature = 21          # 0..127 -> temperature 0.1..2.0
    mode = 22                 # < 64 call, >= 64 duet
    response_length = 23      # 0..127 -> call, 1, 2, 4, 8 bars
    follow = 24               # "follow the player": 0 the model alone .. 127 mostly the session memory
    model = 25                # which of models.paths plays: 0..127 spread over them (Program Change
                              # N selects the model at position N, 0 = the first, on any setup)

    [models]                  # several models preloaded (--models a,b,c); the first plays first
    paths = []                # model folders or names under models/, e.g. ["bach-lstm", "bach-wavenet"]

    [osc]                     # OSC control (--osc PORT): every CC setting, the model, mode and panic
    port = "off"              # a UDP port to listen on
    host = "127.0.0.1"        # loopback: this machine only; "0.0.0.0" opens it to the network
    target = "off"            # "HOST:PORT": improv's state (mode, model, key, tempo, answers) is sent there

    [listen]                  # the session memory: what the player plays, learned as it is played
    memory = true
    order = 4                 # contexts of up to order - 1 tokens
    follow = "auto"           # "auto": the mix adapts to whichever predicts the player better; or 0..1
    half_life_tokens = 4000.0 # forgetting: a count halves after this many tokens (0: never)
    own_weight = 0.3          # improv's own notes count this much (the player's count 1)
    register = true           # answers follow the call: its register,
    density = true            # its notes per beat,
    dynamics = true           # its level and accents (texture: sampling.max_polyphony = "call")
    figures = true            # and its melodic figures, transposed and re-rhythmed
    voicing = true            # chords under a line model's answer where the call has chords

Channels in settings are 1-based (as on the gear); events and `Planned` are 0-based.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from improv.errors import ConfigError

OFF = "off"
_LENGTH_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(beat|beats|bar|bars)\s*$")
MAX_KEEP_WARM_MS = 20.0  # time.keep_warm_ms: slower than this the CPU sleeps between steps anyway
MAX_LATENCY_MS = 50.0  # time.latency_ms: plans reach the scheduler 100 ms ahead, the duet's cut 5+ ms
RESPONSE_LENGTHS = ("call", "1 bar", "2 bars", "4 bars", "8 bars")  # what the length CC selects


def _check(ok: bool, key: str, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {fix}")


@dataclass(frozen=True)
class ModeSettings:
    mode: str = "call"
    silence_beats: float = 1.0
    response_start: str = "beat"
    response_length: str = "call"
    beats_per_bar: int = 4
    overlap: bool = False
    end_cc: int | None = None
    duet_horizon_beats: float = 0.5
    duet_react: bool = True  # duet: each player note-on gets one note at once (improv.duet)
    max_response_beats: float = 32.0

    def __post_init__(self) -> None:
        _check(self.mode in ("call", "duet"), "mode.mode", 'use "call" or "duet"')
        _check(self.silence_beats > 0, "mode.silence_beats", "use a number of beats > 0, e.g. 1.0")
        _check(self.response_start in ("beat", "bar"), "mode.response_start", 'use "beat" or "bar"')
        _check(1 <= self.beats_per_bar <= 32, "mode.beats_per_bar", "use 1..32, e.g. 4")
        _check(self.end_cc is None or 0 <= self.end_cc <= 127, "mode.end_cc", 'use 0..127 or "off"')
        _check(self.duet_horizon_beats > 0, "mode.duet_horizon_beats", "use a number of beats > 0")
        _check(self.max_response_beats > 0, "mode.max_response_beats", "use a number of beats > 0")
        self.fixed_length_beats  # validates response_length

    @property
    def grid_beats(self) -> float:
        """Where answers may start: every beat, or every bar."""
        return float(self.beats_per_bar) if self.response_start == "bar" else 1.0

    @property
    def fixed_length_beats(self) -> float | None:
        """The set answer length in beats, or None for "as long as the call"."""
        if self.response_length == "call":
            return None
        match = _LENGTH_RE.match(self.response_length)
        _check(match is not None and float(match.group(1)) > 0, "mode.response_length",
               'use "call", "8 beats" or "2 bars"')
        n = float(match.group(1))
        return n * self.beats_per_bar if match.group(2).startswith("bar") else n

    def response_beats(self, call_beats: float) -> float:
        """How long an answer to a call of `call_beats` lasts: whole grid units, capped."""
        fixed = self.fixed_length_beats
        if fixed is not None:
            return min(fixed, self.max_response_beats)
        grid = self.grid_beats
        units = max(1, -int(-(call_beats - 1e-6) // grid))
        return min(units * grid, self.max_response_beats)


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = 0
    pitch_lo: int = 36
    pitch_hi: int = 96
    max_polyphony: int | None = None  # None ("call"): follow the call's texture, at most FOLLOW_POLYPHONY
    key: str = "auto"
    seed: int | None = None

    def __post_init__(self) -> None:
        _check(0 < self.temperature <= 10, "sampling.temperature", "use a number in (0, 10], e.g. 0.9")
        _check(0 < self.top_p <= 1, "sampling.top_p", "use a number in (0, 1], e.g. 0.95")
        _check(self.top_k >= 0, "sampling.top_k", "use 0 (off) or a positive integer")
        _check(0 <= self.pitch_lo <= self.pitch_hi <= 127, "sampling.pitch_lo/pitch_hi",
               "use MIDI pitches 0..127 with pitch_lo <= pitch_hi")
        _check(self.max_polyphony is None or 1 <= self.max_polyphony <= 16, "sampling.max_polyphony",
               'use "call" or 1..16')
        if self.key not in ("auto", OFF):
            from improv.keys import parse_key

            parse_key(self.key)


@dataclass(frozen=True)
class TimeSettings:
    bpm: float = 100.0
    clock: str = "internal"
    send_clock: bool = False
    metronome: bool = False
    metronome_channel: int = 10  # 1..16
    metronome_accent_note: int = 76
    metronome_note: int = 77
    metronome_velocity: int = 100
    grid_anchor: str = "call"
    latency_ms: float = 0.0  # planned sends go out this much early (negative: late); reactions cannot
    keep_warm_ms: float = 0.0  # a scratch step this often while idle (0 = off)

    def __post_init__(self) -> None:
        _check(20 <= self.bpm <= 400, "time.bpm", "use a tempo in 20..400 bpm")
        _check(-MAX_LATENCY_MS <= self.latency_ms <= MAX_LATENCY_MS, "time.latency_ms",
               f"use -{MAX_LATENCY_MS:g}..{MAX_LATENCY_MS:g} ms (measure it with `improv calibrate`)")
        _check(self.grid_anchor in ("call", "clock"), "time.grid_anchor", 'use "call" or "clock"')
        _check(self.keep_warm_ms == 0 or 0.2 <= self.keep_warm_ms <= MAX_KEEP_WARM_MS, "time.keep_warm_ms",
               f"use 0 (off) or 0.2..{MAX_KEEP_WARM_MS:g} ms, e.g. 1")
        _check(self.clock in ("internal", "midi"), "time.clock", 'use "internal" or "midi"')
        _check(not (self.send_clock and self.clock == "midi"), "time.send_clock",
               'send clock only with clock = "internal" (improv cannot be master and follower)')
        _check(1 <= self.metronome_channel <= 16, "time.metronome_channel", "use 1..16")
        for name in ("metronome_accent_note", "metronome_note", "metronome_velocity"):
            _check(0 <= getattr(self, name) <= 127, f"time.{name}", "use 0..127")


    @property
    def grid_follows_call(self) -> bool:
        """Whether each call's first note sets the beat grid: the player hears no other beat
        (no metronome, no clock out, no MIDI clock), so the grid is where the player put it."""
        return self.grid_anchor == "call" and not (self.metronome or self.send_clock or self.clock == "midi")


@dataclass(frozen=True)
class OutputSettings:
    channel: int = 1  # 1..16
    thru: bool = False
    input_channel: int | None = None  # 1..16; None: omni

    def listens_to(self, channel: int) -> bool:
        """Whether events on this (0-based) channel are the player's (`input_channel`)."""
        return self.input_channel is None or channel == self.input_channel - 1

    def __post_init__(self) -> None:
        _check(1 <= self.channel <= 16, "output.channel", "use 1..16")
        _check(self.input_channel is None or 1 <= self.input_channel <= 16,
               "output.input_channel", 'use 1..16 or "omni"')


@dataclass(frozen=True)
class CCMap:
    temperature: int | None = 21
    mode: int | None = 22
    response_length: int | None = 23
    follow: int | None = 24
    model: int | None = 25

    def __post_init__(self) -> None:
        for name in ("temperature", "mode", "response_length", "follow", "model"):
            value = getattr(self, name)
            _check(value is None or 0 <= value <= 127, f"cc.{name}", 'use a CC number 0..127 or "off"')


@dataclass(frozen=True)
class ListenSettings:
    memory: bool = True  # learn this session's music as it is played (improv.memory)
    order: int = 4  # the memory's longest context is order - 1 tokens
    follow: float | None = None  # None ("auto"): the blend adapts; else the memory's weight 0..1
    half_life_tokens: float = 4000.0  # the memory forgets: half of a count is left after this many tokens (0: never)
    own_weight: float = 0.3  # improv's own notes count this much in the memory (the player's: 1)
    register: bool = True  # answers centred on the call's register (within sampling.pitch_lo..hi)
    density: bool = True  # answers near the call's notes per beat
    dynamics: bool = True  # answers at the call's level, with its accents by position in the bar
    figures: bool = True  # answers take up the call's melodic figures (improv.figures)
    voicing: bool = True  # chords under a line where the call has chords (improv.voicing; max_polyphony "call")

    def __post_init__(self) -> None:
        _check(1 <= self.order <= 8, "listen.order", "use 1..8")
        _check(self.follow is None or 0.0 <= self.follow <= 1.0, "listen.follow", 'use "auto" or 0..1')
        _check(self.half_life_tokens >= 0, "listen.half_life_tokens", "use 0 (never forget) or more tokens")
        _check(0.0 <= self.own_weight <= 1.0, "listen.own_weight", "use 0..1")


@dataclass(frozen=True)
class ModelsSettings:
    paths: tuple[str, ...] = ()  # preloaded for live switching; empty: --model alone

    def __post_init__(self) -> None:
        _check(len(self.paths) <= 128, "models.paths", "list at most 128 models (Program Change 0..127)")
        _check(all(p.strip() for p in self.paths), "models.paths", "give each model as a folder or a name")


@dataclass(frozen=True)
class OscSettings:
    port: int | None = None  # None: no OSC
    host: str = "127.0.0.1"
    target: str | None = None  # "HOST:PORT" improv's state goes to

    def __post_init__(self) -> None:
        _check(self.port is None or 0 <= self.port <= 65535, "osc.port", 'use a UDP port 1..65535 (0: any free one) or "off"')
        _check(bool(self.host.strip()), "osc.host", 'use an address such as "127.0.0.1"')
        if self.target is not None:
            self.target_address  # validates it

    @property
    def target_address(self) -> tuple[str, int] | None:
        if self.target is None:
            return None
        host, sep, port = self.target.rpartition(":")
        _check(bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535), "osc.target",
               'use "HOST:PORT", e.g. "127.0.0.1:9001"')
        return host, int(port)


@dataclass(frozen=True)
class Settings:
    mode: ModeSettings = field(default_factory=ModeSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    time: TimeSettings = field(default_factory=TimeSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    cc: CCMap = field(default_factory=CCMap)
    listen: ListenSettings = field(default_factory=ListenSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    osc: OscSettings = field(default_factory=OscSettings)


SECTIONS: dict[str, type] = {  # TOML table -> dataclass; the same names as Settings' fields
    "mode": ModeSettings, "sampling": SamplingSettings, "time": TimeSettings,
    "output": OutputSettings, "cc": CCMap, "listen": ListenSettings, "models": ModelsSettings,
    "osc": OscSettings,
}


def load_settings(toml_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults <- the TOML file <- `overrides` ({"sampling.temperature": 0.8} or nested dicts).

    Unknown keys, wrong types and bad values raise ConfigError naming the file, the key and the fix.
    """
    where = str(toml_path) if toml_path is not None else "settings"
    data: dict[str, dict[str, Any]] = {}
    if toml_path is not None:
        try:
            with open(toml_path, "rb") as f:
                _merge(data, tomllib.load(f), where)
        except OSError as err:
            raise ConfigError(f"{where}: cannot read it ({err.strerror}); check the path") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{where}: not valid TOML ({err}); fix the syntax") from None
    _merge(data, dict(overrides or {}), "override")
    try:
        return Settings(**{name: _build(SECTIONS[name], values, where) for name, values in data.items()})
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _merge(data: dict, source: Mapping[str, Any], where: str) -> None:
    for key, value in source.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}]{_suggest(section, SECTIONS)}")
        if name:
            data.setdefault(section, {})[name] = value
        elif isinstance(value, Mapping):
            data.setdefault(section, {}).update(value)
        else:
            raise ConfigError(f"{where}: {section} must be a table, e.g. [{section}]")


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            section = _section_of(cls)
            raise ConfigError(f"unknown key {section}.{key}{_suggest(key, hints)}")
    kwargs = {key: _coerce(f"{_section_of(cls)}.{key}", hints[key], value) for key, value in values.items()}
    return cls(**kwargs)


def _section_of(cls: type) -> str:
    return next(name for name, c in SECTIONS.items() if c is cls)


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Check a TOML value against the field's type; "off"/"omni" stand for None (TOML has no null)."""
    if typing.get_origin(hint) is tuple:  # a list of strings
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f'{key} must be a list of strings, e.g. ["a", "b"], not {value!r}')
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if optional and (value is None or (isinstance(value, str) and value.lower() in (OFF, "omni", "none", "auto", "call"))):
        return None
    if base is bool and isinstance(value, bool):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, str):
        return value
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[base]
    extra = ' or "off"' if optional else ""
    raise ConfigError(f"{key} must be {kind}{extra}, not {value!r}")
