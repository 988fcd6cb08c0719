"""Process-group primitives that any layer may use (rank, world size, collectives),
below the engine, the methods and the evaluator; outside a process group each
degrades to the single-process case. Starting the group is the engine's
(:func:`vireid.engine.distributed.init_distributed`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_gather_object", "all_reduce_mean", "barrier", "broadcast_object",
           "collective_device", "dist_info", "get_rank", "get_world_size", "is_distributed", "is_main_process"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Rank of this process (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, the process that writes logs and checkpoints."""
    return get_rank() == 0


def dist_info() -> DistInfo:
    """Rank, world size and local rank of this process."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0
    return DistInfo(get_rank(), get_world_size(), local_rank)


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def collective_device() -> torch.device:
    """Device that collectives of this backend accept (CUDA for NCCL)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor:
    """Mean of ``value`` over ranks (a copy; the input is left unchanged)."""
    tensor = torch.as_tensor(value, dtype=torch.float64 if not torch.is_tensor(value) else None)
    if not is_distributed():
        return tensor.clone()
    original_device = tensor.device
    work = tensor.detach().to(collective_device(), copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    work /= dist.get_world_size()
    return work.to(original_device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; only between our own processes)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=collective_device())
    return holder[0]


def all_gather_object(obj: Any) -> list[Any]:
    """The ``obj`` of every rank, in rank order."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
