"""Training checkpoints: atomic writes, loading without executing code, RNG states.

A checkpoint is one ``torch.save`` file of plain containers (dicts, lists,
tuples, numbers, strings, None) and tensors, so that it loads with
``torch.load(weights_only=True)`` (docs/quality.md#bad-input-and-reliability: loading must not execute code).
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

Files are written to a temporary file in the same folder
(``.<name>.<host>.<pid>.<random>.tmp``), flushed to disk and renamed over the
target (``os.replace``), so a crash leaves either the old or the new checkpoint,
never a torn one. A full disk is reported as such (the previous checkpoint is kept
and the partial file removed); temporary files of killed processes are removed by
the next write or load in their folder (:func:`remove_stale_temporaries`).

Loading checks the structure of what the training engine reads (progress fields,
per-rank RNG states) and raises :class:`CheckpointError` naming the file and the
key; a key absent at access time raises it too (the loaded dict is a
:class:`CheckpointDict`).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vireid
from vireid.files import atomic_path, fsync_path, remove_stale_temporaries

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "CheckpointDict",
    "CheckpointError",
    "atomic_link",
    "atomic_save",
    "capture_rng_state",
    "load_checkpoint",
    "load_method_weights",
    "remove_stale_temporaries",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = "vireid-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


# --------------------------------------------------------------------------- writing


def _write(obj: Any, handle) -> None:
    """Serialise ``obj`` into the open file ``handle`` (the step a full disk fails)."""
    torch.save(obj, handle)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`vireid.files.atomic_path` (durable),
    after removing what killed writers left in the folder.

    On failure the temporary file is removed and ``path`` keeps its previous content;
    a full disk raises ``OSError(ENOSPC)`` saying so and naming ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    with atomic_path(target, durable=True, what="checkpoint") as temporary:
        with open(temporary, "xb") as handle:
            _write(obj, handle)
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
    fsync_path(target.parent)
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


def check_rng_state(state: Any, where: str) -> None:
    """Raises :class:`CheckpointError` naming ``where`` unless ``state`` has the form
    :func:`capture_rng_state` writes."""
    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{where}: malformed RNG state at {key!r} (expected {expected})")

    if not isinstance(state, Mapping):
        raise bad("", "a mapping with python, numpy, torch")
    for key in ("python", "numpy", "torch"):
        if key not in state:
            raise CheckpointError(f"{where}: RNG state lacks key {key!r}")
    python = state["python"]
    if (not isinstance(python, (list, tuple)) or len(python) != 3
            or not isinstance(python[1], (list, tuple)) or len(python[1]) != 625
            or not all(isinstance(v, int) for v in python[1])):
        raise bad("python", "random.getstate(): (version, 625 integers, gauss)")
    numpy_state = state["numpy"]
    if not isinstance(numpy_state, Mapping) or not all(
            k in numpy_state for k in ("bit_generator", "key", "pos", "has_gauss", "gauss")):
        raise bad("numpy", "bit_generator, key, pos, has_gauss, gauss")
    key = numpy_state["key"]
    if (numpy_state["bit_generator"] != "MT19937" or not isinstance(key, torch.Tensor)
            or key.shape != (624,) or key.is_floating_point()
            or not isinstance(numpy_state["pos"], int)):
        raise bad("numpy", "an MT19937 state: 624 integer key words and a position")
    rng = state["torch"]
    if (not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.ndim != 1
            or rng.numel() != torch.get_rng_state().numel()):
        raise bad("torch", "a uint8 tensor of torch.get_rng_state()")
    cuda = state.get("cuda") or []
    if not isinstance(cuda, (list, tuple)) or not all(
            isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda):
        raise bad("cuda", "a list of uint8 tensors")


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    check_rng_state(state, "RNG state")
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


class CheckpointDict(dict):
    """A loaded checkpoint (or part of one): a missing key raises :class:`CheckpointError`
    naming the file and the key instead of a bare ``KeyError``."""

    def __init__(self, data: Mapping, file: Path, prefix: str = ""):
        super().__init__(data)
        self._file, self._prefix = file, prefix

    def __missing__(self, key):
        raise CheckpointError(f"checkpoint {self._file} lacks key {self._prefix}{key!r}")


_PROGRESS = {"stage": str, "stage_index": int, "epoch": int, "step_in_epoch": int,
             "stage_step": int, "global_step": int, "stage_done": bool}


def _check_structure(data: dict, file: Path) -> CheckpointDict:
    """The parts the engine and ``load_model`` read, checked; CheckpointDicts all the way."""
    for key in ("config", "method"):
        if key not in data:
            raise CheckpointError(f"checkpoint {file} lacks key {key!r}")
        if not isinstance(data[key], dict):
            raise CheckpointError(f"checkpoint {file}: {key!r} must be a mapping, "
                                  f"got {type(data[key]).__name__}")
    out = CheckpointDict(data, file)
    training = [k for k in ("progress", "ranks", "optimizer", "scheduler") if k in data]
    if not training:
        return out  # weights and config only (enough for eval, extract, export)
    for key in ("progress", "ranks", "optimizer", "scheduler"):
        if key not in data:
            raise CheckpointError(f"checkpoint {file} lacks key {key!r} (it holds "
                                  f"{', '.join(training)} but not the whole training state)")
    progress = data["progress"]
    if not isinstance(progress, dict):
        raise CheckpointError(f"checkpoint {file}: 'progress' must be a mapping")
    for key, kind in _PROGRESS.items():
        if key not in progress:
            raise CheckpointError(f"checkpoint {file} lacks key 'progress'.{key!r}")
        value = progress[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(f"checkpoint {file}: 'progress'.{key!r} must be "
                                  f"{kind.__name__}, got {value!r}")
    out["progress"] = CheckpointDict(progress, file, "'progress'.")
    ranks = data["ranks"]
    if not isinstance(ranks, (list, tuple)) or not ranks:
        raise CheckpointError(f"checkpoint {file}: 'ranks' must be a non-empty list")
    checked = []
    for index, rank in enumerate(ranks):
        where = f"checkpoint {file}, 'ranks'[{index}]"
        if not isinstance(rank, dict):
            raise CheckpointError(f"{where} must be a mapping")
        for key in ("rng", "epoch_rng"):
            if key not in rank:
                raise CheckpointError(f"checkpoint {file} lacks key 'ranks'[{index}].{key!r}")
            check_rng_state(rank[key], f"{where}.{key!r}")
        checked.append(CheckpointDict(rank, file, f"'ranks'[{index}]."))
    out["ranks"] = checked
    return out


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> CheckpointDict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its format.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError`
    (naming the file, and the key when one is missing or malformed) for one that
    is unreadable, holds anything but tensors and plain containers, is not a
    vireid checkpoint, or has a malformed training state (progress, RNG states).
    Partial files of killed writers in its folder are removed first.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint not found: {file}")
    remove_stale_temporaries(file.parent)
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
    return _check_structure(data, file)


def load_method_weights(
    method: torch.nn.Module, path: str | os.PathLike[str], strict: bool = True
) -> dict[str, Any]:
    """Load the method weights of checkpoint ``path`` into ``method``; return the checkpoint."""
    checkpoint = load_checkpoint(path)
    try:
        method.load_state_dict(checkpoint["method"], strict=strict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} (method {checkpoint.get('method_name')!r}) does not fit this "
            f"{type(method).__name__}: {exc}"
        ) from exc
    return checkpoint
