"""Chords under the answer's line where the call has chords: the texture a line model cannot write.

A model trained on melodies (folk songs, reels) answers a chorale's chords with a single line.
`Texture` measures the call: its notes per onset on the beat and off it, its widest chord and
where its bass lies. `Voicer` follows a phrase's events and, at each onset whose notes fall short
of the call's there (on average: a running balance), adds voices under the onset's top note: tones
of a diatonic triad of the key that holds the top note (and the model's other notes, if it wrote
some), drawn by weight (I and V most, IV next), the root placed near the call's bass, inner voices
spread between. Never on a key the player holds, a note already sounding, or outside the range.
Each voice ends with its top note; the model's next note takes over a voice it lands on.
`writes_chords` tells the models that need it: after hearing block chords and the first note of
another, does the model start a second note at once (a chorale model does, a melody model never)?
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np

from improv.keys import Key
from improv.phrase_shape import ONSET_TOLERANCE_BEATS
from improv.token_facts import TokenFacts
from improv.tokens import Note, encode_notes

# diatonic triads by degree: (pitch classes above the tonic, root first; weight of the draw)
MAJOR_TRIADS = (((0, 4, 7), 3.0), ((7, 11, 2), 3.0), ((5, 9, 0), 2.0), ((2, 5, 9), 1.5), ((9, 0, 4), 1.5),
                ((4, 7, 11), 0.5))
MINOR_TRIADS = (((0, 3, 7), 3.0), ((7, 11, 2), 3.0), ((5, 8, 0), 2.0), ((8, 0, 3), 1.5), ((3, 7, 10), 1.0),
                ((10, 2, 5), 0.75))
MIN_BELOW_TOP = 3  # a voice lies at least a minor third under the top note (and over the bass)
BASS_BELOW_TOP = 5  # the bass at least a fourth under it
SOFTER = 6  # voices this much softer than their top note
MAX_DEBT = 2.0  # the notes the voicing owes (or is ahead) carried to the next onset, at most
PROBE_CHORDS = ((72, 67, 64, 48), (72, 69, 65, 53), (74, 67, 62, 55), (72, 67, 64, 48), (71, 67, 62, 55))
CHORDS_P = 0.9  # a model writes chords if a second note follows a chord's first this likely (on average)


@dataclass(frozen=True)
class Texture:
    """What the call's chords are like: notes per onset on the beat and off it, its widest chord,
    the median of its chords' lowest notes."""

    on_beat: float
    off_beat: float
    max_chord: int
    bass: float

    @classmethod
    def of(cls, call: Sequence[Note]) -> Texture | None:
        """None for a call with no chords (a single line is answered by a single line)."""
        onsets = _onsets(call)
        if not onsets or max(len(pitches) for _, pitches in onsets) < 2:
            return None
        sizes = {True: [], False: []}
        for beats, pitches in onsets:
            sizes[_on_beat(beats)].append(len(pitches))
        mean = float(np.mean([len(p) for _, p in onsets]))
        bass = float(np.median([min(p) for _, p in onsets if len(p) >= 2]))
        on, off = (float(np.mean(sizes[b])) if sizes[b] else mean for b in (True, False))
        return cls(on, off, max(len(p) for _, p in onsets), bass)

    def per_onset(self, beats: float) -> float:
        return self.on_beat if _on_beat(beats) else self.off_beat


