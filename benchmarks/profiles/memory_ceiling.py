"""How much of a model's NLL a session memory can remove, the shipped one and stronger ones: second
halves of held-out pieces (as `improv bench --only music` scores them) by the model alone, issue
14's reference (a fixed 50/50 mix with the memory), improv's adaptive blend, that blend with an
exact-repeat expert and with per-kind viewpoints added, three other mixtures, and two per-token
bounds (each token scored by whichever predictor gave it the most). The table in
docs/LISTENING.md comes from

    IMPROV_CACHE=~/cache .venv/bin/python -m benchmarks.profiles.memory_ceiling \
        --case folk-lstm:oneills --case irish-lstm:oneills --case bach-lstm:oneills --case bach-lstm:bach

Everything but `Shipped` is an experiment here (Python, slow); improv ships its own memory and blend.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.profiles.memory_order import case_arguments, cases
from improv.blend import PRIOR_DEEP, PRIOR_SHALLOW, SHARE, Blend
from improv.context import ModelContext, TimedModel
from improv.memory import INTERVAL_MAX, INTERVALS, Counts, SessionMemory
from improv.settings import ListenSettings
from improv.tokens import split_name

MIN_MATCH = 6  # tokens (two notes of a line) the repeat expert needs before it predicts
FLOOR = 1e-12


def fresh_memory(names, order: int) -> SessionMemory:
    """A fresh session memory as the bench's has it (the default forgetting)."""
    return SessionMemory(names, order, ListenSettings().half_life_tokens)


