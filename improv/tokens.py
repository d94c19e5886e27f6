"""Music <-> token ids. The vocabulary is shared by training/ and the daemon, and travels with
every checkpoint and exported model (as JSON, `Vocabulary.to_dict`).

Two schemes:

* ``event`` (default, streamable, polyphonic): ``SHIFT_k`` advances time by k ticks, where a tick
  is ``1 / ticks_per_beat`` of a beat, so the same tokens play at any tempo; ``ON_p`` / ``OFF_p``
  start and stop MIDI pitch p (chords and overlapping notes are just several ONs before the next
  SHIFT); ``VEL_b`` (only with ``velocity_bins > 0``) sets the velocity bin for the following ONs.
  A live event is encoded the moment it arrives (`improv.stream_encoder`): the time since the
  previous event becomes SHIFTs, the event itself one token. No token waits for a note-off.
  Within one tick, OFFs come before ONs, and pitches ascend (``chord_order = "up"``) or descend
  (``"down"``: a chord's top note first, so a model decides the melody before the harmony under it).
* ``grid`` (the Bach-chorale / JSB 16th-note benchmark): every grid step writes one token per voice,
  highest voice first; ``REST`` is silence (id 0) and ``P_p`` pitch p. With pitches 36..81 this is
  exactly the 47-class encoding of the Hands-On ML exercise. Not streamable; offline only.

Rare tokens: `Vocabulary.pruned` drops ON/OFF/VEL (event) or P (grid) tokens seen fewer than
``min_count`` times. Encoding then falls back, in this order (see `Vocabulary.fallback`):
a pitch moves by octaves to the nearest kept pitch (ON and OFF alike, so notes still pair up);
a velocity bin moves to the nearest kept bin; anything left becomes ``UNK`` (event) or the
nearest kept pitch (grid). SHIFT tokens and specials are never pruned: time must stay exact.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from improv.errors import ModelError
from improv.pairing import NotePairer

ENCODING_VERSION = 2  # bump when the same notes encode to other tokens (cached parses are re-encoded)
SCHEMES = ("event", "grid")
CHORD_ORDERS = ("up", "down")
SPECIALS = ("BOS", "UNK")  # event scheme only; BOS starts every encoded piece
DEFAULT_VELOCITY = 80


@dataclass(frozen=True)
class TokenConfig:
    """How music becomes tokens. Stored in every vocabulary, checkpoint and sidecar."""

    scheme: str = "event"
    ticks_per_beat: int = 12  # event: 12 covers 16ths (3 ticks) and 8th triplets (4 ticks)
    max_shift_ticks: int = 24  # event: longest single SHIFT token (2 beats); longer gaps repeat it
    pitch_min: int = 21  # lowest MIDI pitch with its own token
    pitch_max: int = 108  # highest
    velocity_bins: int = 0  # event: 0 means no VEL tokens (e.g. chorales, which have no dynamics)
    grid_voices: int = 4  # grid: tokens per step, highest voice first
    grid_steps_per_beat: int = 4  # grid: 4 = 16th notes
    chord_order: str = "up"  # event: the notes of a chord low to high ("up") or high to low ("down")

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown token scheme {self.scheme!r}; use one of {SCHEMES}")
        if self.chord_order not in CHORD_ORDERS:
            raise ValueError(f"unknown chord order {self.chord_order!r}; use one of {CHORD_ORDERS}")
        if not 0 <= self.pitch_min <= self.pitch_max <= 127:
            raise ValueError(f"pitch range {self.pitch_min}..{self.pitch_max} is not within 0..127")
        if self.ticks_per_beat < 1 or self.max_shift_ticks < 1 or self.velocity_bins < 0:
            raise ValueError("ticks_per_beat and max_shift_ticks must be >= 1, velocity_bins >= 0")

    @property
    def pitches(self) -> range:
        return range(self.pitch_min, self.pitch_max + 1)


def full_names(config: TokenConfig) -> tuple[str, ...]:
    """Every token the scheme can produce, in id order."""
    if config.scheme == "grid":
        return ("REST",) + tuple(f"P_{p}" for p in config.pitches)
    names = list(SPECIALS)
    names += [f"SHIFT_{k}" for k in range(1, config.max_shift_ticks + 1)]
    names += [f"VEL_{b}" for b in range(config.velocity_bins)]
    names += [f"ON_{p}" for p in config.pitches]
    names += [f"OFF_{p}" for p in config.pitches]
    return tuple(names)


_NAME = re.compile(r"([A-Z]+)_(-?[0-9]+)")  # ASCII digits only: "ON_²" is not a pitch


def split_name(name: str) -> tuple[str, int | None]:
    """("ON", 60) for "ON_60"; (name, None) for specials and anything malformed."""
    match = _NAME.fullmatch(name)
    return (match[1], int(match[2])) if match else (name, None)


def quantize(ticks: float) -> int:
    """Round half up, never below 0. Both encoders use it, so a live stream and an offline
    encoding of the same events agree even on exact half ticks (where float noise would flip
    Python's round-half-even)."""
    return max(0, math.floor(ticks + 0.5 + 1e-9))


def _prunable(name: str) -> bool:
    return name.startswith(("ON_", "OFF_", "VEL_", "P_"))


@dataclass(frozen=True)
class Vocabulary:
    """Token names <-> ids for one `TokenConfig`; ``names=None`` means every possible token."""

    config: TokenConfig = field(default_factory=TokenConfig)
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.names:
            object.__setattr__(self, "names", full_names(self.config))
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})
        if len(self._index) != len(self.names):
            raise ValueError("vocabulary has duplicate token names")

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def id(self, name: str) -> int:
        """The id of `name`, after the documented fallback if it is not in the vocabulary."""
        idx = self._index.get(name)
        return idx if idx is not None else self._index[self.fallback(name)]

    def name(self, token_id: int) -> str:
        return self.names[token_id]

    def ids(self, names: Iterable[str]) -> np.ndarray:
        """Names -> int32 ids with fallback."""
        return np.fromiter((self.id(n) for n in names), dtype=np.int32)

    def fallback(self, name: str) -> str:
        """The kept token that stands in for a dropped or unknown one (module docstring)."""
        kind, value = split_name(name)
        if kind in ("ON", "OFF", "P") and value is not None:
            pitch = self._nearest_pitch(kind, value)
            if pitch is not None:
                return f"{kind}_{pitch}"
        if kind == "VEL" and value is not None:
            kept = self._values("VEL")
            if kept:
                return f"VEL_{min(kept, key=lambda b: (abs(b - value), b))}"
        if self.config.scheme == "grid":
            return self._any_pitch(value) if kind == "P" and value is not None else "REST"
        return "UNK"

    def _nearest_pitch(self, kind: str, pitch: int) -> int | None:
        for octaves in range(1, 11):
            for candidate in (pitch - 12 * octaves, pitch + 12 * octaves):
                if f"{kind}_{candidate}" in self._index:
                    return candidate
        return None

    def _values(self, kind: str) -> list[int]:
        """The values of this vocabulary's tokens of `kind` ("P" -> its pitches)."""
        return [value for head, value in map(split_name, self.names) if head == kind and value is not None]

    def _any_pitch(self, pitch: int) -> str:
        kept = self._values("P")
        return f"P_{min(kept, key=lambda p: (abs(p - pitch), p))}" if kept else "REST"

    def pruned(self, counts: Mapping[str, int], min_count: int) -> Vocabulary:
        """A vocabulary without the prunable tokens seen fewer than `min_count` times."""
        keep = tuple(n for n in self.names if not _prunable(n) or counts.get(n, 0) >= min_count)
        return Vocabulary(self.config, keep)

    def to_dict(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Vocabulary:
        try:
            return cls(TokenConfig(**data["config"]), tuple(data["names"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"vocabulary is malformed ({err}); re-export the model") from err

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


# --------------------------------------------------------------------------- event scheme


@dataclass(frozen=True, slots=True)
class Note:
    """A note in beats (quarter notes, or the beat of the source's time signature)."""

    onset_beats: float
    duration_beats: float
    pitch: int
    velocity: int = DEFAULT_VELOCITY


def velocity_bin(velocity: int, bins: int) -> int:
    return min(bins - 1, max(0, velocity) * bins // 128)


def bin_velocity(b: int, bins: int) -> int:
    """The velocity at the centre of bin b."""
    return min(127, max(1, int((b + 0.5) * 128 / bins)))


def shift_names(ticks: int, max_shift: int) -> list[str]:
    """`ticks` of elapsed time as SHIFT tokens, longest first."""
    full, rest = divmod(ticks, max_shift)
    return [f"SHIFT_{max_shift}"] * full + ([f"SHIFT_{rest}"] if rest else [])


def chord_rank(pitch: int, config: TokenConfig) -> int:
    """Where `pitch` comes among the notes one tick starts (or ends): low to high, or high to low."""
    return -pitch if config.chord_order == "down" else pitch


def notes_to_names(notes: Iterable[Note], config: TokenConfig, bos: bool = True) -> list[str]:
    """Quantise notes to ticks and write them as event tokens (canonical order, see module doc).

    A note re-struck while it still sounds first ends the sounding one; its later end is dropped.
    Notes of one pitch starting on the same tick (a unison doubled by two parts) are one note, as
    they are on a MIDI channel: the longest, at the loudest velocity.
    """
    tpb = config.ticks_per_beat
    starts: dict[tuple[int, int], tuple[int, int]] = {}  # (onset tick, pitch) -> (off tick, velocity)
    for n in notes:
        on = quantize(n.onset_beats * tpb)
        off = max(on + 1, quantize((n.onset_beats + n.duration_beats) * tpb))
        off_before, velocity_before = starts.get((on, n.pitch), (off, n.velocity))
        starts[on, n.pitch] = (max(off, off_before), max(n.velocity, velocity_before))
    events: list[tuple[int, int, int, int]] = []  # (tick, 0=off/1=on, pitch, velocity)
    for (on, pitch), (off, velocity) in starts.items():
        events += [(on, 1, pitch, velocity), (off, 0, pitch, 0)]
    events.sort(key=lambda e: (e[0], e[1], chord_rank(e[2], config), e[3]))
    names = ["BOS"] if bos else []
    sounding: dict[int, int] = {}  # pitch -> number of pending offs to skip + 1
    vel_bin, now = None, 0
    for tick, is_on, pitch, velocity in events:
        if is_on:
            tokens = []
            if pitch in sounding:
                tokens.append(f"OFF_{pitch}")
                sounding[pitch] += 1
            else:
                sounding[pitch] = 1
            if config.velocity_bins:
                b = velocity_bin(velocity, config.velocity_bins)
                if b != vel_bin:
                    tokens.append(f"VEL_{b}")
                    vel_bin = b
            tokens.append(f"ON_{pitch}")
        else:
            sounding[pitch] -= 1
            if sounding[pitch] > 0:
                continue  # this note was already cut short by a re-strike
            del sounding[pitch]
            tokens = [f"OFF_{pitch}"]
        names += shift_names(tick - now, config.max_shift_ticks)
        names += tokens
        now = tick
    return names


def encode_notes(notes: Iterable[Note], vocab: Vocabulary, bos: bool = True) -> np.ndarray:
    """Notes -> int32 token ids (event scheme), with the vocabulary's fallback for rare tokens."""
    return vocab.ids(notes_to_names(notes, vocab.config, bos=bos))


def decode_ids(ids: Iterable[int], vocab: Vocabulary) -> list[Note]:
    """Event token ids -> notes. Unmatched ONs end at the last time; unmatched OFFs are ignored; a
    note ended in the tick it started (an OFF, or a second ON of its pitch) sounds for no time
    and is left out."""
    decoder = StreamDecoder(vocab)
    tpb = vocab.config.ticks_per_beat
    pairer = NotePairer(restrike_ends=True)
    for token_id in ids:
        action = decoder.feed(int(token_id))
        if action is not None and action.kind == "on":
            pairer.on(decoder.tick, 0, action.pitch, max(1, action.velocity))
        elif action is not None and action.kind == "off":
            pairer.off(decoder.tick, 0, action.pitch)
    end = decoder.tick
    notes = [Note(n.start / tpb, (n.end - n.start) / tpb, n.pitch, n.velocity)
             for n in pairer.closed if n.end > n.start]
    notes += [Note(n.start / tpb, max(1, end - n.start) / tpb, n.pitch, n.velocity) for n in pairer.hanging]
    notes.sort(key=lambda n: (n.onset_beats, n.pitch))
    return notes


@dataclass(frozen=True, slots=True)
class Action:
    """What one decoded token asks for: ``shift`` (ticks), ``on`` (pitch, velocity) or ``off``."""

    kind: str
    ticks: int = 0
    pitch: int = 0
    velocity: int = 0


class StreamDecoder:
    """Feeds token ids one at a time and says what each means; tracks velocity and time in ticks."""

    def __init__(self, vocab: Vocabulary) -> None:
        if vocab.config.scheme != "event":
            raise ModelError(f"the {vocab.config.scheme} token scheme is not streamable; use an event model")
        self.vocab = vocab
        self.tick = 0
        self.velocity = DEFAULT_VELOCITY
        self._actions = [split_name(n) for n in vocab.names]

    def feed(self, token_id: int) -> Action | None:
        kind, value = self._actions[token_id]
        if kind == "SHIFT":
            self.tick += value
            return Action("shift", ticks=value)
        if kind == "ON":
            return Action("on", pitch=value, velocity=self.velocity)
        if kind == "OFF":
            return Action("off", pitch=value)
        if kind == "VEL":
            self.velocity = bin_velocity(value, self.vocab.config.velocity_bins)
        return None  # BOS, UNK, VEL


# --------------------------------------------------------------------------- grid scheme


def grid_to_ids(frames: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """(T, voices) MIDI pitches, 0 = silence, highest voice first -> (T * voices,) int32 ids."""
    if vocab.config.scheme != "grid":
        raise ValueError("grid_to_ids needs a grid vocabulary")
    frames = np.asarray(frames, dtype=np.int64)
    lut = np.array([vocab.id("REST")] + [vocab.id(f"P_{p}") for p in range(1, 128)], dtype=np.int32)
    return lut[np.clip(frames, 0, 127)].reshape(-1)


def ids_to_grid(ids: Sequence[int] | np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Inverse of `grid_to_ids`: (T * voices,) ids -> (T, voices) MIDI pitches, 0 = silence."""
    voices = vocab.config.grid_voices
    pitch_of = np.array([split_name(n)[1] if split_name(n)[0] == "P" else 0 for n in vocab.names], dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    usable = len(ids) - len(ids) % voices
    return pitch_of[ids[:usable]].reshape(-1, voices)


def grid_to_notes(frames: np.ndarray, steps_per_beat: int) -> list[Note]:
    """(T, voices) pitches -> notes; equal consecutive pitches in a voice are held (as in JSB CSVs)."""
    notes: list[Note] = []
    frames = np.asarray(frames)
    for voice in range(frames.shape[1]):
        column, start = frames[:, voice], 0
        for t in range(1, len(column) + 1):
            if t == len(column) or column[t] != column[start]:
                if column[start] > 0:
                    notes.append(Note(start / steps_per_beat, (t - start) / steps_per_beat, int(column[start])))
                start = t
    notes.sort(key=lambda n: (n.onset_beats, n.pitch))
    return notes