class Voicer:
    """Adds the call's texture to one phrase's events as they are generated; see the module doc.

    `add(events, frontier, blocked)` voices the onsets before `frontier` (an onset at the frontier
    may still grow: it waits) and returns what can be handed on; `blocked()` gives the pitches no
    voice may take (the phrase's sounding and ending notes, the keys held)."""

    def __init__(self, texture: Texture, key: Key, pitch_range: tuple[int, int], max_notes: int,
                 rng: np.random.Generator) -> None:
        self.texture, self.rng = texture, rng
        self.lo, self.hi = pitch_range
        self.max_notes = min(max_notes, texture.max_chord)
        triads = MINOR_TRIADS if key.mode == "minor" else MAJOR_TRIADS
        self._triads = [(tuple((key.tonic + c) % 12 for c in pcs), w) for pcs, w in triads]
        self._voices: dict[int, list[int]] = {}  # a top note -> the voices under it, sounding
        self._waiting: list = []  # events at the frontier (GenEvent)
        self._debt = 0.0

    def add(self, events: list, frontier: float, blocked: Callable[[], Collection[int]]) -> list:
        pending, out = self._waiting + events, []
        self._waiting = [e for e in pending if e.beats >= frontier - 1e-9]
        ready = [e for e in pending if e.beats < frontier - 1e-9]
        i = 0
        while i < len(ready):
            j = i
            while j < len(ready) and ready[j].beats == ready[i].beats:
                j += 1
            out += self._onset(ready[i:j], blocked)
            i = j
        return out

    def flush(self, events: list, blocked: Callable[[], Collection[int]]) -> list:
        """The phrase ends: everything waiting (and `events`, its last note-offs) handed on."""
        return self.add(events, math.inf, blocked)

    def shift(self, beats: float) -> None:
        self._waiting = [replace(e, beats=e.beats + beats) for e in self._waiting]

    @property
    def sounding(self) -> set[int]:
        return {v for voices in self._voices.values() for v in voices}

    def _onset(self, group: list, blocked) -> list:
        """One onset's events (same beats, in order): ends first, then the onset's notes and their
        voices, then the ends of notes started here (a note of no length ends with its voices)."""
        out, ons, later = [], [], []
        for ev in group:
            if ev.kind == "on":
                ons.append(ev)
            elif any(on.pitch == ev.pitch for on in ons):
                later.append(ev)
            else:
                out += self._end(ev)
        if ons:
            out += self._start(ons, blocked)
        for ev in later:
            out += self._end(ev)
        return out

    def _end(self, ev) -> list:
        return [ev] + [replace(ev, pitch=v) for v in self._voices.pop(ev.pitch, ())]

    def _start(self, ons: list, blocked) -> list:
        out, top = [], max(ons, key=lambda e: e.pitch)
        for ev in ons:  # the model's note takes over a voice on its pitch
            for voices in self._voices.values():
                if ev.pitch in voices:
                    voices.remove(ev.pitch)
                    out.append(replace(ev, kind="off", velocity=0))
        out += ons
        self._debt += self.texture.per_onset(top.beats) - len(ons)
        want = max(0, min(int(math.floor(self._debt + 0.5)), self.max_notes - len(ons)))
        if want:  # a new chord: the last one's voices end here
            out += [replace(top, kind="off", pitch=v, velocity=0) for v in sorted(self.sounding)]
            self._voices.clear()
            voices = self._voicing(top.pitch, {e.pitch % 12 for e in ons}, want, set(blocked()))
            self._debt -= len(voices)
            self._voices.setdefault(top.pitch, []).extend(voices)
            velocity = max(1, top.velocity - SOFTER)
            out += [replace(top, pitch=v, velocity=velocity) for v in voices]
        self._debt = float(np.clip(self._debt, -MAX_DEBT, MAX_DEBT))
        return out

    def _voicing(self, top: int, classes: set[int], count: int, blocked: set[int]) -> list[int]:
        """Up to `count` pitches under `top`: a bass near the call's, inner voices spread between."""
        chord = self._chord(top % 12, classes)
        if chord is None:
            return []
        taken = set(blocked) | {top}
        ok = lambda p: self.lo <= p <= self.hi and p not in taken and p % 12 in chord  # noqa: E731
        roots = [p for p in range(self.lo, top - BASS_BELOW_TOP + 1) if ok(p)]
        if not roots:
            return []
        bass = min(roots, key=lambda p: (p % 12 != chord[0], abs(p - self.texture.bass)))
        voices = [bass]
        for k in range(1, count):
            target = bass + (top - bass) * (count - k) / count
            inner = [p for p in range(bass + MIN_BELOW_TOP, top - MIN_BELOW_TOP + 1)
                     if ok(p) and all(abs(p - v) >= MIN_BELOW_TOP for v in voices)]
            if not inner:
                break
            have = {v % 12 for v in voices} | {top % 12}
            voices.append(min(inner, key=lambda p: abs(p - target) + (4 if p % 12 in have else 0)))
        return sorted(voices, reverse=True)

    def _chord(self, top: int, classes: set[int]) -> tuple[int, ...] | None:
        """A triad of the key holding every class (else the top note's), drawn by weight; None if
        the top note is in none (a chromatic note stays alone)."""
        for need in (classes, {top}):
            fits = [(pcs, w) for pcs, w in self._triads if need <= set(pcs)]
            if fits:
                weights = np.array([w for _, w in fits])
                return fits[int(self.rng.choice(len(fits), p=weights / weights.sum()))][0]
        return None


def writes_chords(model) -> bool:
    """Whether `model` (a StepModel) answers chords with chords: after each of a few block chords
    it heard, the probability that the next chord's first note is followed at once by another
    note start, on average (the first chord left out: nothing was heard before it)."""
    if model.vocab.config.scheme != "event":
        return True  # a grid model writes every voice
    facts = TokenFacts(model.vocab)
    notes = [Note(float(i), 1.0, p, 80) for i, chord in enumerate(PROBE_CHORDS) for p in chord]
    state, previous, seen = model.new_state(), None, []
    for token in encode_notes(notes, model.vocab):
        logits = model.step(int(token), state)
        if facts.is_on[token] and previous is not None and not facts.starts[previous]:
            p = np.exp(logits - logits.max())
            seen.append(float(p[facts.starts].sum() / p.sum()))
        previous = token
    return bool(np.mean(seen[1:]) >= CHORDS_P)


def _onsets(notes: Sequence[Note]) -> list[tuple[float, list[int]]]:
    out: list[tuple[float, list[int]]] = []
    for n in sorted(notes, key=lambda n: n.onset_beats):
        if out and n.onset_beats - out[-1][0] <= ONSET_TOLERANCE_BEATS:
            out[-1][1].append(n.pitch)
        else:
            out.append((n.onset_beats, [n.pitch]))
    return out


def _on_beat(beats: float) -> bool:
    return abs(beats - round(beats)) <= ONSET_TOLERANCE_BEATS
