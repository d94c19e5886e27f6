"""`improv train`: thin; builds the configs and calls `training.train.train`."""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class ModelKind(str, Enum):
    lstm = "lstm"
    wavenet = "wavenet"


class KeyMode(str, Enum):
    none = "none"
    normalize = "normalize"
    augment = "augment"


class ChordOrder(str, Enum):
    up = "up"
    down = "down"


class Schedule(str, Enum):
    none = "none"
    cosine = "cosine"
    plateau = "plateau"


def command(
    model: Annotated[ModelKind, typer.Option(help="The model to train: an LSTM or a WaveNet.")] = ModelKind.lstm,
    data: Annotated[Optional[list[Path]], typer.Option(help="A MIDI file, a folder of them, or the JSB chorales archive (jsb_chorales.tgz); repeat to combine.")] = None,
    corpus: Annotated[Optional[list[str]], typer.Option(help="A corpus that ships inside music21, by name: bach (the chorales), essen, oneills, ryans, airds, palestrina, ...; an unknown name lists them all. Repeat to combine.")] = None,
    max_pieces: Annotated[Optional[int], typer.Option(help="Use at most this many pieces from each corpus (and from the --data files together), for quick runs.")] = None,
    key: Annotated[KeyMode, typer.Option(help="Leave keys alone, transpose every piece to C major / A minor, or add all 12 transpositions of the training pieces.")] = KeyMode.none,
    chord_order: Annotated[ChordOrder, typer.Option(help="The notes of a chord as tokens: low to high (up), or high to low (down: the model picks the top note, the melody, first and the harmony under it).")] = ChordOrder.up,
    min_count: Annotated[int, typer.Option(help="Drop pitch and velocity tokens seen fewer than this many times in the training split.")] = 0,
    epochs: Annotated[int, typer.Option(help="The most epochs to train (one epoch is one pass over the training windows).")] = 30,
    batch_size: Annotated[int, typer.Option(help="Windows per optimiser step (per process under torchrun); 0 picks about 4096 tokens per step for the LSTM and 8192 for the WaveNet.")] = 0,
    window: Annotated[int, typer.Option(help="Tokens per training window, the length trained with teacher forcing; 0 picks 128 for the LSTM and twice the receptive field for the WaveNet.")] = 0,
    stride: Annotated[int, typer.Option(help="Tokens between the starts of consecutive windows of a piece; 0 means the window length.")] = 0,
    lr: Annotated[float, typer.Option(help="The peak learning rate of AdamW.")] = 3e-3,
    schedule: Annotated[Schedule, typer.Option(help="The learning-rate schedule after warm-up: constant, cosine decay over all epochs, or halve when validation stalls.")] = Schedule.cosine,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation NLL; 0 never stops early.")] = 6,
    max_minutes: Annotated[float, typer.Option(help="Stop gracefully after this many minutes of wall-clock time, keeping the best weights; 0 means no limit.")] = 0.0,
    seed: Annotated[int, typer.Option(help="The random seed; the same seed gives the same run on CPU.")] = 0,
    device: Annotated[str, typer.Option(help="Where to train: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for PyTorch; use 1 per process under torchrun or on a busy machine.")] = 2,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly from its last.pt; its data and model settings win, and --epochs, --max-minutes, --patience, --device and --threads apply.")] = False,
    out: Annotated[Path, typer.Option(help="The run folder for config.json, metrics.json, loss.png, best.pt and last.pt.")] = Path("runs/default"),
    embed: Annotated[Optional[int], typer.Option(help="LSTM: the token embedding size [default: 64].")] = None,
    hidden: Annotated[Optional[int], typer.Option(help="LSTM: the hidden size of each layer [default: 256].")] = None,
    layers: Annotated[Optional[int], typer.Option(help="LSTM: the number of stacked layers [default: 2].")] = None,
    channels: Annotated[Optional[int], typer.Option(help="WaveNet: the residual channels [default: 64].")] = None,
    skip_channels: Annotated[Optional[int], typer.Option(help="WaveNet: the skip channels [default: 128].")] = None,
    dilation_cycle: Annotated[Optional[int], typer.Option("--dilation-cycle", "--wavenet-layers", help="WaveNet: layers per stack, with dilations 1, 2, 4, ... up to 2^(N-1) [default: 7].")] = None,
    stacks: Annotated[Optional[int], typer.Option(help="WaveNet: how many times the dilation cycle repeats [default: 2].")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="The dropout probability [default: 0.2 for the LSTM, 0 for the WaveNet].")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes that read and encode music files [default: the number of CPUs].")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train an LSTM or WaveNet on symbolic music; writes checkpoints, metrics.json and loss.png to --out."""
    from training.train import TrainConfig, train

    sizes = {"embed": embed, "hidden": hidden, "layers": layers, "channels": channels, "skip_channels": skip_channels,
             "dilation_cycle": dilation_cycle, "stacks": stacks, "dropout": dropout}
    config = TrainConfig(
        model=model.value, data=tuple(str(p) for p in data or ()), corpus=tuple(corpus or ()), max_pieces=max_pieces,
        key=key.value, min_count=min_count, chord_order=chord_order.value, epochs=epochs, batch_size=batch_size, window=window, stride=stride,
        lr=lr, schedule=schedule.value, patience=patience, max_minutes=max_minutes, seed=seed, device=device,
        threads=threads, workers=workers, out=str(out), show_progress=progress,
    )
    train(config, {k: v for k, v in sizes.items() if v is not None}, resume=resume, train_command=train_command())


def train_command() -> str:
    """The command line as typed, stored in the checkpoint (`python -m training.train` reads as `improv train`)."""
    args = sys.argv[1:]
    return "improv " + shlex.join(args if args[:1] == ["train"] else ["train", *args])
