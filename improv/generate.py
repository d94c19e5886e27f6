"""Offline generation: continue a seed with a step model, note by note, and write MIDI (+ PNG).

The seed goes through the model token by token, exactly as the live daemon would hear it; then the
model samples (`improv.sampling`) until `beats` beats of new time have passed.

* Event models: the seed is encoded with `notes_to_names` (BOS first). A seed cut at `seed_beats`
  keeps the notes that start before the cut and drops note-offs after it, so notes still sounding
  at the cut are held into the continuation and the model decides when they end. Generation stops
  when the SHIFT tokens sampled add up to `beats` beats (or after a step budget, in case a model
  never moves time on).
* Grid models (JSB 16ths): the seed becomes frames (the highest `grid_voices` sounding pitches at
  each step, highest voice first) and the model writes ``beats * grid_steps_per_beat`` new frames,
  one token per voice; `grid_to_notes` turns frames into notes. Grid models have no BOS, so with
  no seed they start from one beat of a C major chord (`GRID_START_CHORD`, snapped to the vocabulary).

The result's seed part is the decoded seed (as the model heard it, quantised), its continuation
the notes that start at or after the seed's end.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from improv.context import TimedModel
from improv.settings import ListenSettings
from improv.errors import ConfigError, DataError, ImprovError
from improv.sampling import Sampler, TokenMasks
from improv.tokens import (Note, StreamDecoder, Vocabulary, decode_ids, grid_to_ids, grid_to_notes, ids_to_grid,
                           notes_to_names, split_name)

GRID_START_CHORD = (72, 67, 64, 48, 43, 36)  # C5 G4 E4 C3 (G2 C2 for grids with more voices)
DEFAULT_CORPUS_SEED_BEATS = 8.0
MAX_TOKENS_PER_BEAT = 64  # event generation budget: a model that never shifts still stops


@dataclass
class Continuation:
    """What `continue_notes` made. `ids` holds every token, the seed's first (`seed_tokens` of them)."""

    seed: list[Note]
    notes: list[Note]
    seed_end_beats: float
    beats: float  # new time generated after the seed
    ids: np.ndarray
    seed_tokens: int
    steps: int  # model.step calls, seed included
    step_seconds: float

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.step_seconds / max(1, self.steps)


def continue_notes(
    model,
    seed_notes: Sequence[Note],
    *,
    beats: float,
    sampler: Sampler,
    seed_beats: float | None = None,
    max_polyphony: int = 0,
    pitch_range: tuple[int, int] | None = None,
    listen: ListenSettings | None = None,
) -> Continuation:
    """Feed `seed_notes` (cut at `seed_beats`; None = all, up to the next whole beat) through
    `model` (anything with `.vocab`, `.new_state()`, `.step()`) and sample `beats` more beats.
    With `listen` (event models), a session memory hears the seed and the continuation as they
    stream, and is mixed in as in `improv run` (`improv generate --adapt`)."""
    if not beats > 0:
        raise ConfigError(f"--beats must be > 0, got {beats}")
    if model.vocab.config.scheme == "grid":
        return _continue_grid(model, seed_notes, beats, sampler, seed_beats, pitch_range)
    return _continue_events(model, seed_notes, beats, sampler, seed_beats, max_polyphony, pitch_range, listen)


# --------------------------------------------------------------------------- event scheme


