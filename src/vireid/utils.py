"""Small helpers shared by the engine, the evaluator and the retrieval tools."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


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
