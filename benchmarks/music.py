"""`improv bench` section "music": does the answer answer the call?

Calls are the openings (`CALL_BEATS`) of held-out pieces: Bach chorales of the test split (four
voices: chords), Essen folk songs and O'Neill's tunes (single lines). Each is answered by every
model through the demo path (`improv.demo.answer_call`: the real engine on a simulated clock) for
several seeds, and measured as a musician would listen (per model and corpus, means over calls
and seeds):

* ``in_key``: the share of the answer's sounding time on the scale of the call's key;
* ``echo``: the share of the answer's melodic figures (3 intervals of its top line) heard in the call;
* ``copy``: the share of answers that play the call's whole line again (at any transposition);
* ``density_log2``: |log2(answer notes per beat / call notes per beat)|;
* ``poly_excess``: answer notes per onset minus the call's;
* ``register_st``: |median pitch of the answer - of the call|, in semitones;
* ``distinct``: the share of different answers among a call's seeds;
* ``nll`` / ``adapt_nll`` / ``adapt_gain``: the second halves of held-out pieces scored by the
  model alone and mixed with the session memory, which has heard the first half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.report import MUSIC_CORPORA as CORPORA
from benchmarks.report import Target
from improv.figures import FIGURE_INTERVALS, intervals, top_line
from improv.keys import detect_key
from improv.phrase_shape import PhraseShape
from improv.tokens import Note

CALL_BEATS = 12.0  # three bars of 4/4


@dataclass(frozen=True)
class Measures:
    in_key: float
    echo: float
    copy: bool
    density_log2: float
    poly_excess: float
    register_st: float


def measure(call: Sequence[Note], answer: Sequence[Note]) -> Measures | None:
    """How `answer` follows `call` (None if the answer is empty)."""
    c, a = PhraseShape.of(call), PhraseShape.of(answer)
    if c is None or a is None:
        return None
    key = detect_key(_pitch_class_weights(call))
    in_key = 1.0 if key is None else _share_in(answer, key.pitch_classes)
    call_line, answer_line = intervals(top_line(call)), intervals(top_line(answer))
    figures = {tuple(call_line[i:i + FIGURE_INTERVALS]) for i in range(len(call_line) - FIGURE_INTERVALS + 1)}
    theirs = [tuple(answer_line[i:i + FIGURE_INTERVALS]) for i in range(len(answer_line) - FIGURE_INTERVALS + 1)]
    echo = sum(f in figures for f in theirs) / len(theirs) if theirs else 0.0
    return Measures(in_key, echo, _contains(answer_line, call_line),
                    abs(math.log2(a.notes_per_beat / c.notes_per_beat)),
                    a.notes_per_onset - c.notes_per_onset, abs(a.median_pitch - c.median_pitch))


def distinct(answers: Sequence[Sequence[Note]]) -> float:
    """The share of different answers (as onsets and pitches) among `answers`."""
    keys = {tuple((round(n.onset_beats, 3), n.pitch) for n in a) for a in answers}
    return len(keys) / len(answers) if answers else 0.0


def opening(notes: Sequence[Note], beats: float = CALL_BEATS) -> list[Note]:
    """The notes starting in the first `beats` from the first note, cut at `beats`, from time 0."""
    first = min(n.onset_beats for n in notes)
    out = []
    for n in notes:
        onset = n.onset_beats - first
        if onset < beats:
            out.append(Note(onset, min(n.duration_beats, beats - onset), n.pitch, n.velocity))
    return sorted(out, key=lambda n: (n.onset_beats, n.pitch))


def _pitch_class_weights(notes: Sequence[Note]) -> np.ndarray:
    hist = np.zeros(12)
    for n in notes:
        hist[n.pitch % 12] += max(n.duration_beats, 1e-3)
    return hist


def _share_in(notes: Sequence[Note], pitch_classes: frozenset[int]) -> float:
    total = sum(max(n.duration_beats, 1e-3) for n in notes)
    return sum(max(n.duration_beats, 1e-3) for n in notes if n.pitch % 12 in pitch_classes) / total


def _contains(haystack: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


# --------------------------------------------------------------------------- running it


def held_out_calls(corpus: str, count: int, cache_dir=None) -> list[list[Note]]:
    """The openings of `count` held-out pieces (`held_out_pieces`) with four notes or more."""
    calls = [opening(notes) for notes in held_out_pieces(corpus, 4 * count, cache_dir)]
    return [c for c in calls if len(c) >= 4][:count]


def held_out_pieces(corpus: str, count: int, cache_dir=None) -> list[list[Note]]:
    """The notes of at most `count` pieces none of the shipped models trained on: for "bach", the
    test split of music21's chorales (the split the models were trained with), else the corpus'
    first pieces."""
    from training.data import load_pieces, split_names

    if corpus == "bach":
        pieces = load_pieces(corpus=["bach"], cache_dir=cache_dir)
        split = split_names([name for name, _ in pieces])
        return [p.to_notes() for name, p in pieces if split[name] == "test"][:count]
    return [p.to_notes() for _, p in load_pieces(corpus=[corpus], max_pieces=count, cache_dir=cache_dir)]


def answer_measures(model, calls: Sequence[Sequence[Note]], seeds: Sequence[int], bpm: float = 100.0,
                    overrides: dict | None = None) -> dict:
    """The section's figures for one model on these calls (means over calls and seeds)."""
    from improv.demo import answer_call, answer_notes
    from improv.settings import load_settings

    rows, distinct_shares = [], []
    for call in calls:
        answers = []
        for seed in seeds:
            settings = load_settings(None, {"time.bpm": bpm, "sampling.seed": seed, **(overrides or {})})
            engine, recorder = answer_call(model, settings, list(call))
            answer = [n for n in answer_notes(engine, recorder) if n.onset_beats >= max(c.onset_beats for c in call)]
            answers.append(answer)
            m = measure(call, answer)
            rows.append(m)
        distinct_shares.append(distinct(answers))
    got = [m for m in rows if m is not None]
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    return {"in_key": mean([m.in_key for m in got]), "echo": mean([m.echo for m in got]),
            "copy": mean([float(m.copy) for m in got]), "density_log2": mean([m.density_log2 for m in got]),
            "poly_excess": mean([m.poly_excess for m in got]), "register_st": mean([m.register_st for m in got]),
            "distinct": mean(distinct_shares), "answered": len(got) / len(rows) if rows else 0.0}