def seed_event_ids(notes: Sequence[Note], vocab: Vocabulary, seed_beats: float | None) -> tuple[np.ndarray, int]:
    """BOS + the seed's tokens up to the cut, and the cut in ticks (see the module docstring)."""
    cfg = vocab.config
    tpb = cfg.ticks_per_beat
    if seed_beats is None:
        end = max((n.onset_beats + n.duration_beats for n in notes), default=0.0)
        seed_beats = float(math.ceil(end - 1e-9))
    cut = round(seed_beats * tpb)
    names = notes_to_names([n for n in notes if round(n.onset_beats * tpb) < cut], cfg)
    kept, tick = [], 0
    for name in names:
        head, value = split_name(name)
        if head == "SHIFT":
            ticks = min(value, cut - tick)
            if ticks > 0:
                kept.append(f"SHIFT_{ticks}")
                tick += ticks
            if ticks < value:
                break  # the next events lie beyond the cut
        else:
            kept.append(name)  # ONs all start before the cut; OFFs at or before it
    kept += [f"SHIFT_{cfg.max_shift_ticks}"] * ((cut - tick) // cfg.max_shift_ticks)
    if (cut - tick) % cfg.max_shift_ticks:
        kept.append(f"SHIFT_{(cut - tick) % cfg.max_shift_ticks}")
    return vocab.ids(kept), cut


def _continue_events(model, seed_notes, beats, sampler, seed_beats, max_polyphony, pitch_range,
                     listen) -> Continuation:
    vocab = model.vocab
    tpb = vocab.config.ticks_per_beat
    seed_ids, seed_ticks = seed_event_ids(seed_notes, vocab, seed_beats if seed_notes else 0.0)
    timed = TimedModel(model)
    stream = _Listening(timed, listen, seed_ids) if listen is not None else _Plain(timed, seed_ids)
    logits = stream.logits()
    decoder, sounding = StreamDecoder(vocab), set()
    for token in seed_ids:
        _track(decoder.feed(int(token)), sounding)
    target = decoder.tick + round(beats * tpb)
    masks, new = TokenMasks(vocab), []
    budget = int(MAX_TOKENS_PER_BEAT * beats) + 16
    while decoder.tick < target and len(new) < budget:
        mask = masks.allowed(pitch_range=pitch_range, sounding=len(sounding), max_polyphony=max_polyphony)
        token = sampler.sample(logits, mask)
        new.append(token)
        _track(decoder.feed(token), sounding)
        if decoder.tick < target:
            stream.step(token)
            logits = stream.logits()
    ids = np.concatenate([seed_ids, np.asarray(new, dtype=np.int32)])
    return _split(decode_ids(ids, vocab), seed_ticks / tpb, beats, ids, len(seed_ids), timed)


class _Plain:
    """The model alone: its state, stepped."""

    def __init__(self, timed: TimedModel, seed_ids) -> None:
        self.timed, self.state = timed, timed.new_state()
        self._logits = timed.feed(seed_ids, self.state)

    def logits(self) -> np.ndarray:
        return self._logits

    def step(self, token: int) -> None:
        self._logits = self.timed.step(token, self.state)


class _Listening:
    """The model with a session memory, as the live context runs them (improv.context)."""

    def __init__(self, timed: TimedModel, listen: ListenSettings, seed_ids) -> None:
        from improv.blend import Blend
        from improv.context import ModelContext
        from improv.memory import SessionMemory

        memory = SessionMemory(timed.vocab.names, listen.order, listen.half_life_tokens)
        self.context = ModelContext(timed, memory, Blend(listen.order, listen.follow), listen.own_weight)
        for token in seed_ids[1:] if len(seed_ids) and int(seed_ids[0]) == self.context.bos else seed_ids:
            self.context.hear(int(token))

    def logits(self) -> np.ndarray:
        return self.context.mixed_logits()

    def step(self, token: int) -> None:
        self.context.hear(token, own=True)


def _track(action, sounding: set[int]) -> None:
    """Keeps the set of pitches sounding after each decoded action."""
    if action is None or action.kind == "shift":
        return
    if action.kind == "on":
        sounding.add(action.pitch)
    else:
        sounding.discard(action.pitch)


# --------------------------------------------------------------------------- grid scheme


def notes_to_grid(notes: Sequence[Note], voices: int, steps_per_beat: int, steps: int) -> np.ndarray:
    """(steps, voices) MIDI pitches, 0 = silence: at each step the highest `voices` sounding
    pitches, highest first (a note sounds from its onset step up to, not including, its end step)."""
    grid = [[] for _ in range(steps)]
    for n in notes:
        a = round(n.onset_beats * steps_per_beat)
        b = max(a + 1, round((n.onset_beats + n.duration_beats) * steps_per_beat))
        for t in range(max(0, a), min(b, steps)):
            grid[t].append(n.pitch)
    frames = np.zeros((steps, voices), dtype=np.int64)
    for t, pitches in enumerate(grid):
        top = sorted(set(pitches), reverse=True)[:voices]
        frames[t, : len(top)] = top
    return frames


def _grid_seed(seed_notes, cfg, seed_beats) -> np.ndarray:
    spb, voices = cfg.grid_steps_per_beat, cfg.grid_voices
    if not seed_notes:
        chord = list(GRID_START_CHORD[:voices]) + [0] * max(0, voices - len(GRID_START_CHORD))
        return np.tile(np.array(chord, dtype=np.int64), (spb, 1))
    if seed_beats is None:
        seed_beats = math.ceil(max(n.onset_beats + n.duration_beats for n in seed_notes) - 1e-9)
    return notes_to_grid(seed_notes, voices, spb, max(1, round(seed_beats * spb)))


def _continue_grid(model, seed_notes, beats, sampler, seed_beats, pitch_range) -> Continuation:
    vocab, cfg = model.vocab, model.vocab.config
    frames = _grid_seed(seed_notes, cfg, seed_beats)
    seed_ids = grid_to_ids(frames, vocab)
    timed, state = TimedModel(model), model.new_state()
    logits = timed.feed(seed_ids, state)
    mask = TokenMasks(vocab).allowed(pitch_range=pitch_range)
    total = max(1, round(beats * cfg.grid_steps_per_beat)) * cfg.grid_voices
    new = np.empty(total, dtype=np.int32)
    for i in range(total):
        new[i] = sampler.sample(logits, mask)
        if i + 1 < total:
            logits = timed.step(int(new[i]), state)
    ids = np.concatenate([seed_ids, new])
    notes = grid_to_notes(ids_to_grid(ids, vocab), cfg.grid_steps_per_beat)
    return _split(notes, len(frames) / cfg.grid_steps_per_beat, beats, ids, len(seed_ids), timed)


def _split(notes, seed_end_beats, beats, ids, seed_tokens, timed) -> Continuation:
    eps = 1e-9
    seed = [n for n in notes if n.onset_beats < seed_end_beats - eps]
    new = [n for n in notes if n.onset_beats >= seed_end_beats - eps]
    return Continuation(seed, new, seed_end_beats, beats, ids, seed_tokens, timed.steps, timed.seconds)


# --------------------------------------------------------------------------- seeds and files


def corpus_seed_notes(corpus: str, piece: int) -> list[Note]:
    """The notes of piece `piece` of a corpus name (e.g. bach, parsed by music21) or of a data
    file/folder, via `training.data.piece_notes`."""
    if not Path(corpus).exists() and importlib.util.find_spec("music21") is None:
        raise ImprovError(f"--seed-corpus {corpus} needs music21, which is not installed; "
                          "pip install 'improv[train]' or use --seed-midi FILE.mid")
    try:
        from training.data import piece_notes

        return list(piece_notes(corpus, piece))
    except ModuleNotFoundError as err:
        if err.name == "music21":
            raise ImprovError(f"--seed-corpus {corpus} needs music21, which is not installed; "
                              "pip install 'improv[train]' or use --seed-midi FILE.mid") from err
        if err.name in ("training", "training.data"):
            raise ImprovError("--seed-corpus needs the training package (training/data.py) from the "
                              "improv repository; use --seed-midi FILE.mid instead") from err
        raise


def load_seed(
    *, seed_midi: str | Path | None, seed_corpus: str | None, seed_piece: int, seed_beats: float | None
) -> tuple[list[Note], float | None]:
    """(seed notes, where to cut them in beats or None for all)."""
    if seed_midi is not None and seed_corpus is not None:
        raise ConfigError("give either --seed-midi or --seed-corpus, not both")
    if seed_beats is not None and not seed_beats > 0:
        raise ConfigError(f"--seed-beats must be > 0, got {seed_beats}")
    if seed_midi is not None:
        from improv.midifile import read_midi

        if not Path(seed_midi).is_file():
            raise DataError(f"seed MIDI file {seed_midi} does not exist; give an existing .mid file")
        notes = read_midi(seed_midi)
        if not notes:
            raise DataError(f"{seed_midi}: no notes in it; give a seed with at least one note")
        return notes, seed_beats
    if seed_corpus is not None:
        if seed_piece < 0:
            raise ConfigError(f"--seed-piece must be >= 0, got {seed_piece}")
        notes = corpus_seed_notes(seed_corpus, seed_piece)
        return notes, seed_beats if seed_beats is not None else DEFAULT_CORPUS_SEED_BEATS
    return [], None


@dataclass(frozen=True)
class GenerateOptions:
    """What `improv generate` continues and how."""

    out: str | Path  # .mid: tracks "seed" and "improv"
    seed_midi: str | Path | None = None
    seed_corpus: str | None = None
    seed_piece: int = 0
    seed_beats: float | None = None  # where the seed is cut; None: its end
    beats: float = 16.0  # how much to generate
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None  # the sampler's random seed
    max_polyphony: int = 0
    png: str | Path | None = None
    bpm: float = 120.0  # written into the file
    adapt: bool = False  # a session memory listens to the seed and the continuation (improv run's)


def generate(model, options: GenerateOptions) -> Continuation:
    """Load the model (a path or name, None = the default; or an already loaded model) and the
    seed, continue it, and write `out` and `png` if given."""
    from improv.midifile import write_midi
    from improv.pianoroll import write_png

    o = options
    if isinstance(model, (str, Path)) or model is None:
        from improv.model_step import StepModel

        model = StepModel.load(model)
    try:
        sampler = Sampler(o.temperature, o.top_k, o.top_p, np.random.default_rng(o.seed))
    except ValueError as err:
        raise ConfigError(f"bad sampling option: {err}") from err
    notes, cut = load_seed(seed_midi=o.seed_midi, seed_corpus=o.seed_corpus, seed_piece=o.seed_piece,
                           seed_beats=o.seed_beats)
    result = continue_notes(model, notes, beats=o.beats, sampler=sampler, seed_beats=cut, max_polyphony=o.max_polyphony,
                            listen=ListenSettings() if o.adapt else None)
    write_midi(o.out, {"seed": result.seed, "improv": result.notes}, bpm=o.bpm)
    if o.png is not None:
        write_png(o.png, [result.seed, result.notes], labels=("seed", "continuation (improv)"))
    return result


def _beats(x: float) -> str:
    return f"{x:g} beat" + ("" if x == 1 else "s")


def summary(result: Continuation, out: str | Path, png: str | Path | None = None) -> str:
    """One line for the terminal."""
    files = f"{out}" + (f" and {png}" if png else "")
    return (f"wrote {files}: {len(result.seed)} seed notes ({_beats(result.seed_end_beats)}) + "
            f"{len(result.notes)} new notes ({_beats(result.beats)}), "
            f"{result.steps} steps at {result.ms_per_step:.2f} ms/step")
