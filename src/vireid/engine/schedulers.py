"""Learning-rate schedule of a stage: linear warm-up, then multistep, cosine or constant.

The schedule is a pure function of the training progress ``t``, measured in
epochs since the stage started: ``t = epoch`` when the stage config says
``schedule_by: epoch`` (the lr changes at the start of each epoch) and
``t = epoch + step_in_epoch / steps_per_epoch`` with ``schedule_by: step`` (it
changes before every step). Epochs count from 0, so with ``milestones: [30,
50]`` epochs 0-29 train at ``lr``, 30-49 at ``lr*gamma`` and 50- at
``lr*gamma**2``.

- warm-up, ``t < warmup_epochs``: linear from the warm-up start
  (``warmup_start_lr``, else ``warmup_factor * lr``, else ``0.01 * lr``) to
  ``lr``, as in CLIP-ReID's ``WarmupMultiStepLR`` (linear method) and in the
  warm-up of the timm ``CosineLRScheduler`` copy that CLIP-ReID ships;
- multistep: ``lr * gamma ** (number of milestones <= t)``;
- cosine: ``min_lr + (lr - min_lr) * (1 + cos(pi * t / epochs)) / 2`` over the
  whole stage, warm-up included (timm ``CosineLRScheduler`` with
  ``t_initial=epochs`` and ``warmup_prefix=False``, as CLIP-ReID stage 1 uses it);
- constant: ``lr``.

Every optimiser group follows the same curve scaled by its own base lr (the
stage lr times the group's multipliers), i.e. ``group_lr = base_lr * lr_at(t) /
lr``.

Note: the reference trainers (CLIP-ReID, CSDN) number epochs from 1 when they
step their schedulers, so their first epoch already trains at the warm-up value
of ``t = 1``; here epoch ``e`` trains at ``t = e``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from torch.optim import Optimizer

from vireid.config import StageConfig

__all__ = ["StageScheduler", "lr_at"]


def lr_at(cfg: StageConfig, t: float) -> float:
    """Stage learning rate at progress ``t`` (epochs since the stage started)."""
    if t < 0:
        raise ValueError(f"progress must be >= 0, got {t}")
    if t < cfg.warmup_epochs:
        start = cfg.warmup_start
        return start + (cfg.lr - start) * t / cfg.warmup_epochs
    if cfg.scheduler == "multistep":
        return cfg.lr * cfg.gamma ** bisect_right(cfg.milestones, t)
    if cfg.scheduler == "cosine":
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(t, cfg.epochs) / cfg.epochs))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * cosine
    return cfg.lr


class StageScheduler:
    """Sets the lr of every optimiser group from the stage schedule.

    Each group's base lr is read from its ``"base_lr"`` key (written by
    :func:`vireid.engine.optim.build_optimizer`), else from its ``lr`` when the
    scheduler is created. Call :meth:`update` with the position in the stage:
    it is stateless apart from that position, so a resumed run gets the same lr
    as an uninterrupted one.
    """

    def __init__(
        self, optimizer: Optimizer, cfg: StageConfig, steps_per_epoch: int | None = None
    ) -> None:
        if cfg.schedule_by == "step" and not steps_per_epoch:
            raise ValueError(
                "schedule_by='step' needs the number of steps per epoch (a loader with len())"
            )
        self.optimizer = optimizer
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.epoch = 0
        self.step_in_epoch = 0

    def progress(self, epoch: int, step_in_epoch: int = 0) -> float:
        """``t`` for the step about to run (``step_in_epoch`` steps already done)."""
        if self.cfg.schedule_by == "epoch":
            return float(epoch)
        assert self.steps_per_epoch
        return epoch + step_in_epoch / self.steps_per_epoch

    def factor(self, epoch: int, step_in_epoch: int = 0) -> float:
        """Stage lr at that position divided by the stage's base lr."""
        return lr_at(self.cfg, self.progress(epoch, step_in_epoch)) / self.cfg.lr

    def update(self, epoch: int, step_in_epoch: int = 0) -> None:
        """Set every group's lr for the step at (``epoch``, ``step_in_epoch``)."""
        self.epoch, self.step_in_epoch = int(epoch), int(step_in_epoch)
        scale = self.factor(self.epoch, self.step_in_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale

    def lrs(self) -> dict[str, float]:
        """Current lr per group name (``group<i>`` for unnamed groups)."""
        return {
            str(group.get("name", f"group{i}")): float(group["lr"])
            for i, group in enumerate(self.optimizer.param_groups)
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "schedule_by": self.cfg.schedule_by,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position and re-apply the lr."""
        self.update(int(state["epoch"]), int(state["step_in_epoch"]))
