"""Run logging: ``metrics.jsonl`` (one JSON object per line) and optional TensorBoard.

Every record has a ``kind`` (``train`` every ``log.every_steps`` steps,
``epoch`` at the end of an epoch, ``eval`` after an evaluation, ``stage``
when a stage starts, ends or is skipped, ``resume`` when a run continues from a
checkpoint, ``error`` when training stops on a non-finite loss) and a
wall-clock ``time``. Numbers are written as JSON numbers (tensors and NumPy
scalars converted), nested dicts are kept. Only the main process writes; on
other ranks the logger does nothing.

A resumed run appends to the same file, so steps trained after the checkpoint
by the interrupted run appear twice: the records after the ``resume`` record
are the ones that count.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.files import atomic_path

__all__ = ["RunLogger", "read_metrics", "stage_losses", "to_jsonable"]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def to_jsonable(value: Any) -> Any:
    """``value`` with tensors, NumPy values and paths turned into JSON types
    (non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.item() if value.numel() == 1 else value.tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flattened numeric leaves of ``record`` (``a/b`` for nested keys)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_scalars(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class RunLogger:
    """Writes records to ``<run_dir>/metrics.jsonl`` and, if asked, TensorBoard."""

    def __init__(
        self, run_dir: str | Path, jsonl: bool = True, tensorboard: bool = False,
        enabled: bool = True, resumed_at: int | None = None,
    ) -> None:
        """``resumed_at``: the global step of the checkpoint a run resumes from; records a
        killed run wrote after it are dropped, since the resumed run writes them again."""
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / METRICS_FILE
        self._file = None
        self._writer = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(
                    "train.log.tensorboard=true needs the tensorboard package: "
                    "pip install tensorboard (or set train.log.tensorboard=false)"
                ) from exc
            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))
        if jsonl:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if resumed_at is not None and self.path.is_file():
                kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resumed_at]
                with atomic_path(self.path) as tmp:
                    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            self._file = open(self.path, "a", encoding="utf-8")

    def log(self, kind: str, record: Mapping[str, Any], step: int | None = None) -> None:
        """Append one record; ``step`` is the x-axis for TensorBoard."""
        if not self.enabled:
            return
        data = {"kind": kind, "time": round(time.time(), 3), **to_jsonable(dict(record))}
        if self._file is not None:
            self._file.write(json.dumps(data) + "\n")
            self._file.flush()
        if self._writer is not None and step is not None:
            skip = {"time", "epoch", "step", "stage_step", "stage_index"}
            for name, value in _scalars(data).items():
                if name not in skip:
                    self._writer.add_scalar(f"{kind}/{name}", value, global_step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def stage_losses(path: str | Path) -> dict[str, dict[str, float]]:
    """First and last epoch loss of every stage of a run, from its ``metrics.jsonl``:
    ``{stage: {"first": loss, "last": loss, "epochs": n}}`` (the epoch records' mean loss)."""
    out: dict[str, dict[str, float]] = {}
    for record in read_metrics(path):
        if record.get("kind") == "epoch":
            entry = out.setdefault(record["stage"], {"first": record["loss"]})
            entry["last"] = record["loss"]
            entry["epochs"] = record["epoch"] + 1
    return out
