"""Fakes over mocks: an output port that records what it was sent, and a tiny numpy step model with
the `StepModel` interface (vocab, new_state, step, state.copy) whose answers look musical enough
(time moves, notes start and end) and are deterministic."""

from __future__ import annotations

from dataclasses import dataclass

import mido
import numpy as np

from improv.clock import ManualClock
from improv.pairing import NotePairer
from improv.tokens import TokenConfig, Vocabulary

FAKE_CONFIG = TokenConfig(pitch_min=36, pitch_max=96)


class FakeMidiOut:
    """A port: `send` records ``(t, msg)`` at the clock's time. Optionally fails on send."""

    def __init__(self, clock=None, fail: bool = False) -> None:
        self.clock = clock or ManualClock()
        self.sent: list[tuple[float, mido.Message]] = []
        self.fail = fail
        self.closed = False

    def send(self, msg: mido.Message) -> None:
        if self.fail:
            raise OSError("port went away")
        self.sent.append((self.clock.now(), msg))

    def close(self) -> None:
        self.closed = True

    @property
    def messages(self) -> list[mido.Message]:
        return [m for _, m in self.sent]

    def of_type(self, *types: str) -> list[tuple[float, mido.Message]]:
        return [(t, m) for t, m in self.sent if m.type in types]

    def note_ons(self) -> list[tuple[float, mido.Message]]:
        return [(t, m) for t, m in self.sent if m.type == "note_on" and m.velocity > 0]

    def sounding(self) -> set[tuple[int, int]]:
        """The notes still waiting for a note-off of their own: every note-on needs one (an All
        Notes Off is a safety net, not a release: a synth may ignore it)."""
        pairer = NotePairer(restrike_ends=False)
        for t, m in self.sent:
            if m.type in ("note_on", "note_off"):
                pairer.feed(t, m)
        return {(n.channel, n.pitch) for n in pairer.hanging}


@dataclass
class FakeState:
    last: int = 0
    position: int = 0

    def copy(self) -> FakeState:
        return FakeState(self.last, self.position)

    def copy_into(self, other: FakeState) -> None:
        other.last, other.position = self.last, self.position


class FakeModel:
    """Logits = a fixed bias (short SHIFTs and mid-range notes likely) + a seeded random table
    row for the previous token. Counts its steps."""

    kind = "lstm"
    name = "fake"
    meta: dict = {}

    def __init__(self, seed: int = 0, vocab: Vocabulary | None = None) -> None:
        self.vocab = vocab or Vocabulary(FAKE_CONFIG)
        size = len(self.vocab)
        rng = np.random.default_rng(seed)
        self.table = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
        self.bias = np.full(size, -2.0, dtype=np.float32)
        for i, name in enumerate(self.vocab.names):
            kind, _, value = name.partition("_")
            if kind == "SHIFT" and int(value) in (3, 6, 12):
                self.bias[i] = 1.5
            elif kind == "ON" and 55 <= int(value) <= 79:
                self.bias[i] = 0.0
            elif kind == "OFF":
                self.bias[i] = 1.0
        self.steps = 0
        self.fed: list[int] = []

    def new_state(self) -> FakeState:
        return FakeState()

    def step(self, token_id: int, state: FakeState) -> np.ndarray:
        self.steps += 1
        self.fed.append(int(token_id))
        state.last, state.position = int(token_id), state.position + 1
        return self.bias + self.table[int(token_id)]


class BrokenModel(FakeModel):
    """Fails after `ok_steps` steps, like a model whose session died."""

    def __init__(self, ok_steps: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ok_steps = ok_steps

    def step(self, token_id: int, state: FakeState) -> np.ndarray:
        if self.steps >= self.ok_steps:
            raise RuntimeError("onnxruntime: session failed")
        return super().step(token_id, state)
