"""DistributedDataParallel under torchrun: process group setup and the few collectives the loop needs.

Run ``OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m training.train --model lstm ...``
(the arguments of `improv train`). torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them
everything here is a no-op and the loop runs as one process. On CPU the backend is gloo, on CUDA nccl.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collective tensors live (cpu for gloo, cuda:N for nccl)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Dist:
    """Join the process group torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local_rank, f"cuda:{local_rank}" if cuda else "cpu")


def cleanup(info: Dist, finished: bool = False) -> None:
    """Destroy the process group; after a run every rank finished, first wait for all of them
    (gloo's threads aborted a rank that tore down while a peer still worked, docs/TRAINING.md).
    After a failure, no wait: a peer may never arrive."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def any_rank(info: Dist, flag: bool) -> bool:
    """True on every rank if `flag` is true on any (e.g. the wall-clock budget ran out on one)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_sum(info: Dist, values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (e.g. NLL and token counts of every rank's shard)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather(info: Dist, obj: object) -> list[object]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out
