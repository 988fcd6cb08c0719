"""Training checkpoints: atomic writes, loading without executing code, RNG states.

A checkpoint is one ``torch.save`` file of plain containers (dicts, lists,
tuples, numbers, strings, None) and tensors, so that it loads with
``torch.load(weights_only=True)`` (quality.md: loading must not execute code).
Its keys (``FORMAT_VERSION`` 1):

``format``, ``format_version``, ``vireid_version``, ``torch_version``
    identification;
``config``
    the resolved run config, ``Config.to_dict()``;
``method_name``, ``method``
    the method's ``state_dict()``;
``optimizer``, ``scheduler``, ``scaler``
    state of the current stage (``scaler`` None without fp16 loss scaling);
``progress``
    ``stage``, ``stage_index``, ``epoch`` (the epoch to continue in),
    ``step_in_epoch`` (steps of that epoch already done), ``stage_step``,
    ``global_step``, ``stage_done``;
``world_size``, ``ranks``
    one entry per rank: ``rng`` (now), ``epoch_rng`` (at the start of the
    current epoch, to rebuild the data order of a mid-epoch resume) and
    ``sampler`` (the stage sampler's ``state_dict``, or None).

Files are written to a temporary file in the same folder, flushed to disk and
renamed over the target (``os.replace``), so a crash leaves either the old or
the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vireid

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "atomic_link",
    "atomic_save",
    "capture_rng_state",
    "load_checkpoint",
    "load_method_weights",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = "vireid-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


# --------------------------------------------------------------------------- writing


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` via a temporary file in the same folder + rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Make ``target`` a copy of ``source`` atomically (a hard link when possible)."""
    source, target = Path(source), Path(target)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
    temporary.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


# --------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """States of Python's ``random``, NumPy's global generator, torch CPU and CUDA,
    in a form ``torch.load(weights_only=True)`` accepts (no NumPy arrays)."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": int(numpy_state["pos"]),
            },
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # different machine: keep the current device's stream at least consistent
            torch.cuda.set_rng_state(cuda_states[0])


# --------------------------------------------------------------------------- reading


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its format.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError`
    (naming the file) for one that is unreadable, holds anything but tensors
    and plain containers, or is not a vireid checkpoint.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint not found: {file}")
    try:
        data = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = [line for line in lines if line.startswith("WeightsUnpickler error")]
        text = (detail or lines or [type(exc).__name__])[0]
        raise CheckpointError(
            f"cannot read checkpoint {file}: {text} (checkpoints are loaded with "
            "weights_only=True: only tensors and plain containers are accepted)"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file} is not a vireid training checkpoint (no format marker)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has checkpoint format version {version!r}; this vireid "
            f"({vireid.__version__}) reads versions up to {FORMAT_VERSION}"
        )
    return data


def load_method_weights(
    method: torch.nn.Module, path: str | os.PathLike[str], strict: bool = True
) -> dict[str, Any]:
    """Load the method weights of checkpoint ``path`` into ``method``; return the checkpoint."""
    checkpoint = load_checkpoint(path)
    try:
        method.load_state_dict(checkpoint["method"], strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} (method {checkpoint.get('method_name')!r}) does not fit this "
            f"{type(method).__name__}: {exc}"
        ) from exc
    return checkpoint