def practice_tokens(vocab, notes_count: int, seed: int = 0) -> np.ndarray:
    """A player improvising on figures of four notes, varied and moved about, a new one every few
    bars, as the model's token ids: what the session memory is for."""
    from improv.tokens import encode_notes

    rng = np.random.default_rng(seed)
    notes, t, pitch = [], 0.0, 64
    figure = rng.integers(-4, 5, 4)
    while len(notes) < notes_count:
        if rng.random() < 0.05:
            figure = rng.integers(-4, 5, 4)  # a new figure
        for step in figure + rng.integers(-1, 2, 4) * (rng.random() < 0.3):
            pitch = int(np.clip(pitch + step, 48, 84))
            length = 0.5 * rng.choice([0.5, 1.0, 1.0, 2.0])
            notes.append(Note(t, length * 0.9, pitch, 80))
            t += length
    return encode_notes(notes, vocab)


def memory_footprint_mb(vocab, minutes: float = 60.0, notes_per_s: float = 10.0, seed: int = 0) -> tuple[float, int]:
    """(MB the session memory holds, tokens heard) after a player improvised (`practice_tokens`)
    for `minutes` at `notes_per_s`."""
    import tracemalloc

    from improv.memory import SessionMemory

    ids = practice_tokens(vocab, int(minutes * 60 * notes_per_s), seed)
    tracemalloc.start()
    memory = SessionMemory(vocab.names)
    for token in ids:
        memory.observe(int(token))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / 1e6, len(ids)


@dataclass(frozen=True)
class MusicOptions:
    calls: int = 8  # calls per corpus
    seeds: int = 4  # answers per call
    adapt_pieces: int = 15  # held-out pieces per corpus for the NLL figures
    cache_dir: object = None


def run(report, models, options: MusicOptions) -> None:
    """Every figure of the section, per model and corpus, into `report` (benchmarks.report.Report)."""
    from improv.model_step import StepModel

    calls = {corpus: held_out_calls(corpus, options.calls, options.cache_dir) for corpus in CORPORA}
    pieces = {corpus: held_out_pieces(corpus, options.adapt_pieces, options.cache_dir) for corpus in CORPORA}
    for name, folder in models:
        model = StepModel.load(folder)
        for corpus in CORPORA:
            p = f"music.{name}.{corpus}"
            figures = answer_measures(model, calls[corpus], list(range(options.seeds)))
            for key, value in figures.items():
                report.put(f"{p}.{key}", value, f"{name} on {corpus}: {LABELS[key]}" if key in LABELS else None)
            _adapt_figures(report, p, name, corpus, model, pieces[corpus])
    if models:
        mb, tokens = memory_footprint_mb(StepModel.load(models[0][1]).vocab)
        report.put("music.memory_mb_1h", mb, f"session memory after an hour at 10 notes/s ({tokens:,} tokens)", "MB")
    report.note("music.note", f"{options.calls} calls per corpus (the first {CALL_BEATS:g} beats of held-out pieces) "
                              f"x {options.seeds} seeds, answered through the demo path (improv.demo.answer_call) "
                              "with the default settings; NLL over the second halves of "
                              f"{options.adapt_pieces} held-out pieces per corpus (training.evaluate.adaptive_metrics)")


LABELS = {"in_key": "answer in the call's key", "echo": "figures of the call in the answer",
          "copy": "answers that copy the call", "density_log2": "|log2 density ratio|",
          "poly_excess": "notes per onset, answer - call", "register_st": "register distance (semitones)",
          "distinct": "distinct answers across seeds"}


def _adapt_figures(report, prefix: str, name: str, corpus: str, model, pieces) -> None:
    from improv.tokens import encode_notes
    from training.evaluate import adaptive_metrics

    m = adaptive_metrics(model, [encode_notes(notes, model.vocab) for notes in pieces])
    alone, mixed = m["nll_second_half"].nll, m["adapt_second_half"].nll
    report.put(f"{prefix}.nll", alone, f"{name} on {corpus}: second halves, model alone", "nats/token")
    report.put(f"{prefix}.adapt_nll", mixed, f"{name} on {corpus}: second halves, + session memory", "nats/token")
    report.put(f"{prefix}.adapt_gain", 1.0 - mixed / alone, f"{name} on {corpus}: NLL the memory removes")
    report.targets[f"{prefix}.adapt_gain"] = _adapt_target(f"{prefix}.adapt_gain", corpus in home_corpora(model))


def home_corpora(model) -> set[str]:
    """The music21 corpora a model was trained on (its sidecar's training settings); Bach's for a
    model that does not say."""
    corpora = (model.meta.get("train_config") or {}).get("corpus") or ["bach"]
    return set(corpora)


def _adapt_target(key: str, home: bool):
    """At home the memory must stay out of the way; away from it, take over."""
    return Target(key, ">=", -0.01) if home else Target(key, ">=", 0.40)
