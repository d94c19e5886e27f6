"""What each token id of a vocabulary does, as arrays: the one reading of token names at run time.

Built once per vocabulary (`split_name` per name) so the live path looks facts up by id: its kind
(shift, note on, note off, velocity, grid pitch, special), its value (ticks, pitch, velocity bin),
the id of ``ON_p`` / ``OFF_p`` per pitch, and the pitch a token starts (``ON_p`` or ``P_p``).
"""

from __future__ import annotations

import numpy as np

from improv.tokens import Vocabulary, split_name

OTHER, SHIFT, ON, OFF, VEL, PITCH = range(6)
_KINDS = {"SHIFT": SHIFT, "ON": ON, "OFF": OFF, "VEL": VEL, "P": PITCH}


class TokenFacts:
    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.tpb = vocab.config.ticks_per_beat
        self.bins = vocab.config.velocity_bins
        size = len(vocab)
        self.kind = np.zeros(size, dtype=np.int8)  # (V,) one of OTHER, SHIFT, ON, OFF, VEL, PITCH
        self.value = np.zeros(size, dtype=np.int16)  # (V,) ticks, pitch or velocity bin
        for i, name in enumerate(vocab.names):
            head, value = split_name(name)
            if value is not None and head in _KINDS:
                self.kind[i], self.value[i] = _KINDS[head], value
        self.is_shift = self.kind == SHIFT
        self.is_on = self.kind == ON
        self.starts = self.is_on | (self.kind == VEL)  # tokens that begin a note (VEL precedes an ON)
        self.off_ids = np.flatnonzero(self.kind == OFF)
        # the pitch a token starts, ON_p (event) or P_p (grid); -1 for everything else
        self.start_pitch = np.where(self.is_on | (self.kind == PITCH), self.value, -1).astype(np.int16)
        self.on_id = self._ids_by_pitch(ON)  # (128,) id of ON_p, -1 where p is not in the vocabulary
        self.off_id = self._ids_by_pitch(OFF)
        self.base = np.array([n not in ("BOS", "UNK") for n in vocab.names], dtype=bool)  # music, not specials
        self.bos = vocab.id("BOS") if "BOS" in vocab else 0

    def _ids_by_pitch(self, kind: int) -> np.ndarray:
        ids = np.full(128, -1, dtype=np.int64)
        for i in np.flatnonzero(self.kind == kind):
            if 0 <= self.value[i] < 128:
                ids[self.value[i]] = i
        return ids
