"""DistributedDataParallel on CPU: 2 gloo processes under torchrun train on different shards of the
windows and end with identical weights; only rank 0 writes the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent("""
    import sys
    from training.dataset import synthetic_corpus
    from training.train import TrainConfig, train

    config = TrainConfig(model=sys.argv[2], epochs=2, batch_size=4, window=32, threads=1, warmup_steps=1,
                         out=sys.argv[1], show_progress=False)
    sizes = {"embed": 8, "hidden": 16} if sys.argv[2] == "lstm" else {"channels": 8, "skip_channels": 8, "dilation_cycle": 3}
    train(config, sizes, corpus=synthetic_corpus(10, 240, seed=2))
""")


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def check_ranks(out: Path) -> dict:
    ddp = json.loads((out / "ddp.json").read_text())
    assert ddp["world_size"] == 2
    r0, r1 = ddp["ranks"]
    first0, first1 = set(r0["first_epoch_windows"]), set(r1["first_epoch_windows"])
    # DistributedSampler pads an odd count by repeating one window; otherwise the shards are disjoint
    assert first0 and first1 and len(first0 & first1) <= 1, "ranks trained on overlapping shards"
    assert r0["windows_sha256"] != r1["windows_sha256"]
    assert r0["params_sha256"] == r1["params_sha256"], "ranks ended with different weights"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["test"]["nll"] is not None
    assert len(first0 | first1) == metrics["train_windows"]  # together: every window, once
    return ddp


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "wavenet"])
def test_two_cpu_ranks_share_the_work(kind, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    torchrun(str(script), str(out), kind)
    check_ranks(out)
    assert {"config.json", "metrics.json", "loss.png", "best.pt", "last.pt"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left by either rank


@pytest.mark.slow
def test_torchrun_module_entry_point(jsb_archive, tmp_path):
    """The documented command: torchrun ... -m training.train <improv train options>, on real data."""
    out = tmp_path / "jsb"
    torchrun("-m", "training.train", "--model", "lstm", "--data", str(jsb_archive), "--max-pieces", "4", "--epochs", "1",
             "--embed", "8", "--hidden", "16", "--window", "64", "--batch-size", "8", "--threads", "1",
             "--no-progress", "--out", str(out))
    check_ranks(out)
    from training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["train_command"].startswith("improv train --model lstm --data ")
    assert checkpoint["world_size"] == 2
