"""Models (shapes, causality, receptive field, step == sequence) and training windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from improv.tokens import TokenConfig, Vocabulary
from training.dataset import IGNORE, frame_size, make_windows, piece_batches, synthetic_corpus, window_starts
from training.models import MODELS, LSTMConfig, WaveNetConfig, build_model, count_parameters, make_config

V = 23
TINY = {
    "lstm": LSTMConfig(vocab_size=V, embed=8, hidden=16, layers=2, dropout=0.1),
    "wavenet": WaveNetConfig(vocab_size=V, channels=8, skip_channels=12, dilation_cycle=3, stacks=2, dropout=0.1),
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(kind, TINY[kind]).eval()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_forward_shape(kind):
    logits = tiny(kind)(torch.randint(0, V, (3, 17)))
    assert logits.shape == (3, 17, V) and logits.dtype == torch.float32


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_causal(kind):
    model = tiny(kind)
    tokens = torch.randint(0, V, (1, 40))
    changed = tokens.clone()
    changed[0, 25] = (changed[0, 25] + 1) % V
    a, b = model(tokens), model(changed)
    assert torch.equal(a[0, :25], b[0, :25])
    assert not torch.allclose(a[0, 25], b[0, 25])


def test_wavenet_receptive_field():
    model = tiny("wavenet")
    rf = model.receptive_field
    assert rf == 1 + sum([1, 2, 4] * 2) == 15
    tokens = torch.randint(0, V, (1, 50))
    t = 45
    for back, matters in ((rf, False), (rf - 1, True)):
        changed = tokens.clone()
        changed[0, t - back] = (changed[0, t - back] + 1) % V
        differs = not torch.allclose(model(tokens)[0, t], model(changed)[0, t])
        assert differs == matters, f"token {back} back {'should' if matters else 'should not'} matter"


def test_dilations():
    cfg = WaveNetConfig(dilation_cycle=7, stacks=2)
    assert cfg.dilations == [1, 2, 4, 8, 16, 32, 64] * 2
    assert cfg.receptive_field == 255


def stream_torch(model, tokens: torch.Tensor) -> torch.Tensor:
    """The step module run token by token in PyTorch, state outside (ring buffers for WaveNet)."""
    step = model.step_module()
    state = list(step.example_inputs()[1:])
    dilations = model.config.dilations if model.kind == "wavenet" else []
    rings = [torch.zeros(d, model.config.channels) for d in dilations]
    out = []
    for t, token in enumerate(tokens.tolist()):
        x = torch.tensor([token])
        if rings:
            logits, current = step(x, torch.stack([r[t % d] for r, d in zip(rings, dilations)]))
            for r, d, row in zip(rings, dilations, current):
                r[t % d] = row
        else:
            logits, *state = step(x, *state)
        out.append(logits[0])
    return torch.stack(out)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_step_matches_sequence(kind):
    model = tiny(kind)
    tokens = torch.randint(0, V, (120,))
    with torch.no_grad():
        full = model(tokens[None])[0]
        streamed = stream_torch(model, tokens)
    assert (full - streamed).abs().max() < 1e-5


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_config_rebuilds_same_architecture(kind):
    model = tiny(kind)
    again = build_model(kind, dataclasses.asdict(model.config))
    again.load_state_dict(model.state_dict())
    assert count_parameters(again) == count_parameters(model)


def test_registry_rejects_unknown():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer", {})
    with pytest.raises(TypeError):
        make_config("lstm", channels=3)


def test_default_sizes_stay_small():
    for kind in MODELS:
        model = build_model(kind, make_config(kind, vocab_size=300))
        assert count_parameters(model) * 4 < 20 * 2**20


# ---------------------------------------------------------------------------- windows


def test_window_starts_cover_every_target():
    for n in (2, 5, 257, 258, 300, 1001):
        for align in (1, 4):
            starts = window_starts(n, 256, 100, align)
            covered = set()
            for s in starts:
                assert s % align == 0
                covered |= set(range(s + 1, min(n, s + 257)))
            assert covered == set(range(1, n))


def test_windows_shift_by_one():
    pieces = [np.arange(30, dtype=np.int32), np.arange(100, 105, dtype=np.int32)]
    w = make_windows(pieces, window=8, stride=8)
    assert w.inputs.shape == w.targets.shape and w.inputs.shape[1] == 8
    real = w.targets != IGNORE
    assert torch.equal(w.targets[real], (w.inputs + 1)[real])
    assert w.start[w.piece == 0].tolist() == [0, 8, 16, 21]  # the last window ends on the piece's end
    assert w.n_targets == 32 + 4
    short = w.piece == 1  # shorter than a window: one padded window
    assert short.sum() == 1 and (w.targets[short] == IGNORE).sum() == 4


def test_grid_windows_start_on_frames():
    corpus = synthetic_corpus(8, 203, scheme="grid")
    assert frame_size(corpus.vocab) == 4
    w = make_windows(corpus.splits["train"], window=32, stride=30, align=frame_size(corpus.vocab))
    assert (w.start % 4 == 0).all()
    assert frame_size(Vocabulary(TokenConfig())) == 1


def test_piece_batches_count_each_target_once():
    pieces = [np.arange(n, dtype=np.int32) % V for n in (5, 50, 7, 1, 33)]
    total = 0
    for x, y in piece_batches(pieces, max_tokens=60):
        assert x.shape == y.shape and x.shape[0] * x.shape[1] <= max(60, x.shape[1])
        total += int((y != IGNORE).sum())
    assert total == sum(len(p) - 1 for p in pieces if len(p) >= 2)


def test_synthetic_corpus_is_deterministic():
    a, b = synthetic_corpus(6, 50, seed=3), synthetic_corpus(6, 50, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.splits["train"], b.splits["train"]))
    assert set(a.splits) == {"train", "valid", "test"} and all(a.splits.values())
