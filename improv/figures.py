"""The call's melodic figures, offered back to the answer's top line.

A figure is a run of `FIGURE_INTERVALS` successive intervals of a phrase's top line (its skyline:
the highest new note of each onset, unless a higher note still sounds from before). `Figures`
indexes the call's figures by their opening intervals. While a phrase is generated, its
`FigureLine` keeps the answer's own top line (seeded with the call's last notes, so the answer may
pick up where the call stopped) and adds log-odds to the note starts that continue one of the
call's figures from where the line stands. The figure comes back transposed to the line's pitch
(sequenced), on the model's rhythm and under the key mask: reused and varied, not copied.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from improv.phrase_shape import ONSET_TOLERANCE_BEATS
from improv.tokens import Note

FIGURE_INTERVALS = 3
GAIN_FIGURE = 4.0  # log-odds for the note that completes a figure whose opening the line just played
GAIN_STEP = 2.0  # for a note that continues one of the call's interval pairs (a figure's fragment)
MAX_RUN = 4  # intervals of the call in a row the line may replay; past that it must vary
TOP_LAST_SCALE = 3.0  # the gains on a chord call where the top note is a chord's last (low to high)
TOP_FIRST_SCALE = 1.5  # ... and where it is its first (high to low): under the chord's pull either way
LINE_SCALE = 3.0  # ... and where a melody model's line answers it, chords voiced under it (improv.voicing)
LINE_REPEATS = 2  # such a line's note struck again this many times in a row: a further repeat is not offered


def top_line(notes: Sequence[Note]) -> list[int]:
    """The top line's pitches: at each onset its highest new note, unless a higher note is still
    sounding from before (an inner voice moved under a held melody note). One sweep in time."""
    line: list[int] = []
    ordered = sorted(notes, key=lambda n: (n.onset_beats, -n.pitch))
    earlier: list[tuple[float, int]] = []  # (end, pitch) of notes started before the onset, maybe held
    i = j = 0
    while i < len(ordered):
        onset, top = ordered[i].onset_beats, ordered[i].pitch
        while i < len(ordered) and ordered[i].onset_beats - onset <= ONSET_TOLERANCE_BEATS:
            i += 1
        while j < len(ordered) and ordered[j].onset_beats < onset - ONSET_TOLERANCE_BEATS:
            earlier.append((ordered[j].onset_beats + ordered[j].duration_beats, ordered[j].pitch))
            j += 1
        earlier = [(end, pitch) for end, pitch in earlier if end > onset + ONSET_TOLERANCE_BEATS]
        if not earlier or top >= max(pitch for _, pitch in earlier):
            line.append(top)
    return line


def intervals(line: Sequence[int]) -> list[int]:
    return [b - a for a, b in zip(line, line[1:])]


class Figures:
    """The call's figures by opening: what interval followed two intervals, and one."""

    def __init__(self, call: Sequence[Note], on_id: np.ndarray, top_first: bool = False, as_line: bool = False) -> None:
        line = top_line(call)
        steps = intervals(line)
        self.steps = steps
        self.after_two: dict[tuple[int, int], list[int]] = {}  # opening -> where its next interval is
        self.after_one: dict[int, list[int]] = {}
        for i in range(1, len(steps)):
            self.after_one.setdefault(steps[i - 1], []).append(i)
        for i in range(2, len(steps)):
            self.after_two.setdefault((steps[i - 2], steps[i - 1]), []).append(i)
        self.seed = line[-FIGURE_INTERVALS:]
        self.voices = 1 if as_line else _voices(call)
        self.as_line = as_line  # a chord call answered by a line, chords voiced under it
        self.on_id = on_id  # (128,) token id of ON_p, -1 where p has none
        self.top_first = top_first  # the vocabulary writes a chord high to low (chord_order "down")

    @classmethod
    def of(cls, call: Sequence[Note], on_id: np.ndarray, top_first: bool = False,
           as_line: bool = False) -> Figures | None:
        """None when the call's top line is too short to hold a figure."""
        figures = cls(call, on_id, top_first, as_line)
        return figures if figures.after_two else None

    def line(self) -> FigureLine:
        return FigureLine(self)


