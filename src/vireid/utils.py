"""Small helpers shared by the engine, the evaluator and the retrieval tools."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vireid.comm import DistInfo, dist_info


def move_to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor (inside dicts, lists and tuples) on ``device``;
    pinned tensors are copied to CUDA without blocking."""
    if isinstance(obj, torch.Tensor):
        non_blocking = device.type == "cuda" and obj.device.type == "cpu" and obj.is_pinned()
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {key: move_to_device(value, device) for key, value in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(move_to_device(value, device) for value in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(value, device) for value in obj)
    return obj


def resolve_device(spec: str | torch.device, info: DistInfo | None = None) -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``mps``, ``cuda`` or ``cuda:N``:
    the one device resolver of training, evaluation, extraction and export.

    Under DDP ``auto`` and ``cuda`` mean the GPU of this process's local rank. A device
    that is not there is a ``ValueError`` saying so.
    """
    info = info or dist_info()
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"train.device: {spec!r} requested but CUDA is not available")
        index = int(spec.split(":", 1)[1]) if ":" in spec else info.local_rank
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"train.device: cuda:{index} requested but only "
                f"{torch.cuda.device_count()} CUDA devices are visible"
            )
        return torch.device("cuda", index)
    if spec == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("train.device: 'mps' requested but MPS is not available")
    return torch.device(spec)
