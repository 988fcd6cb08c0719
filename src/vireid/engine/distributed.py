"""Multi-process training helpers (``torchrun``: NCCL on GPU, gloo on CPU).

The engine does not wrap the method in ``DistributedDataParallel``: a method
computes its losses inside ``stage.step``, which calls several of its
submodules, so there is no single ``forward`` to wrap. Instead

- every parameter and buffer is broadcast from rank 0 when training starts
  (:func:`broadcast_module`), so all ranks begin from the same weights;
- after ``backward`` the gradients of the stage's trainable parameters are
  averaged across ranks by :class:`GradientAverager` (flattened into a few
  buckets, one ``all_reduce`` each), so every rank takes the same optimiser
  step and the weights stay identical;
- BatchNorm running statistics are *not* synchronised: each rank keeps the
  statistics of its own batches (as DDP without SyncBatchNorm does) and
  rank 0's are the ones saved in checkpoints.

Outside a process group every helper degrades to the single-process case. The
primitives (rank, world size, collectives) live in :mod:`vireid.comm`, below the
engine, so that methods use them without importing it; they are re-exported here.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from vireid.comm import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_object,
    collective_device,
    dist_info,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
)

__all__ = [
    "DistInfo",
    "GradientAverager",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "cleanup_distributed",
    "dist_info",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
]

DEFAULT_BUCKET_MB = 25.0
"""Gradient bucket size, the default ``bucket_cap_mb`` of ``DistributedDataParallel``."""


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise RuntimeError(f"environment variable {name} is not set (launch with torchrun)")
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(
    backend: str | None = None, timeout_minutes: float = 30.0
) -> DistInfo:
    """Join the process group described by torchrun's environment.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR`` and
    ``MASTER_PORT``, used by the ``env://`` rendezvous). Without ``WORLD_SIZE``
    or with ``WORLD_SIZE=1`` nothing is initialised and the single-process
    :class:`DistInfo` is returned. The backend defaults to NCCL when CUDA is
    available (and the current CUDA device is set to ``LOCAL_RANK``), else gloo.
    Calling it again in an initialised group just returns the info.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    if dist.is_initialized():
        return dist_info()
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() and backend in (None, "nccl")
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    return DistInfo(rank, world_size, local_rank)


def cleanup_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s values."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=src)


class GradientAverager:
    """Averages the gradients of a fixed list of parameters across ranks.

    The parameters are split into buckets of at most ``bucket_mb`` MiB (one dtype
    and device per bucket, parameter order kept). :meth:`average` first reduces
    one small flag vector (which parameters have a gradient on any rank, and
    whether any rank reports a problem, e.g. a non-finite loss), then, unless a
    problem was reported, flattens each bucket, ``all_reduce``\\ s it and divides
    by the world size. A parameter that received a gradient on some ranks only
    gets zeros on the others before the sum (its average is then the sum over
    the ranks that used it, divided by the world size, as in DDP); one that no
    rank used keeps ``grad=None`` everywhere, so the optimiser skips it as it
    would in a single process.
    """

    def __init__(self, params: Iterable[nn.Parameter], bucket_mb: float = DEFAULT_BUCKET_MB):
        self.params: list[nn.Parameter] = list(params)
        if bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be > 0, got {bucket_mb}")
        limit = int(bucket_mb * 1024 * 1024)
        self.buckets: list[list[int]] = []
        open_buckets: dict[tuple[torch.dtype, torch.device], tuple[list[int], int]] = {}
        for index, param in enumerate(self.params):
            key = (param.dtype, param.device)
            members, size = open_buckets.get(key, ([], 0))
            nbytes = param.numel() * param.element_size()
            if members and size + nbytes > limit:
                self.buckets.append(members)
                members, size = [], 0
            members.append(index)
            open_buckets[key] = (members, size + nbytes)
        self.buckets.extend(members for members, _ in open_buckets.values() if members)

    def average(self, problem: bool = False) -> bool:
        """Average the gradients in place; return True if any rank reported ``problem``
        (the gradients are then left untouched, and every rank gets True)."""
        if not is_distributed():
            return problem
        world_size = dist.get_world_size()
        device = collective_device()
        flags = torch.tensor(
            [p.grad is not None for p in self.params] + [problem],
            dtype=torch.float32,
            device=device,
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if bool(flags[-1].item()):
            return True
        used = flags[:-1].bool().tolist()
        for bucket in self.buckets:
            members = [i for i in bucket if used[i]]
            if not members:
                continue
            params = [self.params[i] for i in members]
            for param in params:
                if param.grad is not None and param.grad.is_sparse:
                    raise RuntimeError("sparse gradients are not supported by GradientAverager")
            flat = torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in params
                ]
            )
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= world_size
            for param, chunk in zip(params, flat.split([p.numel() for p in params])):
                if param.grad is None:
                    param.grad = chunk.view_as(param).clone()
                else:
                    param.grad.copy_(chunk.view_as(param))
        return False

