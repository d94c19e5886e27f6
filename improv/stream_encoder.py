"""Live events -> token ids the moment they arrive, in the order the model learned them.

`elapsed` is the time since the previous event in beats (from whatever clock is in charge). The
fractional remainder of each quantisation is carried over, so rounding never drifts.

The events of one tick (a chord's notes a few ms apart, in whatever order the fingers sent them;
a key released as the next is struck) are put in the vocabulary's canonical order, the order
`improv.tokens.notes_to_names` writes and the model was trained on: OFFs before ONs, pitches low
to high or high to low (`TokenConfig.chord_order`). Fed the other way, a model misreads the
chord (docs/LISTENING.md). An event that sorts before tokens already returned takes them back:
after each call `taken_back` says how many of the tokens returned before it are replaced by the
tokens it returns (the caller steps its model again from before them: `improv.context`). A tick
keeps at most `ONSET_MAX` events in order (bounded work); more start a new run. A pitch's events
after its note-on in the same tick (a note too short for a tick) come after the rest, in the
order they came. Each event carries a tag (the caller's: whose note it is) that its tokens keep.
"""

from __future__ import annotations

import bisect

from improv.errors import ModelError
from improv.tokens import Vocabulary, chord_rank, quantize, velocity_bin

ONSET_MAX = 12  # events of one tick put in order; a 13th starts a new run (never, from two hands)


def _order(event: tuple) -> tuple[int, int, int]:
    return event[0]


class StreamEncoder:
    """Encodes live events the moment they arrive; see the module docstring."""

    def __init__(self, vocab: Vocabulary) -> None:
        if vocab.config.scheme != "event":
            raise ModelError(f"the {vocab.config.scheme} token scheme is not streamable; use an event model")
        self.vocab = vocab
        self._residual_beats = 0.0
        self._vel_bin: int | None = None
        self._shift_ids = {k: vocab.id(f"SHIFT_{k}") for k in range(1, vocab.config.max_shift_ticks + 1)}
        self.onset: list[tuple[int, object]] = []  # this tick's (token, tag) so far, in canonical order
        self.new_onset = True  # the latest event began a new run of one tick's events
        self.taken_back = 0  # tokens returned before that the latest event's replace
        self._events: list[tuple] = []  # this tick's (order key, on, pitch, velocity, tag), sorted
        self._vel_bin_before: int | None = None  # the velocity bin before this tick's first event

    def event(self, elapsed_beats: float, on: bool, pitch: int, velocity: int = 0,
              tag: object = None) -> list[tuple[int, object]]:
        """One note-on or note-off: its (token, tag) pairs to follow what was returned before,
        less the last `taken_back` of those."""
        shifts = self._shift(elapsed_beats)
        if len(self._events) >= ONSET_MAX:
            self.seal()
        events = self._events
        self.new_onset, self.taken_back = not events, 0
        if not events:
            self._vel_bin_before = self._vel_bin
        rank = chord_rank(pitch, self.vocab.config)
        again = any(e[1] and e[2] == pitch for e in events)  # after its own note-on: as it came
        key = (2, rank, len(events)) if again else (int(on), rank, velocity if on else 0)
        entry = (key, on, pitch, velocity, tag)
        if not events or key >= events[-1][0]:  # in order already: as it comes
            events.append(entry)
            new = [(t, tag) for t in self._tokens(on, pitch, velocity)]
            self.onset += new
            return [(t, tag) for t in shifts] + new if shifts else new
        bisect.insort_right(events, entry, key=_order)
        self._vel_bin = self._vel_bin_before
        onset = [(t, e[4]) for e in events for t in self._tokens(e[1], e[2], e[3])]
        kept, before = 0, self.onset
        while kept < len(before) and before[kept] == onset[kept]:
            kept += 1
        self.onset, self.taken_back = onset, len(before) - kept
        return onset[kept:]

    def note_on(self, elapsed_beats: float, pitch: int, velocity: int) -> list[int]:
        """`event` for a note-on, tokens only."""
        return [t for t, _ in self.event(elapsed_beats, True, pitch, velocity)]

    def note_off(self, elapsed_beats: float, pitch: int) -> list[int]:
        """`event` for a note-off, tokens only."""
        return [t for t, _ in self.event(elapsed_beats, False, pitch)]

    def advance(self, elapsed_beats: float) -> list[int]:
        """Time passing with no event (e.g. the player's silence), as SHIFT tokens."""
        return self._shift(elapsed_beats)

    def seal(self) -> None:
        """What was encoded stays as it is: a later event of this tick comes after it."""
        if self._events:
            self._events, self.onset = [], []  # (new lists: a copy of this encoder may hold the old)

    def _tokens(self, on: bool, pitch: int, velocity: int) -> list[int]:
        if not on:
            return [self.vocab.id(f"OFF_{pitch}")]
        ids = []
        bins = self.vocab.config.velocity_bins
        if bins:
            b = velocity_bin(velocity, bins)
            if b != self._vel_bin:
                ids.append(self.vocab.id(f"VEL_{b}"))
                self._vel_bin = b
        ids.append(self.vocab.id(f"ON_{pitch}"))
        return ids

    def _shift(self, elapsed_beats: float) -> list[int]:
        cfg = self.vocab.config
        total = self._residual_beats + max(0.0, elapsed_beats)
        ticks = quantize(total * cfg.ticks_per_beat)
        self._residual_beats = total - ticks / cfg.ticks_per_beat
        if not ticks:
            return []
        self.seal()  # time moved: the tick before is over
        full, rest = divmod(ticks, cfg.max_shift_ticks)
        return [self._shift_ids[cfg.max_shift_ticks]] * full + ([self._shift_ids[rest]] if rest else [])
