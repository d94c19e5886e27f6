"""Per-piece token arrays -> (input, target) windows for teacher forcing, and whole-piece batches
for evaluation.

A window starting at s is ``input = tokens[s : s + T]``, ``target = tokens[s + 1 : s + T + 1]``.
Windows never cross pieces. Starts step by `stride`; one last window is added so the end of every
piece is covered; a piece shorter than T + 1 gives one window whose missing targets are
`IGNORE` (-100, skipped by the loss). For the grid scheme every start is a multiple of
`grid_voices`, so position t of a window is always the same voice of a frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from improv.tokens import TokenConfig, Vocabulary

IGNORE = -100  # cross_entropy's ignore_index


def frame_size(vocab: Vocabulary) -> int:
    """Tokens per grid frame (windows start on frame boundaries), 1 for the event scheme."""
    return vocab.config.grid_voices if vocab.config.scheme == "grid" else 1


def window_starts(n_tokens: int, window: int, stride: int, align: int = 1) -> list[int]:
    """Start positions covering every target of one piece of `n_tokens` tokens."""
    last = n_tokens - 1 - window  # the latest start with a full window
    if last <= 0:
        return [0] if n_tokens >= 2 else []
    stride = max(align, stride - stride % align)
    starts = list(range(0, last + 1, stride))
    final = last - last % align
    if final > starts[-1]:
        starts.append(final)
    if final + window < n_tokens - 1:  # alignment left the last targets out: one padded window
        starts.append(final + align)
    return starts


@dataclass
class Windows:
    """N windows of T tokens, as int64 tensors ready for the model."""

    inputs: torch.Tensor  # (N, T)
    targets: torch.Tensor  # (N, T), IGNORE where the piece ended
    piece: torch.Tensor  # (N,) index of the piece each window comes from
    start: torch.Tensor  # (N,) its start offset in that piece

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


def make_windows(pieces: Sequence[np.ndarray], window: int, stride: int | None = None, align: int = 1) -> Windows:
    """Cut every piece into windows (see module docstring); stride defaults to the window length."""
    stride = stride or window
    rows, piece_ids, starts = [], [], []
    for i, tokens in enumerate(pieces):
        tokens = np.asarray(tokens, dtype=np.int64)
        for s in window_starts(len(tokens), window, stride, align):
            chunk = np.full(window + 1, IGNORE, dtype=np.int64)
            part = tokens[s : s + window + 1]
            chunk[: len(part)] = part
            rows.append(chunk)
            piece_ids.append(i)
            starts.append(s)
    if not rows:
        empty = torch.zeros(0, window, dtype=torch.int64)
        return Windows(empty, empty.clone(), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    grid = torch.from_numpy(np.stack(rows))  # (N, T + 1)
    inputs = grid[:, :-1].clone()
    inputs[inputs == IGNORE] = 0  # padding after the piece's end: causal, so it changes nothing before
    return Windows(inputs, grid[:, 1:].clone(), torch.tensor(piece_ids), torch.tensor(starts))


def piece_batches(pieces: Sequence[np.ndarray], max_tokens: int = 65536) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Whole pieces, shortest first, padded into batches of at most `max_tokens` input tokens.

    Yields (inputs (B, T), targets (B, T)) with IGNORE targets past each piece's end; every token
    but a piece's first is a target exactly once, predicted from the whole piece before it.
    """
    order = sorted((i for i, p in enumerate(pieces) if len(p) >= 2), key=lambda i: len(pieces[i]))
    batch: list[np.ndarray] = []
    for i in order:
        longest = len(pieces[i]) - 1
        if batch and (len(batch) + 1) * longest > max_tokens:
            yield _pad(batch)
            batch = []
        batch.append(np.asarray(pieces[i], dtype=np.int64))
    if batch:
        yield _pad(batch)


def _pad(batch: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in batch) - 1
    inputs = np.zeros((len(batch), width), dtype=np.int64)
    targets = np.full((len(batch), width), IGNORE, dtype=np.int64)
    for row, p in enumerate(batch):
        inputs[row, : len(p) - 1] = p[:-1]
        targets[row, : len(p) - 1] = p[1:]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


@dataclass
class TokenCorpus:
    """The fields of `training.data.EncodedCorpus` the trainer uses; for tests and synthetic runs."""

    vocab: Vocabulary
    splits: dict[str, list[np.ndarray]]
    names: dict = field(default_factory=dict)
    data_hash: str = "sha256:synthetic"
    skipped: list = field(default_factory=list)
    description: str = "synthetic token sequences"


def synthetic_corpus(pieces: int = 24, length: int = 400, *, seed: int = 0, scheme: str = "grid") -> TokenCorpus:
    """Learnable fake data: pieces drawn from a random sparse first-order Markov chain.

    ``scheme="grid"`` uses a 4-voice grid vocabulary over MIDI 60..71 (13 tokens); ``"event"`` the
    event vocabulary over the same pitches.
    """
    config = TokenConfig(scheme=scheme, pitch_min=60, pitch_max=71, max_shift_ticks=4)
    vocab = Vocabulary(config)
    rng = np.random.default_rng(seed)
    v = len(vocab)
    successors = np.stack([rng.choice(v, size=3, replace=False) for _ in range(v)])  # (V, 3)
    seqs = []
    for _ in range(pieces):
        seq = np.empty(length, dtype=np.int32)
        seq[0] = rng.integers(v)
        picks = rng.choice(3, size=length, p=[0.7, 0.2, 0.1])
        for t in range(1, length):
            seq[t] = successors[seq[t - 1], picks[t]]
        seqs.append(seq)
    n_valid = max(1, pieces // 6)
    splits = {"train": seqs[: pieces - 2 * n_valid], "valid": seqs[pieces - 2 * n_valid : pieces - n_valid],
              "test": seqs[pieces - n_valid :]}
    return TokenCorpus(vocab, splits, description=f"synthetic: {pieces} Markov pieces of {length} tokens (seed {seed})",
                       data_hash=f"sha256:synthetic-{pieces}-{length}-{seed}-{scheme}")
