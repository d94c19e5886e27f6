"""The duet's reaction: which note answers a struck key at once, with no model step.

The note is drawn from the distribution the context already holds (the music up to the struck
key), masked to note starts in range and key, off the pitches to avoid (the keys held, improv's
sounding notes), within the polyphony, and consonant with every key held (else with the struck
key; else any note the mask allows), so the model picks, of the notes it expects next, one that
sounds with the player's (`improv.consonance`). `choose` does all of that at the note. `prepare`,
between events, does the masks, the softmax, the nucleus and the cumulative weights ahead for
each of the 12 pitch classes a key may strike; the note-on then costs one uniform draw and one
search (`draw_ready`), or on JACK none at all (`arm`: the reflex draws from the same table in
the JACK cycle, `improv.reflex`). Another event or a tick since makes the table stale (`invalidate`),
and the note takes the slow way.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from improv.consonance import CONSONANT_WITH, consonant_classes
from improv.phrase import MaskRules


class Reaction:
    """The reaction's note choice for one performer (its token facts, masks and sampler)."""

    def __init__(self, performer) -> None:
        self.performer = performer
        self.ready = False  # `draw_ready` may answer the next note-on
        self.tables = 0  # tables prepared so far (a new one each time something changed)
        self.reflex = None  # improv.reflex.Reflex where there is one (improv's JACK clients)
        self._key: tuple | None = None  # what the table was prepared from
        self._facts, self._size = None, -1
        self._fit()

    def _fit(self) -> None:
        """Buffers of the vocabulary's size (again after a model switch)."""
        facts = self.performer.facts
        size = len(facts.kind)
        if size == self._size and facts is self._facts:
            return
        self._facts, self._size = facts, size
        self._mask = np.empty(size, dtype=bool)  # (V,) the allowed note starts
        self._pitch_class = facts.value % 12  # (V,) of each token's value (a pitch, for ON_p)
        self._weights = np.empty(size)  # (V,) the prepared distribution
        self._rows = np.empty((12, size), dtype=bool)  # (12, V) the notes for a struck key of class c
        self._cum = np.empty((12, size))  # (12, V) cumulative weights of row c
        self._key = None
        self.ready = False

    def invalidate(self, disarm: bool = True) -> None:
        """The table is stale; the reflex's too, unless `disarm` is False: a tick, whose few
        milliseconds a note-on is better answered at once from the table before it than after
        it from the one after it (`prepare` replaces the table the reflex holds at its end)."""
        self.ready = False
        if self.reflex is not None and disarm:
            self.reflex.disarm()

    def arm(self, velocity_scale: float, input_channel: int | None, channel: int, victim: int,
            victim_until_s: float) -> None:
        """With a reflex (`improv.reflex`, on JACK): the table `prepare` left is drawn from in the
        JACK cycle of the next note-on (on `input_channel`, 1..16 or None: any), answered on
        `channel` at the player's velocity x `velocity_scale`, after letting `victim` go (-1: none)
        if the note-on comes before `victim_until_s`."""
        if self.reflex is None:
            return
        if not self.ready:
            self.reflex.disarm()
            return
        listen = None if input_channel is None else input_channel - 1
        self.reflex.arm(self, velocity_scale, listen, channel, victim, victim_until_s, self.performer.sampler.rng)

    def choose(self, logits: np.ndarray, rules: MaskRules, held: Collection[int], avoid: Collection[int],
               together: int, struck: int) -> int | None:
        """The note for key `struck` (among the player's keys `held`; `avoid`: improv's own
        pitches), or None if the rules allow none."""
        self._fit()
        mask = self._allowed(rules, (*held, *avoid), together)
        if not mask.any():
            return None
        self._consonant_rows(mask, held)
        return int(self._facts.value[self.performer.sampler.sample(logits, self._rows[struck % 12])])

    def prepare(self, logits_fn, rules: MaskRules, held: tuple[int, ...], avoid: tuple[int, ...],
                together: int, version: tuple) -> None:
        """The table for the next note-on, struck while `held` are held: `logits_fn()` is called
        only if something in `version` (the context's steps, the settings) or the rest changed."""
        self._fit()
        key = (version, rules, held, avoid, together)
        if key == self._key:
            self.ready = True
            return
        self._key, self.ready = key, False
        mask = self._allowed(rules, (*avoid, *held), together)
        if not self.performer.sampler.distribution(logits_fn(), mask, self._weights):
            return
        self._consonant_rows(mask, held)
        np.cumsum(self._rows * self._weights, axis=1, out=self._cum)
        self.tables += 1
        self.ready = True

    def table(self) -> tuple[np.ndarray, object]:
        """The prepared table as `draw_ready` searches it: ((12, V) cumulative weights, row c for a
        key of pitch class c struck; the token facts)."""
        return self._cum, self._facts

    def draw_ready(self, struck: int) -> int | None:
        """The note for key `struck` from the prepared table (spent by this call), or None: the
        table is stale, or none of its notes is consonant and in the nucleus. One uniform draw
        and one search of the class's cumulative weights, stepping over the struck key itself."""
        if not self.ready:
            return None
        self.ready = False
        cum = self._cum[struck % 12]
        token = self._facts.on_id[struck] if 0 <= struck < 128 else -1
        below = cum[token - 1] if token > 0 else 0.0
        skip = cum[token] - below if token >= 0 else 0.0
        left = cum[-1] - skip
        if not left > 0:
            return None
        u = self.performer.sampler.rng.random() * left
        if token >= 0 and u >= below:
            u += skip
        index = min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)
        return int(self._facts.value[index]) if index != token and self._facts.is_on[index] else None

    def _consonant_rows(self, mask: np.ndarray, held: Collection[int]) -> None:
        """Row c of `_rows`, for a key of pitch class c struck: of the notes `mask` allows, those
        consonant with every key `held` and the struck one; if none is, those consonant with the
        struck key; if none is, `mask` as it is."""
        both = CONSONANT_WITH & consonant_classes(held)  # (12, 12): class c struck -> the classes allowed
        rows = self._rows
        np.logical_and(both[:, self._pitch_class], mask, out=rows)
        alone = ~rows.any(axis=1)  # nothing consonant with every key: with the struck one only
        if alone.any():
            rows[alone] = CONSONANT_WITH[alone][:, self._pitch_class] & mask
            rows[~rows.any(axis=1)] = mask  # still nothing: any note the mask allows

    def _allowed(self, rules: MaskRules, avoid: Collection[int], together: int) -> np.ndarray:
        """Note starts (ON_p) in range and key, within the polyphony (`together` other notes of
        improv's sound with it), on no pitch of `avoid`. Into a buffer reused for every call."""
        t, mask = self._facts, self._mask
        allowed = self.performer.masks.allowed(pitch_range=(rules.pitch_lo, rules.pitch_hi),
                                               pitch_classes=rules.pitch_classes, sounding=together,
                                               max_polyphony=rules.max_polyphony)
        np.logical_and(allowed, t.is_on, out=mask)
        for pitch in avoid:
            if 0 <= pitch < 128 and t.on_id[pitch] >= 0:
                mask[t.on_id[pitch]] = False
        return mask