class FigureLine:
    """One phrase's top line as it is generated, and the bonus it gives the next note start."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self.pitches: deque[int] = deque(figures.seed, maxlen=MAX_RUN + 1)
        self.onset_top: int | None = None  # the highest note started at the current onset

    def started(self, pitch: int) -> None:
        """A note starts at the current onset."""
        if self.onset_top is None or pitch > self.onset_top:
            self.onset_top = pitch

    def moved(self, held_above: bool) -> None:
        """Time moved on: the onset's top note joins the line, unless a note held from before
        sounds above it."""
        if self.onset_top is not None and not held_above:
            self.pitches.append(self.onset_top)
        self.onset_top = None

    def add_bonus(self, out: np.ndarray, sounding: int, highest: int | None) -> bool:
        """Add each continuing note's log-odds to `out` (V,); False when no figure continues.

        A note is offered only where the next one can be the top, above the `highest` of the
        `sounding` notes: written high to low, as an onset's first note; low to high, as the one
        that completes the call's number of voices."""
        line, figs = self.pitches, self.figures
        can_top = self.onset_top is None if figs.top_first else sounding + 1 >= figs.voices
        if len(line) < 2 or not can_top:
            return False
        last = line[-1] - line[-2]
        bonus: dict[int, float] = {}
        recent = intervals(list(line))
        scale = LINE_SCALE if figs.as_line else 1.0 if figs.voices == 1 else TOP_FIRST_SCALE if figs.top_first else TOP_LAST_SCALE
        if len(line) >= 3:
            self._weigh(bonus, figs.after_two.get((line[-2] - line[-3], last)), recent, scale * GAIN_FIGURE)
        self._weigh(bonus, figs.after_one.get(last), recent, scale * GAIN_STEP)
        floor = highest
        for step, gain in bonus.items():
            pitch = line[-1] + step
            if 0 <= pitch < 128 and figs.on_id[pitch] >= 0 and (floor is None or pitch > floor):
                out[figs.on_id[pitch]] += gain
        return bool(bonus)

    def _weigh(self, bonus: dict[int, float], at: list[int] | None, recent: list[int], gain: float) -> None:
        """Offer the interval at each of the call's positions `at`, unless taking it would replay
        more than MAX_RUN of the call's intervals in a row (or, for a line over voiced chords,
        strike a note a fourth time running: at its stronger gain a chorale's repeated notes stick);
        the most frequent gets `gain`, the others in proportion, and a larger offer for the same
        interval wins."""
        if not at:
            return
        steps = self.figures.steps
        repeating = self.figures.as_line and len(recent) >= LINE_REPEATS and not any(recent[-LINE_REPEATS:])
        counts = Counter(steps[i] for i in at if _run(steps, i, recent) < MAX_RUN and not (repeating and steps[i] == 0))
        top = max(counts.values(), default=0)
        for step, count in counts.items():
            bonus[step] = max(bonus.get(step, 0.0), gain * count / top)


def _run(steps: list[int], i: int, recent: list[int]) -> int:
    """How many intervals before the call's interval i the line just played as the call did."""
    n = 0
    while n < len(recent) and n < i and recent[-1 - n] == steps[i - 1 - n]:
        n += 1
    return n


def _voices(notes: Sequence[Note]) -> int:
    """The most notes of `notes` sounding just after one of their onsets. One sweep in time."""
    most, sounding = 1, []  # ends of the notes started so far that may still sound
    ordered = sorted(notes, key=lambda n: n.onset_beats)
    j = 0
    for n in ordered:
        t = n.onset_beats + ONSET_TOLERANCE_BEATS
        while j < len(ordered) and ordered[j].onset_beats <= t:
            sounding.append(ordered[j].onset_beats + ordered[j].duration_beats)
            j += 1
        sounding = [end for end in sounding if end > t]
        most = max(most, len(sounding))
    return most