def streams(model, pieces):
    """Per piece: (tokens, (n, V) the model's log-probabilities before each, the second half's first index)."""
    for piece in pieces:
        context = ModelContext(TimedModel(model))
        start = 1 if len(piece) and int(piece[0]) == context.bos else 0
        tokens, logp = [], []
        for i in range(start, len(piece)):
            z = context.logits.astype(np.float64)
            z -= z.max()
            logp.append(z - math.log(np.exp(z).sum()))
            tokens.append(int(piece[i]))
            context.hear(int(piece[i]))
        yield tokens, np.array(logp), max(0, len(piece) // 2 - start)


class Repeat:
    """The latest earlier occurrence of the last `MIN_MATCH` tokens, followed while it keeps
    matching (a match model, as in PPM* and the PAQ compressors): it predicts one token, right
    `confidence` of the time (its hit rate so far at this match length)."""

    def __init__(self) -> None:
        self.history: list[int] = []
        self.seen: dict[tuple, int] = {}
        self.at, self.length = -1, 0
        self.hits: dict[int, tuple[int, int]] = {}  # match length's bucket -> (hits + 1, guesses + 2)

    @property
    def predicted(self) -> int:
        return self.history[self.at] if self.at >= 0 else -1

    @property
    def bucket(self) -> int:
        return 0 if self.at < 0 else min(1 + int(math.log2(self.length)), 7)

    @property
    def confidence(self) -> float:
        hits, n = self.hits.get(self.bucket, (1, 2))
        return hits / n

    def observe(self, token: int) -> None:
        h = self.history
        if self.at >= 0:
            hits, n = self.hits.get(self.bucket, (1, 2))
            self.hits[self.bucket] = (hits + (h[self.at] == token), n + 1)
        if self.at >= 0 and h[self.at] == token:
            self.at, self.length = self.at + 1, self.length + 1
        else:
            self.at, self.length = -1, 0
        h.append(token)
        if len(h) < MIN_MATCH:
            return
        key = tuple(h[-MIN_MATCH:])
        if self.at < 0 and key in self.seen:
            self.at, self.length = self.seen[key], MIN_MATCH
            back = self.at - 1 - self.length  # how far back the match goes
            while self.length < 64 and back >= 0 and h[back] == h[-1 - self.length]:
                self.length, back = self.length + 1, back - 1
        self.seen[key] = len(h)


class Viewpoints:
    """The shipped memory, with its ON and SHIFT tokens' shares re-predicted half from a viewpoint
    of their own (Conklin and Witten's multiple viewpoints): pitches from the previous pitches and
    intervals alone, durations from the previous durations alone (the line's other tokens skipped)."""

    def __init__(self, names, order: int, view_order: int = 5) -> None:
        self.memory = fresh_memory(names, order)
        parts = [split_name(n) for n in names]
        self.on = np.flatnonzero([k == "ON" and v is not None for k, v in parts])
        self.shift = np.flatnonzero([k == "SHIFT" and v is not None for k, v in parts])
        self.pitch = np.array([parts[t][1] for t in self.on])
        self.shift_index = {int(t): i for i, t in enumerate(self.shift)}
        self.on_index = {int(t): i for i, t in enumerate(self.on)}
        self.pitches, self.intervals, self.rhythm = (Counts(n, view_order, 0, 10**6)
                                                     for n in (128, INTERVALS, len(self.shift)))
        self.ctx = ([], [], [])  # the previous pitches, intervals, durations (as ids)
        self.last = 60

    def predict(self) -> tuple[np.ndarray, int]:
        p, depth = self.memory.predict()
        p = p.copy()
        on = self.pitches.predict(self.ctx[0])[0][self.pitch]
        interval = np.clip(self.pitch - self.last, -INTERVAL_MAX, INTERVAL_MAX) + INTERVAL_MAX
        step = self.intervals.predict(self.ctx[1])[0][interval]
        view = 0.5 * on / on.sum() + 0.5 * step / step.sum()
        p[self.on] = 0.5 * p[self.on] + 0.5 * p[self.on].sum() * view
        p[self.shift] = 0.5 * p[self.shift] + 0.5 * p[self.shift].sum() * self.rhythm.predict(self.ctx[2])[0]
        return p, depth

    def observe(self, token: int) -> None:
        self.memory.observe(token)
        if token in self.on_index:
            pitch = int(self.pitch[self.on_index[token]])
            step = max(-INTERVAL_MAX, min(INTERVAL_MAX, pitch - self.last)) + INTERVAL_MAX
            for counts, ctx, value in ((self.pitches, self.ctx[0], pitch), (self.intervals, self.ctx[1], step)):
                counts.observe(ctx, value, 1.0)
                ctx.append(value)
            self.last = pitch
        elif token in self.shift_index:
            self.rhythm.observe(self.ctx[2], self.shift_index[token], 1.0)
            self.ctx[2].append(self.shift_index[token])


class Mixture:
    """improv's blend (a Bayesian mixture with a fixed share, one weight set per match depth) over
    the model, a memory and, if `repeat`, the repeat expert (weights per depth and match length)."""

    def __init__(self, names, order: int, memory=None, repeat: bool = False, fixed: float | None = None,
                 by_kind: bool = False) -> None:
        self.memory = memory or fresh_memory(names, order)
        self.repeat = Repeat() if repeat else None
        self.order, self.fixed, self.weights = order, fixed, {}
        self.kinds = [split_name(n)[0] for n in names] if by_kind else None  # weights per previous token's kind too
        self.previous = ""

    def _w(self, depth: int, bucket: int) -> np.ndarray:
        if self.fixed is not None:
            return np.array([1.0 - self.fixed, self.fixed, 0.0])
        key = (depth, bucket, self.previous)
        if key not in self.weights:
            model = np.interp(depth, [0, self.order], [PRIOR_SHALLOW, PRIOR_DEEP])
            self.weights[key] = np.array([0.7 * model, 0.7 * (1 - model), 0.3]) if bucket else \
                np.array([model, 1 - model, 0.0])
        return self.weights[key]

    def score(self, logp: np.ndarray) -> np.ndarray:
        p_memory, depth = self.memory.predict()
        guess = self.repeat.predicted if self.repeat else -1
        bucket = self.repeat.bucket if guess >= 0 else 0
        w = self._w(depth, bucket)
        p = w[0] * np.exp(logp) + w[1] * p_memory
        if guess >= 0:
            p[guess] += w[2]
        self._seen = (np.exp(logp), p_memory.copy(), depth, guess, bucket)
        return np.log(np.maximum(p, FLOOR))

    def learn(self, token: int) -> None:
        p_model, p_memory, depth, guess, bucket = self._seen
        if self.fixed is None:
            a = self._w(depth, bucket) * [p_model[token], p_memory[token], float(guess == token)]
            if a.sum() > 0:
                n = 3 if bucket else 2
                a /= a.sum()
                a[:n] = (1 - SHARE) * a[:n] + SHARE / n
                self.weights[depth, bucket, self.previous] = a
        self.memory.observe(token)
        if self.repeat:
            self.repeat.observe(token)
        if self.kinds:
            self.previous = self.kinds[token]


class Geometric:
    """Logistic mixing (PAQ's mixer over whole distributions): log p = sum of w_i log p_i, normalised,
    the weights per match depth and match length learned online by gradient on the log loss,
    starting from the model alone."""

    def __init__(self, names, order: int, rate: float = 0.03) -> None:
        self.memory, self.repeat, self.rate = fresh_memory(names, order), Repeat(), rate
        self.size, self.weights = len(names), {}

    def score(self, logp: np.ndarray) -> np.ndarray:
        p_memory, depth = self.memory.predict()
        guess, bucket = self.repeat.predicted, self.repeat.bucket
        repeat = np.zeros(self.size)
        if guess >= 0:  # its hit rate so far at this match length, the rest spread evenly
            repeat[:] = math.log((1 - self.repeat.confidence) / (self.size - 1))
            repeat[guess] = math.log(self.repeat.confidence)
        x = np.stack([logp, np.log(np.maximum(p_memory, 1e-9)), repeat])  # (3, V)
        w = self.weights.setdefault((depth, bucket), np.array([1.0, 0.0, 0.0]))
        z = w @ x
        z -= z.max()
        z -= math.log(np.exp(z).sum())
        self._seen = (x, z, (depth, bucket))
        return z

    def learn(self, token: int) -> None:
        x, z, key = self._seen
        self.weights[key] = self.weights[key] + self.rate * (x[:, token] - x @ np.exp(z))
        self.memory.observe(token)
        self.repeat.observe(token)


class Shipped:
    """improv's own memory and blend, as `training.evaluate.adaptive_metrics` runs them; with
    `bias_rate`, the model's log-probabilities first moved by a bias learned online (the simplest
    dynamic evaluation: the output layer's bias alone)."""

    def __init__(self, names, order: int, bias_rate: float = 0.0) -> None:
        self.memory, self.blend = fresh_memory(names, order), Blend(order, None)
        self.bias, self.bias_rate = np.zeros(len(names)), bias_rate

    def score(self, logp: np.ndarray) -> np.ndarray:
        if self.bias_rate:
            logp = logp + self.bias
            logp -= logp.max()
            logp -= math.log(np.exp(logp).sum())
        p, depth = self.memory.predict()
        self._logp = logp
        return self.blend.mix(logp, p, depth).copy()

    def learn(self, token: int) -> None:
        if self.bias_rate:
            self.bias -= self.bias_rate * np.exp(self._logp)
            self.bias[token] += self.bias_rate
        p, depth = self.memory.prob(token)
        self.blend.learn(self._logp, token, p, depth)
        self.memory.observe(token)


class Bound:
    """Each token scored by whichever of the model, the memory (and the repeat expert, at its
    hit rate so far for that match length) gave it the most: no mixture does better."""

    def __init__(self, names, order: int, repeat: bool) -> None:
        self.memory, self.repeat = fresh_memory(names, order), Repeat() if repeat else None

    def score(self, logp: np.ndarray) -> np.ndarray:
        p = np.maximum(np.exp(logp), self.memory.predict()[0])
        if self.repeat and self.repeat.predicted >= 0:
            guess = self.repeat.predicted
            p[guess] = max(p[guess], self.repeat.confidence)
        return np.log(np.maximum(p, FLOOR))  # (not normalised: per token, the best any gave)

    def learn(self, token: int) -> None:
        self.memory.observe(token)
        if self.repeat:
            self.repeat.observe(token)


ROWS = {
    "model alone": None,
    "issue 14's reference: a fixed 50/50 mix, order 4": lambda v: Mixture(v, 4, fixed=0.5),
    "improv's adaptive blend, order 4 (shipped)": lambda v: Shipped(v, 4),
    "+ the repeat expert": lambda v: Mixture(v, 4, repeat=True),
    "+ viewpoints": lambda v: Mixture(v, 4, memory=Viewpoints(v, 4)),
    "+ both, order 6": lambda v: Mixture(v, 6, memory=Viewpoints(v, 6), repeat=True),
    "the blend's weights per previous token's kind too": lambda v: Mixture(v, 4, by_kind=True),
    "an online bias on the model's logits, then the blend": lambda v: Shipped(v, 4, bias_rate=0.1),
    "logistic mixing of model, memory and repeat": lambda v: Geometric(v, 4),
    "bound: best of model and memory per token": lambda v: Bound(v, 4, False),
    "bound: best of model, memory and repeat per token": lambda v: Bound(v, 4, True),
}


def second_half_nll(data, make) -> float:
    total = count = 0.0
    for tokens, logp, half in data:
        scorer = make() if make else None
        for i, token in enumerate(tokens):
            z = scorer.score(logp[i]) if scorer else logp[i]
            if i >= half:
                total -= z[token]
                count += 1
            if scorer:
                scorer.learn(token)
    return total / count


def repeat_coverage(data) -> tuple[float, float]:
    """(the share of second-half tokens the repeat expert predicts, the share of those it gets right)."""
    guessed = right = count = 0
    for tokens, _, half in data:
        repeat = Repeat()
        for i, token in enumerate(tokens):
            if i >= half:
                count += 1
                guessed += repeat.predicted >= 0
                right += repeat.predicted == token
            repeat.observe(token)
    return guessed / count, right / max(guessed, 1)


def main(argv: list[str] | None = None) -> None:
    for name, corpus, model, pieces in cases(case_arguments(__doc__.splitlines()[0]).parse_args(argv)):
        data = list(streams(model, pieces))
        names = model.vocab.names
        alone = second_half_nll(data, None)
        print(f"{name} on {corpus} (NLL nats/token, adapt_gain)", flush=True)
        for label, make in ROWS.items():
            nll = second_half_nll(data, make and (lambda make=make: make(names)))
            print(f"  {label:52s} {nll:.3f}  {1 - nll / alone:+.3f}", flush=True)
        covered, right = repeat_coverage(data)
        print(f"  the repeat expert predicts {covered:.0%} of the tokens, {right:.0%} of those right", flush=True)


if __name__ == "__main__":
    main()
