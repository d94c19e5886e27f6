"""The training loop: teacher forcing, cross-entropy, AdamW, checkpoints, early stopping, DDP.

`train` loads the data, builds the model and a `Trainer`, and runs epochs: shuffled windows
(`training.dataset`), then validation; the best weights go to ``best.pt``, every epoch to
``last.pt``, and at the end the best weights are scored on the test split (``metrics.json``).
Valid and test run every piece whole from its first token, as the exported step model runs live.
Under ``torchrun`` each rank trains its own shard in DDP and rank 0 writes; ``python -m
training.train ARGS`` is ``improv train ARGS`` for that (docs/TRAINING.md).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from improv.errors import ConfigError, DataError
from improv.tokens import TokenConfig
from training import distributed
from training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from training.dataset import IGNORE, frame_size, make_windows, piece_batches
from training.metrics import Metrics
from training.models import MODELS, build_model, count_parameters

EVAL_METHOD = "whole pieces, one forward pass each from the first token; NLL pooled over all tokens"


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block ends, then deliver it, so that an epoch's best
    weights, history and checkpoints are committed together or not at all (docs/TRAINING.md)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run except the model's sizes; stored in the checkpoint and config.json."""

    model: str = "lstm"
    data: tuple[str, ...] = ()
    corpus: tuple[str, ...] = ()
    max_pieces: int | None = None
    key: str = "none"  # none | normalize | augment (done by training.data)
    min_count: int = 0
    chord_order: str = "up"  # up | down: a chord's notes low to high or high to low (improv.tokens)
    split_seed: int = 0
    epochs: int = 30
    batch_size: int = 0  # windows per optimizer step (per rank under DDP); 0: about AUTO_BATCH_TOKENS tokens
    window: int = 0  # tokens per training window; 0: 128 (LSTM), 2 x receptive field (WaveNet)
    stride: int = 0  # tokens between window starts; 0 means the window length (no overlap)
    lr: float = 3e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    schedule: str = "cosine"  # none | cosine (to lr * min_lr_ratio) | plateau (halve when valid stalls)
    warmup_steps: int = 20
    min_lr_ratio: float = 0.05
    patience: int = 6  # epochs without a better valid NLL before stopping; 0 = never
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 2  # torch intra-op threads
    workers: int | None = None  # data loading processes (training.data)
    out: str = "runs/default"
    eval_tokens: int = 65536  # padded tokens per evaluation batch
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; use one of {', '.join(MODELS)}")
        if self.schedule not in ("none", "cosine", "plateau"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; use none, cosine or plateau")
        if min(self.epochs, self.threads) < 1 or min(self.batch_size, self.window) < 0 or self.lr <= 0:
            raise ConfigError("epochs, threads and lr must be positive, batch size and window >= 0 (0 = automatic)")


AUTO_BATCH_TOKENS = {"lstm": 4096, "wavenet": 8192}  # tokens per step when --batch-size is 0
RESUME_OVERRIDES = ("epochs", "max_minutes", "patience", "device", "threads", "show_progress", "workers")


def train(config: TrainConfig, model_options: dict | None = None, *, corpus=None, resume: bool = False,
          train_command: str = "", console: Console | None = None,
          on_step: Callable[[Trainer], None] | None = None) -> dict:
    """Train one model; returns the final metrics (also written to ``<out>/metrics.json``).

    `corpus` (anything with vocab / splits / data_hash / description, like
    `training.data.EncodedCorpus`) skips data loading. `resume` continues from ``<out>/last.pt``
    exactly: its data, model and optimiser settings win, only `RESUME_OVERRIDES` come from `config`.
    `on_step(trainer)` runs after every optimizer step.
    """
    last = Path(config.out) / "last.pt"
    if resume and not last.is_file():
        raise ConfigError(f"--resume: {last} does not exist; run without --resume to start, or pick the run's --out")
    checkpoint = load_checkpoint(last) if resume else None
    if checkpoint is not None:
        saved = {**checkpoint["train_config"], **{k: getattr(config, k) for k in RESUME_OVERRIDES}}
        config = TrainConfig(**{**saved, "data": tuple(saved["data"]), "corpus": tuple(saved["corpus"])})
        train_command = checkpoint.get("train_command", train_command)
    device = _pick_device(config.device)
    info = distributed.setup(device)
    if info.device.startswith("cuda"):
        device = info.device
        torch.cuda.set_device(device)
    torch.set_num_threads(config.threads)
    console = console or Console(stderr=True)
    finished = False
    try:
        corpus = corpus or _load_corpus(config, info, console)
        trainer = Trainer(config, corpus, model_options or {}, checkpoint, info, device, train_command, console)
        trainer.on_step = on_step
        result = trainer.run()
        finished = True
        return result
    finally:
        distributed.cleanup(info, finished)


def _pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu")
    return name


def _load_corpus(config: TrainConfig, info: distributed.Dist, console: Console):
    try:
        from training.data import load_dataset
    except ImportError as err:
        raise DataError(f"the data loader is not available ({err}); check the training/ install") from err
    kwargs = dict(data=config.data, corpus=config.corpus, max_pieces=config.max_pieces, key=config.key,
                  min_count=config.min_count, split_seed=config.split_seed, workers=config.workers,
                  token_config=None if config.chord_order == "up" else TokenConfig(chord_order=config.chord_order))
    if not info.is_main:
        distributed.barrier(info)  # rank 0 fills the encoding cache first
    corpus = load_dataset(**kwargs, console=console, show_progress=config.show_progress and info.is_main)
    if info.is_main:
        distributed.barrier(info)
    return corpus


def model_config_for(kind: str, vocab_size: int, options: dict):
    config_cls = MODELS[kind][0]
    fields = {f.name for f in dataclasses.fields(config_cls)} - {"vocab_size"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} do not apply to a {kind} model; it takes {', '.join(sorted(fields))}")
    try:
        return config_cls(vocab_size=vocab_size, **options)
    except ValueError as err:
        raise ConfigError(f"{kind} model: {err}") from err


def resolve_automatic(config: TrainConfig, receptive_field: int | None) -> TrainConfig:
    """Fill in window and batch size left at 0: a WaveNet window holds its receptive field twice."""
    window = config.window or (128 if receptive_field is None else 64 * math.ceil(2 * receptive_field / 64))
    batch = config.batch_size or max(1, round(AUTO_BATCH_TOKENS.get(config.model, 4096) / window))
    return dataclasses.replace(config, window=window, batch_size=batch)


def nll_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, V) logits, (B, T) targets -> summed NLL (nats), correct argmax count, target count."""
    flat = logits.reshape(-1, logits.size(-1))  # (B*T, V)
    y = targets.reshape(-1)
    nll = F.cross_entropy(flat, y, ignore_index=IGNORE, reduction="sum")
    mask = y != IGNORE
    with torch.no_grad():
        correct = (flat.argmax(-1) == y)[mask].sum()
    return nll, correct, mask.sum()


@torch.no_grad()
def whole_piece_metrics(model: nn.Module, pieces, device: str, max_tokens: int = 65536) -> Metrics:
    """`Metrics` of whole pieces, each in one forward pass from its first token."""
    was_training = model.training
    model.eval()
    nll, correct, count = 0.0, 0, 0
    for x, y in piece_batches(pieces, max_tokens):
        n, c, k = nll_stats(model(x.to(device)), y.to(device))
        nll, correct, count = nll + n.item(), correct + int(c), count + int(k)
    model.train(was_training)
    return Metrics.pooled(nll, correct, count)


def parameter_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Trainer:
    """One run's model, optimizer, windows and loop state; `run` is the epoch loop."""

    def __init__(self, config: TrainConfig, corpus, model_options: dict, checkpoint: dict | None,
                 info: distributed.Dist, device: str, train_command: str, console: Console) -> None:
        self.config, self.corpus, self.info, self.device, self.console = config, corpus, info, device, console
        self.vocab, self.out, self.train_command = corpus.vocab, Path(config.out), train_command
        self.on_step: Callable[[Trainer], None] | None = None
        _check_resume(checkpoint, corpus)
        torch.manual_seed(config.seed)  # same seed -> same initial weights (on every rank)
        saved = checkpoint["model_config"] if checkpoint else None
        self.model_config = (MODELS[config.model][0](**saved) if saved
                             else model_config_for(config.model, len(self.vocab), model_options))
        self.model = build_model(config.model, self.model_config).to(device)
        self.config = config = resolve_automatic(config, self.model.receptive_field)
        stride = config.stride or config.window
        self.windows = make_windows(corpus.splits["train"], config.window, stride, frame_size(self.vocab))
        if len(self.windows) == 0:
            raise DataError("the training split has no piece of 2 or more tokens; add data or raise --max-pieces")
        self.inputs, self.targets = self.windows.inputs.to(device), self.windows.targets.to(device)
        self.optimizer = _adamw(self.model, config)
        self.sample = sample_tokens(corpus.splits)
        self.sampler = DistributedSampler(range(len(self.windows)), num_replicas=info.world, rank=info.rank,
                                          shuffle=True, seed=config.seed)
        self.batches_per_epoch = math.ceil(len(self.sampler) / config.batch_size)
        # loop state, all of it in the checkpoint
        self.epoch, self.step, self.lr_scale = 0, 0, 1.0
        self.best_nll, self.best_epoch, self.bad_epochs = math.inf, 0, 0
        self.history: list[dict] = []
        self.partial: dict | None = None  # sums of the epoch in progress (saved on Ctrl-C)
        self.best_state: dict | None = None
        self.wall_offset = 0.0  # seconds trained before a resume
        self.run_start: float | None = None  # monotonic start of this process's run (time-based cosine)
        self.seen, self.first_shard = hashlib.sha256(), None  # windows this rank trained on
        if info.enabled:
            torch.manual_seed(config.seed + info.rank)  # different dropout masks per rank
        if checkpoint is not None:
            self._restore(checkpoint)
        self.net = self.model
        if info.enabled:
            self.net = DistributedDataParallel(self.model, device_ids=[info.local_rank] if device.startswith("cuda") else None)

    # ----------------------------------------------------------------------------- the loop

    def run(self) -> dict:
        self._announce()
        self._write_json("config.json", self._describe())
        start, stopped = time.monotonic(), "epochs"
        self.run_start = start
        try:
            with self._progress() as self.progress:
                while self.epoch < self.config.epochs:
                    complete = self._train_epoch(start)
                    self._end_epoch(complete, start)
                    if not complete or self._over_budget(start):
                        stopped = "time"
                        break
                    if self.config.patience and self.bad_epochs >= self.config.patience:
                        stopped = "patience"
                        break
        except KeyboardInterrupt:
            if self.info.is_main:
                save_checkpoint(self._checkpoint([rng_state()]), self.out / "last.pt")
                self._write_json("metrics.json", self._metrics("interrupted", None))
                self.console.print(f"[yellow]interrupted: saved {self.out / 'last.pt'}; continue with --resume")
            raise
        self._record_ddp()
        return self._finish(stopped)

    def _train_epoch(self, start: float) -> bool:
        """Train one epoch (or its rest, after a mid-epoch resume); False if the time budget ran out."""
        self.sampler.set_epoch(self.epoch)
        shard = torch.tensor(list(self.sampler), dtype=torch.int64)  # this rank's windows, shuffled
        self.seen.update(shard.numpy().tobytes())
        self.first_shard = shard.tolist() if self.first_shard is None else self.first_shard
        batches = shard.split(self.config.batch_size)
        self.partial = self.partial or {"batches": 0, "nll": 0.0, "correct": 0, "tokens": 0, "seconds": 0.0}
        self.model.train()
        task = self.progress.add_task("", total=len(batches), completed=self.partial["batches"],
                                      epoch=self.epoch + 1, loss=float("nan"), tps=0.0)
        t0 = time.monotonic() - self.partial["seconds"]
        for b in range(self.partial["batches"], len(batches)):
            loss = self._train_step(batches[b].to(self.device))
            self.partial["batches"], self.partial["seconds"] = b + 1, time.monotonic() - t0
            tps = self.partial["tokens"] * self.info.world / max(self.partial["seconds"], 1e-9)
            self.progress.update(task, advance=1, loss=loss, tps=tps)
            if self.on_step is not None:
                self.on_step(self)
            if self.config.max_minutes and self._over_budget(start):
                return False
        return True

    def _train_step(self, idx: torch.Tensor) -> float:
        x, y = self.inputs[idx], self.targets[idx]  # (B, T) each
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        nll, correct, count = nll_stats(self.net(x), y)  # logits (B, T, V)
        loss = nll / count.clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.partial["nll"] += nll.item()
        self.partial["correct"] += int(correct)
        self.partial["tokens"] += int(count)
        return loss.item()

    def _lr(self) -> float:
        cfg = self.config
        scale = self.lr_scale * min(1.0, (self.step + 1) / max(1, cfg.warmup_steps))
        if cfg.schedule == "cosine":
            progress = min(1.0, max(self.step / max(1, self.batches_per_epoch * cfg.epochs), self._time_progress()))
            scale *= cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.lr * scale

    def _time_progress(self) -> float:
        """Fraction of --max-minutes used, so a time-boxed run anneals fully before it stops.
        Off under DDP: ranks must agree on the learning rate, and their clocks do not."""
        if not self.config.max_minutes or self.info.enabled or self.run_start is None:
            return 0.0
        return (time.monotonic() - self.run_start) / (60 * self.config.max_minutes)

    def _over_budget(self, start: float) -> bool:
        late = bool(self.config.max_minutes) and time.monotonic() - start > 60 * self.config.max_minutes
        return distributed.any_rank(self.info, late)

    def _end_epoch(self, complete: bool, start: float) -> None:
        """Validate, keep the best weights, save last.pt (and best.pt), report."""
        p, cfg = self.partial, self.config
        valid = whole_piece_metrics(self.model, self.corpus.splits.get("valid", []), self.device, cfg.eval_tokens)
        train = Metrics.pooled(*distributed.all_sum(self.info, [p["nll"], p["correct"], p["tokens"]]))  # all shards
        score = valid.nll if valid.nll is not None else train.nll
        with _interrupt_after():  # a Ctrl-C here waits for last.pt: best weights, history, checkpoint agree
            self._commit_epoch(complete, start, train, valid, score)

    def _commit_epoch(self, complete: bool, start: float, train: Metrics, valid: Metrics, score: float) -> None:
        p, cfg = self.partial, self.config
        improved = score < self.best_nll
        if improved:
            self.best_nll, self.best_epoch, self.bad_epochs = score, self.epoch + 1, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad_epochs += 1
            self.lr_scale *= 0.5 if cfg.schedule == "plateau" else 1.0
        self.epoch += 1
        self.history.append({
            "epoch": self.epoch, "complete": complete, **train.as_dict("train_"), **valid.as_dict("valid_"),
            "tokens_per_s": train.tokens / max(p["seconds"], 1e-9), "epoch_s": p["seconds"],
            "wall_s": self.wall_offset + time.monotonic() - start, "lr": self._lr(), "step": self.step,
        })
        self.partial = None
        rngs = distributed.gather(self.info, rng_state())
        if self.info.is_main:
            checkpoint = self._checkpoint(rngs)
            save_checkpoint(checkpoint, self.out / "last.pt")
            if improved:
                save_checkpoint(checkpoint, self.out / "best.pt")
            self._write_json("metrics.json", self._metrics("running", None))
            self._report_epoch(improved)

    def _finish(self, stopped: str) -> dict:
        """Score the best weights on the test split; write metrics.json, loss.png, final checkpoints."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        test = whole_piece_metrics(self.model, self.corpus.splits.get("test", []), self.device, self.config.eval_tokens)
        metrics = self._metrics(stopped, test)
        if self.info.is_main:
            for name in ("best.pt", "last.pt"):
                path = self.out / name
                if path.exists():
                    checkpoint = load_checkpoint(path)
                    checkpoint["metrics"] = {**checkpoint["metrics"], **test.as_dict("test_")}
                    save_checkpoint(checkpoint, path)
            self._write_json("metrics.json", metrics)
            _plot_losses(self.history, self.out / "loss.png")
            self._report_end(stopped, test)
        return metrics

    # ----------------------------------------------------------------------------- state

    def _checkpoint(self, rngs: list) -> dict:
        """The checkpoint dict (checkpoint.py documents the keys); plain types and tensors only."""
        return {
            "model_kind": self.config.model, "model_config": dataclasses.asdict(self.model_config),
            "vocabulary": self.vocab.to_dict(), "train_config": dataclasses.asdict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
            "best_valid_nll": self.best_nll, "metrics": self._summary(), "train_command": self.train_command,
            "data_hash": self.corpus.data_hash, "rng": {**rngs[0], "ranks": rngs}, "history": self.history,
            "partial": self.partial, "lr_scale": self.lr_scale, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "world_size": self.info.world,
            "sample_tokens": self.sample,
        }

    def _restore(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.epoch, self.step, self.lr_scale = checkpoint["epoch"], checkpoint["step"], checkpoint["lr_scale"]
        self.best_nll, self.best_epoch = checkpoint["best_valid_nll"], checkpoint["best_epoch"]
        self.bad_epochs, self.history = checkpoint["bad_epochs"], list(checkpoint["history"])
        self.partial = checkpoint.get("partial")
        self.wall_offset = self.history[-1]["wall_s"] if self.history else 0.0
        ranks = checkpoint["rng"].get("ranks") or [checkpoint["rng"]]
        set_rng_state(ranks[self.info.rank] if self.info.rank < len(ranks) else ranks[0])
        best = self.out / "best.pt"
        if best.exists():
            self.best_state = {k: v.to(self.device) for k, v in load_checkpoint(best)["state_dict"].items()}

    def _summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        best = self.history[self.best_epoch - 1] if 0 < self.best_epoch <= len(self.history) else {}
        return {"epoch": self.epoch, "best_epoch": self.best_epoch, "train_nll": last.get("train_nll"),
                "valid_nll": best.get("valid_nll"), "valid_ppl": best.get("valid_ppl"), "valid_acc": best.get("valid_acc")}

    def _metrics(self, stopped: str, test: Metrics | None) -> dict:
        splits = self.corpus.splits
        return {
            "model": self.config.model, "parameters": count_parameters(self.model),
            "receptive_field": self.model.receptive_field, "vocab_size": len(self.vocab),
            "tokens": {k: int(sum(len(p) for p in v)) for k, v in splits.items()},
            "pieces": {k: len(v) for k, v in splits.items()}, "train_windows": len(self.windows),
            "world_size": self.info.world, "history": self.history, "best_epoch": self.best_epoch,
            "best_valid_nll": None if math.isinf(self.best_nll) else self.best_nll, "stopped": stopped,
            "eval_method": EVAL_METHOD, "test": None if test is None else test.as_dict(),
            "train_command": self.train_command, "data_hash": self.corpus.data_hash,
        }

    def _describe(self) -> dict:
        return {"model_kind": self.config.model, "model_config": dataclasses.asdict(self.model_config),
                "train_config": dataclasses.asdict(self.config), "train_command": self.train_command,
                "data_hash": self.corpus.data_hash, "data": self.corpus.description,
                "vocab_size": len(self.vocab), "parameters": count_parameters(self.model),
                "receptive_field": self.model.receptive_field, "world_size": self.info.world}

    def _record_ddp(self) -> None:
        """Under DDP: which windows each rank trained on and a hash of its final weights -> ddp.json."""
        if not self.info.enabled:
            return
        mine = {"rank": self.info.rank, "first_epoch_windows": self.first_shard,
                "windows_sha256": self.seen.hexdigest(), "params_sha256": parameter_hash(self.model)}
        ranks = distributed.gather(self.info, mine)
        self._write_json("ddp.json", {"world_size": self.info.world, "ranks": ranks})

    # ----------------------------------------------------------------------------- output

    def _write_json(self, name: str, payload: dict) -> None:
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
            tmp.replace(self.out / name)

    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                        TimeElapsedColumn(), console=self.console,
                        disable=not (self.info.is_main and self.config.show_progress))

    def _announce(self) -> None:
        if not self.info.is_main:
            return
        c, splits = self.console, self.corpus.splits
        c.print(f"[bold]data[/]: {self.corpus.description}")
        c.print(f"  data hash {self.corpus.data_hash}; vocabulary {len(self.vocab)} tokens ({self.vocab.config.scheme})")
        for name in ("train", "valid", "test"):
            pieces = splits.get(name, [])
            c.print(f"  {name:5s} {len(pieces):6d} pieces {sum(len(p) for p in pieces):10,d} tokens")
        skipped = getattr(self.corpus, "skipped", [])
        if skipped:
            c.print(f"  [yellow]skipped {len(skipped)} files[/] (first: {skipped[0][0]}: {skipped[0][1]})")
        rf = self.model.receptive_field
        c.print(f"[bold]model[/]: {self.config.model} {dataclasses.asdict(self.model_config)}")
        c.print(f"  {count_parameters(self.model):,d} parameters; receptive field "
                f"{'unbounded (recurrent)' if rf is None else f'{rf} tokens'}")
        c.print(f"[bold]training[/]: {len(self.windows):,d} windows of {self.config.window} tokens, "
                f"{self.batches_per_epoch} batches/epoch x {self.info.world} process(es) on {self.device}, "
                f"{torch.get_num_threads()} threads; output {self.out}")

    def _report_epoch(self, improved: bool) -> None:
        r = self.history[-1]
        valid = "n/a" if r["valid_nll"] is None else f"{r['valid_nll']:.4f} (ppl {r['valid_ppl']:.2f}, acc {r['valid_acc']:.3f})"
        star = " [green]* best[/]" if improved else ""
        self.console.print(f"epoch {r['epoch']}: train nll {r['train_nll']:.4f}, valid nll {valid}, "
                           f"{r['tokens_per_s']:,.0f} tok/s, {r['wall_s']:.0f} s{star}")

    def _report_end(self, stopped: str, test: Metrics) -> None:
        result = "no test pieces" if test.nll is None else (
            f"test nll {test.nll:.4f} nats/token (ppl {test.ppl:.3f}, acc {test.acc:.3f}, {test.tokens:,d} tokens)")
        self.console.print(f"[bold]done[/] ({stopped}): best epoch {self.best_epoch}; {result}; wrote {self.out}")


def _adamw(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def _check_resume(checkpoint: dict | None, corpus) -> None:
    if checkpoint is None:
        return
    if checkpoint.get("data_hash") != corpus.data_hash:
        raise ConfigError("--resume: the data differ from the checkpoint's (data_hash); resume with the same data")
    if checkpoint["vocabulary"]["names"] != list(corpus.vocab.names):
        raise ConfigError("--resume: the vocabulary differs from the checkpoint's; resume with the same data options")


def sample_tokens(splits: dict, n: int = 1024) -> list[int]:
    """Up to n real tokens (test pieces first) for `improv export` to replay through the ONNX graph."""
    out: list[int] = []
    for name in ("test", "valid", "train"):
        for piece in splits.get(name, []):
            out += [int(t) for t in piece[: n - len(out)]]
            if len(out) >= n:
                return out
    return out


def _plot_losses(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas by default

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_nll"] for r in history], "o-", label="train")
    valid = [(r["epoch"], r["valid_nll"]) for r in history if r["valid_nll"] is not None]
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


if __name__ == "__main__":  # torchrun -m training.train ... == improv train ...
    import sys

    from improv.cli import app

    app(["train", *sys.argv[1:]], prog_name="improv")
