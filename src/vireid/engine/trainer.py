"""The training loop: stages, optimiser and schedule, AMP, DDP, checkpoints, logging.

:class:`Trainer` runs the stages that ``method.stages()`` declares, in order,
each with the settings of ``cfg.train.stages[<stage name>]``::

    for each stage (epochs > 0):
        freeze every parameter but the stage's (and those frozen when the method was
        built: they stay frozen); stage.setup(); train/eval modes
        build the optimiser, the lr schedule and (fp16 on CUDA) the grad scaler
        for each epoch:
            sampler.set_epoch(epoch); the loader's dataset .set_epoch(epoch); stage.on_epoch_start(epoch)
            for each batch:  (schedule_by=step: set the lr)
                outputs = stage.step(batch)  under autocast
                stop on a non-finite loss; backward; average gradients (DDP)
                clip; optimiser step; log every log.every_steps steps
            log the epoch; checkpoint every checkpoint_every epochs; evaluate every eval_every
        checkpoint at the end of the stage
    evaluate at the end

Resuming (``resume=`` or ``cfg.train.resume``) continues at the exact step of
the checkpoint: the method, optimiser, scheduler, scaler and sampler states and
every RNG are restored, and a mid-epoch resume rebuilds the epoch's data order
from the RNG state saved at the start of that epoch, then skips the batches
already trained on (the sampler skips them itself; a loader without a sampler
is read and the batches dropped). ``stage.setup()`` runs again on resume, and
so does ``stage.on_epoch_start(epoch)`` for the epoch being resumed (so that
side effects such as a dataset's ``set_epoch`` happen); the method's saved
state is then loaded over whatever it computed, so state that must survive a
resume belongs in the method's parameters or buffers. Data that depends on
global RNG inside DataLoader workers is the one thing a mid-epoch resume does
not reproduce (vireid's datasets seed every item from ``(seed, epoch, index)``).

Under ``torchrun`` (see :mod:`vireid.engine.distributed`) every rank runs the
same loop on its share of the batches; gradients are averaged across ranks
after ``backward``; only rank 0 writes logs and checkpoints and runs the
``evaluate`` callback, whose result is sent to every rank.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

import vireid
from vireid.config import Config, StageConfig, dump_config
from vireid.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    atomic_link,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
)
from vireid.engine.distributed import (
    GradientAverager,
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_module,
    broadcast_object,
    dist_info,
)
from vireid.engine.logger import RunLogger
from vireid.engine.optim import build_optimizer, trainable_parameters
from vireid.engine.schedulers import StageScheduler
from vireid.methods.base import Method, Stage
from vireid.utils import move_to_device, resolve_device

__all__ = [
    "CHECKPOINT_DIR",
    "LAST_CHECKPOINT",
    "NonFiniteLossError",
    "Trainer",
    "TrainerHook",
    "move_to_device",
    "resolve_device",
    "seed_everything",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
"""Folder of the run directory that holds the checkpoints."""
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
"""``train.keep_best``: the best Rank-1 checkpoint (selected on the test set)."""
BEST_RECORD = "best.json"
"""The newest checkpoint (resume from it); ``<stage>.pt`` is the state at the end of a stage."""
CONFIG_FILE = "config.yaml"

_RESUME_IGNORED_KEYS = ("name", "output_dir", "train.resume", "train.max_steps", "train.log",
                        "train.checkpoint_every_steps", "train.keep_epoch_checkpoints",
                        "train.eval_every", "train.checkpoint_every", "train.device", "eval")


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss was NaN or infinite; nothing of that step was saved."""

    def __init__(
        self, stage: str, epoch: int, step: int, terms: Mapping[str, float],
        last_checkpoint: Path | None,
    ) -> None:
        self.stage, self.epoch, self.step = stage, epoch, step
        self.terms = dict(terms)
        self.last_checkpoint = last_checkpoint
        shown = ", ".join(f"{k}={v:.6g}" for k, v in self.terms.items()) or "loss not finite"
        kept = (
            f"the last good checkpoint is {last_checkpoint}"
            if last_checkpoint is not None
            else "no checkpoint had been written yet"
        )
        super().__init__(
            f"non-finite loss in stage {stage!r}, epoch {epoch}, global step {step}: {shown}; "
            f"training stopped without saving this step ({kept})"
        )


class TrainerHook:
    """Override any of these to watch or extend training (all no-ops by default)."""

    def before_stage(self, trainer: Trainer, stage: Stage) -> None: ...
    def after_step(self, trainer: Trainer, outputs: Mapping[str, torch.Tensor]) -> None: ...
    def after_epoch(self, trainer: Trainer, record: Mapping[str, Any]) -> None: ...
    def after_stage(self, trainer: Trainer, stage: Stage) -> None: ...


# --------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _batch_size(batch: Any) -> int | None:
    """Leading dimension of the first tensor found in ``batch``."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    values: Iterable[Any] = ()
    if isinstance(batch, Mapping):
        values = batch.values()
    elif isinstance(batch, (list, tuple)):
        values = batch
    for value in values:
        size = _batch_size(value)
        if size is not None:
            return size
    return None


def _loader_length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        out: list[str] = []
        for key in keys:
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class _Meter:
    """Running sums of scalar outputs, kept on the device (no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, outputs: Mapping[str, torch.Tensor]) -> None:
        for key, value in outputs.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.count += 1

    def means(self, distributed: bool) -> dict[str, float]:
        if not self.count:
            return {}
        out = {}
        for key, total in self.sums.items():
            mean = total / self.count
            out[key] = float(all_reduce_mean(mean) if distributed else mean)
        return out


class _LogWindow:
    """The steps since the last log line: their outputs, samples and data-loading time."""

    def __init__(self, world_size: int) -> None:
        self.meter = _Meter()
        self.world_size = world_size
        self.start = time.perf_counter()
        self.samples = 0
        self.data_time = 0.0

    def add(self, outputs: Mapping[str, torch.Tensor], batch: Any) -> None:
        self.meter.add(outputs)
        self.samples += (_batch_size(batch) or 0) * self.world_size


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Runs a :class:`~vireid.methods.base.Method`'s stages with the settings of ``cfg``.

    Args:
        method: the model and its stages.
        cfg: the resolved run config (``cfg.train`` drives the loop).
        run_dir: folder for ``metrics.jsonl``, ``config.yaml``, ``checkpoints/``.
        evaluate: called with the method (eval mode, no grad) every
            ``train.eval_every`` epochs of the stages in ``eval_stages`` and at the
            end; returns a dict of metrics (logged, and returned by :meth:`fit`).
        device: overrides ``cfg.train.device``.
        resume: checkpoint to continue from; overrides ``cfg.train.resume``.
        checkpoint_every_steps: also checkpoint every N global steps (mid-epoch).
        keep_epoch_checkpoints: keep a ``<stage>-epochNNN.pt`` copy of every
            periodic checkpoint (otherwise only ``last.pt`` and ``<stage>.pt``).
        eval_stages: stages whose epochs ``eval_every`` applies to; default: the
            last stage that trains (earlier stages often leave the features that
            are evaluated unchanged, e.g. prompt learning).
        compile_backend: ``torch.compile`` backend (name or callable) used when
            ``cfg.train.compile``.
        hooks: :class:`TrainerHook` objects called around stages, epochs and steps.
    """

    def __init__(
        self,
        method: Method,
        cfg: Config,
        run_dir: str | Path,
        evaluate: Callable[[Method], Mapping[str, Any]] | None = None,
        device: str | torch.device | None = None,
        *,
        resume: str | Path | None = None,
        checkpoint_every_steps: int | None = None,
        keep_epoch_checkpoints: bool = False,
        eval_stages: Sequence[str] | None = None,
        compile_backend: str | Callable[..., Any] = "inductor",
        hooks: Sequence[TrainerHook] = (),
    ) -> None:
        if checkpoint_every_steps is not None and checkpoint_every_steps < 1:
            raise ValueError(f"checkpoint_every_steps must be >= 1, got {checkpoint_every_steps}")
        self.method = method
        self.frozen = {id(p) for p in method.parameters() if not p.requires_grad}
        """Parameters frozen when the method was built: they stay frozen in every stage."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.evaluate = evaluate
        self.dist = dist_info()
        self.device = resolve_device(device if device is not None else cfg.train.device, self.dist)
        resume = resume if resume is not None else cfg.train.resume
        self.resume_path = Path(resume) if resume is not None else None
        self.checkpoint_every_steps = checkpoint_every_steps
        self.keep_epoch_checkpoints = keep_epoch_checkpoints
        self.eval_stages = list(eval_stages) if eval_stages is not None else None
        self.compile_backend = compile_backend
        self.hooks = list(hooks)
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.amp_dtype = torch.bfloat16 if cfg.train.amp_dtype == "bf16" else torch.float16
        if (cfg.train.amp and self.amp_dtype == torch.bfloat16 and self.device.type == "cuda"
                and not torch.cuda.is_bf16_supported()):
            warnings.warn("train.amp_dtype=bf16: this GPU has no bf16; using fp16 with a "
                          "gradient scaler", stacklevel=2)
            self.amp_dtype = torch.float16

        # progress (what a checkpoint records)
        self.stage_index = 0
        self.stage: Stage | None = None
        self.stage_cfg: StageConfig | None = None
        self.epoch = 0
        self.step_in_epoch = 0
        self.stage_step = 0
        self.global_step = 0
        # per-stage machinery
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: StageScheduler | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.averager: GradientAverager | None = None
        self.trainable: list[nn.Parameter] = []
        self._step_fn: Callable[[dict[str, Any]], Mapping[str, torch.Tensor]] | None = None
        self._epoch_rng: dict[str, Any] | None = None
        self._compiled: set[int] = set()
        self._last_eval_step: int | None = None
        self.last_checkpoint: Path | None = None
        self.eval_history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        """``train.keep_best``: score and position of ``checkpoints/best.pt``."""
        if cfg.train.keep_best:
            warnings.warn(
                "train.keep_best keeps the checkpoint with the best Rank-1 ON THE TEST SET "
                "(model selection on the test set, as the CSDN / X-ReID code does): use it "
                "only to reproduce published numbers", stacklevel=2)
            record = self.checkpoint_dir / BEST_RECORD
            if self.resume_path is not None and record.is_file():
                self.best = json.loads(record.read_text())
        self.last_step_time: float | None = None
        self._epoch_means: dict[str, float] = {}
        self.log: RunLogger | None = None

    # ------------------------------------------------------------------ public

    def fit(self) -> dict[str, Any] | None:
        """Train every stage; return the final evaluation (None without ``evaluate``)."""
        self.method.to(self.device)
        stages = self._resolve_stages()
        self._configure_determinism()
        checkpoint = self._read_resume_checkpoint()
        if checkpoint is None:
            seed_everything(self.cfg.seed + self.dist.rank)
        start_index = 0
        if checkpoint is not None:
            start_index = self._restore_method(checkpoint, stages)
            self.last_checkpoint = self.resume_path
            if checkpoint["progress"]["stage_done"]:
                checkpoint = None  # the next stage starts fresh
        broadcast_module(self.method)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(self.cfg, self.run_dir / CONFIG_FILE)
            remove_stale_temporaries(self.checkpoint_dir)  # partial writes of killed runs
        log_cfg = self.cfg.train.log
        self.log = RunLogger(
            self.run_dir, log_cfg.jsonl, log_cfg.tensorboard, enabled=self.dist.is_main,
            resumed_at=self.global_step if self.resume_path is not None else None,
        )
        if self.resume_path is not None:
            self._log("resume", {"checkpoint": str(self.resume_path)})
        if self.eval_stages is None:
            training = [s.name for s, c in stages if c.epochs > 0]
            self.eval_stages = training[-1:]
        try:
            for index, (stage, stage_cfg) in enumerate(stages):
                if index < start_index:
                    continue
                resume_here = checkpoint if index == start_index else None
                self._run_stage(index, stage, stage_cfg, resume_here)
            result = None
            if self.evaluate is not None and self._last_eval_step != self.global_step:
                result = self._run_evaluation(final=True)
            elif self.eval_history:
                result = self.eval_history[-1]
            self.method.eval()
            return result
        finally:
            for param in self.method.parameters():  # as built: only construction freezes
                param.requires_grad_(id(param) not in self.frozen)
            self.log.close()

    # ------------------------------------------------------------------ setup

    def _resolve_stages(self) -> list[tuple[Stage, StageConfig]]:
        stages = list(self.method.stages())
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.method.name!r} declares duplicate stage names {names}")
        configured = self.cfg.train.stages
        for name in names:
            if name not in configured:
                raise self.cfg.error(
                    f"train.stages.{name}",
                    f"method {self.method.name!r} has a stage {name!r} that the config does not "
                    f"set (the method's stages, in order: {names})",
                )
        for name in configured:
            if name not in names:
                raise self.cfg.error(
                    f"train.stages.{name}",
                    f"method {self.method.name!r} has no stage {name!r}; its stages are {names}",
                )
        return [(stage, configured[stage.name]) for stage in stages]

    def _configure_determinism(self) -> None:
        """``train.deterministic``: deterministic kernels where torch has them (warning
        otherwise); cuBLAS also needs CUBLAS_WORKSPACE_CONFIG before CUDA starts, set here
        when absent (too late if CUDA was already used in this process)."""
        if self.cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    def _read_resume_checkpoint(self) -> dict[str, Any] | None:
        if self.resume_path is None:
            return None
        checkpoint = load_checkpoint(self.resume_path)
        differences = [
            key for key in _differences(checkpoint.get("config", {}), self.cfg.to_dict())
            if not any(key == k or key.startswith(k + ".") for k in _RESUME_IGNORED_KEYS)
        ]
        if differences and self.dist.is_main:
            logger.warning(
                "resuming from %s with a config that differs in: %s",
                self.resume_path, ", ".join(differences),
            )
        return checkpoint

    def _restore_method(
        self, checkpoint: dict[str, Any], stages: Sequence[tuple[Stage, StageConfig]]
    ) -> int:
        """Load the method state and the position; return the stage index to start at."""
        self._load_method_state(checkpoint)
        progress = checkpoint["progress"]
        index = int(progress["stage_index"])
        names = [stage.name for stage, _ in stages]
        if index >= len(names) or names[index] != progress["stage"]:
            raise CheckpointError(
                f"checkpoint {self.resume_path} was written in stage {progress['stage']!r} "
                f"(number {index}), but the method's stages are {names}"
            )
        self.global_step = int(progress["global_step"])
        self.stage_index = index
        if progress["stage_done"]:
            # continue with the next stage from the RNG state at the end of this one
            restore_rng_state(self._rank_state(checkpoint)["rng"])
            return index + 1
        return index

    def _load_method_state(self, checkpoint: dict[str, Any]) -> None:
        try:
            self.method.load_state_dict(checkpoint["method"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {self.resume_path} does not fit method {self.method.name!r}: {exc}"
            ) from exc

    def _rank_state(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        ranks = checkpoint["ranks"]
        if len(ranks) != self.dist.world_size:
            raise CheckpointError(
                f"checkpoint {self.resume_path} was written by {len(ranks)} processes; "
                f"resuming needs the same number, got world size {self.dist.world_size}"
            )
        return ranks[self.dist.rank]

    def _begin_stage(self, index: int, stage: Stage, stage_cfg: StageConfig) -> None:
        """Freeze, set up, set modes and build the optimiser of ``stage``."""
        self.stage_index, self.stage, self.stage_cfg = index, stage, stage_cfg
        groups = [dataclasses.replace(g, params=[p for p in g.params if id(p) not in self.frozen])
                  for g in stage.param_groups()]
        self.trainable = trainable_parameters(self.method, groups, stage.name)
        for param in self.method.parameters():
            param.requires_grad_(False)
            param.grad = None
        for param in self.trainable:
            param.requires_grad_(True)
        if stage.setup is not None:
            stage.setup()
        broadcast_module(self.method)
        self._apply_modes()
        self.optimizer = build_optimizer(self.method, groups, stage_cfg, stage.name)
        self.scheduler = StageScheduler(
            self.optimizer, stage_cfg, _loader_length(stage.loader)
        )
        use_scaler = self.cfg.train.amp and self.amp_dtype == torch.float16
        self.scaler = (
            torch.amp.GradScaler("cuda") if use_scaler and self.device.type == "cuda" else None
        )
        self.averager = GradientAverager(self.trainable) if self.dist.distributed else None
        self._step_fn = self._maybe_compile(stage)
        for hook in self.hooks:
            hook.before_stage(self, stage)
        count = sum(p.numel() for p in self.trainable)
        if self.dist.is_main:
            logger.info("stage %s: %d epochs, %d trainable parameters", stage.name,
                        stage_cfg.epochs, count)
        self._log("stage", {"event": "start", "trainable_parameters": count,
                            "epochs": stage_cfg.epochs})

    def _apply_modes(self) -> None:
        """Eval mode everywhere, then train mode on the stage's train modules."""
        assert self.stage is not None
        self.method.eval()
        modules = self.stage.train_modules() if self.stage.train_modules else [self.method]
        for module in modules:
            module.train()

    def _maybe_compile(self, stage: Stage) -> Callable[[dict[str, Any]], Any]:
        """``torch.compile``: the modules of ``method.compile_modules()`` if the method
        has it (compiled in place, so state-dict keys do not change), else ``stage.step``."""
        if not self.cfg.train.compile:
            return stage.step
        chooser = getattr(self.method, "compile_modules", None)
        modules = chooser() if callable(chooser) else []
        if not modules:
            return torch.compile(stage.step, backend=self.compile_backend)
        for module in modules:
            if id(module) not in self._compiled:
                module.compile(backend=self.compile_backend)
                self._compiled.add(id(module))
        return stage.step

    # ------------------------------------------------------------------ the loop

    def _run_stage(
        self, index: int, stage: Stage, stage_cfg: StageConfig, checkpoint: dict[str, Any] | None
    ) -> None:
        if stage_cfg.epochs == 0:
            self.stage_index, self.stage = index, stage
            self._log("stage", {"event": "skipped", "reason": "epochs=0"})
            return
        self._begin_stage(index, stage, stage_cfg)
        start_epoch, start_step = 0, 0
        self.stage_step = 0
        rank_state: dict[str, Any] | None = None
        if checkpoint is not None:
            progress = checkpoint["progress"]
            start_epoch, start_step = int(progress["epoch"]), int(progress["step_in_epoch"])
            self.stage_step = int(progress["stage_step"])
            self.global_step = int(progress["global_step"])
            assert self.optimizer is not None and self.scheduler is not None
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            if self.scaler is not None and checkpoint.get("scaler") is not None:
                self.scaler.load_state_dict(checkpoint["scaler"])
            rank_state = self._rank_state(checkpoint)
        max_steps = self.cfg.train.max_steps
        stopped_early = False
        for epoch in range(start_epoch, stage_cfg.epochs):
            if max_steps is not None and self.stage_step >= max_steps:
                stopped_early = True
                break
            resuming = rank_state if epoch == start_epoch else None
            skip = start_step if resuming is not None else 0
            finished = self._run_epoch(epoch, skip, resuming, checkpoint if resuming else None)
            if not finished:
                stopped_early = True
                break
            self._end_epoch(epoch)
        self._end_stage(stopped_early)

    def _run_epoch(
        self, epoch: int, skip: int, rank_state: dict[str, Any] | None,
        checkpoint: dict[str, Any] | None,
    ) -> bool:
        """One epoch from batch ``skip``; False if ``max_steps`` ended it early."""
        stage, stage_cfg = self.stage, self.stage_cfg
        assert stage is not None and stage_cfg is not None
        iterator = self._start_epoch(epoch, skip, rank_state, checkpoint)
        total = _loader_length(stage.loader)
        progress = self._progress_bar(total, skip, f"{stage.name} {epoch + 1}/{stage_cfg.epochs}")
        window = _LogWindow(self.dist.world_size)
        epoch_meter = _Meter()
        max_steps = self.cfg.train.max_steps
        every = self.cfg.train.log.every_steps
        try:
            while True:
                if max_steps is not None and self.stage_step >= max_steps:
                    return False
                fetch_start = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    self._epoch_means = epoch_meter.means(self.dist.distributed)
                    return True
                window.data_time += time.perf_counter() - fetch_start
                outputs = self._train_step(batch)
                window.add(outputs, batch)
                epoch_meter.add(outputs)
                if progress is not None:
                    progress.update(1)
                for hook in self.hooks:
                    hook.after_step(self, outputs)
                if self.global_step % every == 0:
                    self._log_window(window, progress)
                    window = _LogWindow(self.dist.world_size)
                if self.checkpoint_every_steps and self.global_step % self.checkpoint_every_steps == 0:
                    self._save_checkpoint(stage_done=False)
        finally:
            if progress is not None:
                progress.close()

    def _start_epoch(
        self, epoch: int, skip: int, rank_state: dict[str, Any] | None,
        checkpoint: dict[str, Any] | None,
    ) -> Iterator[Any]:
        """Put sampler, dataset and method to ``epoch`` and return the batch iterator.

        On a resume (``rank_state``) the epoch start is replayed from the RNG state saved
        when the epoch began, then the iterator is moved past the ``skip`` batches already
        trained on and the RNG state of that step is restored.
        """
        stage = self.stage
        assert stage is not None and self.scheduler is not None
        self.epoch, self.step_in_epoch = epoch, skip
        if rank_state is not None:
            restore_rng_state(rank_state["epoch_rng"] if skip else rank_state["rng"])
        self._epoch_rng = capture_rng_state()
        if stage.sampler is not None:
            if skip:
                if rank_state is None or rank_state.get("sampler") is None:
                    raise CheckpointError(
                        f"checkpoint {self.resume_path} has no sampler state for stage "
                        f"{stage.name!r}, which now has a sampler"
                    )
                stage.sampler.load_state_dict(rank_state["sampler"])
            stage.sampler.set_epoch(epoch)
        dataset = getattr(stage.loader, "dataset", None)
        if callable(getattr(dataset, "set_epoch", None)):  # per-epoch augmentation streams
            dataset.set_epoch(epoch)
        if stage.on_epoch_start is not None:
            stage.on_epoch_start(epoch)
        if skip and checkpoint is not None:
            self._load_method_state(checkpoint)  # over whatever on_epoch_start computed
            self._apply_modes()
        self.scheduler.update(epoch, skip)
        iterator: Iterator[Any] = iter(stage.loader)
        if skip and stage.sampler is None:
            for _ in range(skip):
                next(iterator)
        if skip and rank_state is not None:
            restore_rng_state(rank_state["rng"])
        return iterator

    def _log_window(self, window: _LogWindow, progress: Any) -> None:
        """Log the means, timings and throughput of the steps since the last log line."""
        assert self.scheduler is not None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - window.start
        self.last_step_time = elapsed / window.meter.count
        record = {
            **self._position(),
            **window.meter.means(self.dist.distributed),
            "lr": self.scheduler.lrs(),
            "step_time": self.last_step_time,
            "data_time": window.data_time / window.meter.count,
            "samples_per_s": window.samples / elapsed if elapsed > 0 else None,
        }
        self._log("train", record, step=self.global_step)
        if progress is not None:
            progress.set_postfix(loss=f"{record['loss']:.4g}")

    def _train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        assert self.optimizer is not None and self.scheduler is not None
        assert self.stage is not None and self.stage_cfg is not None and self._step_fn is not None
        if self.stage_cfg.schedule_by == "step":
            self.scheduler.update(self.epoch, self.step_in_epoch)
        batch = move_to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
            if self.cfg.train.amp
            else nullcontext()
        )
        with autocast:
            outputs = self._step_fn(batch)
        outputs = self._check_outputs(outputs)
        loss = outputs["loss"]
        finite = bool(torch.isfinite(loss.detach()).item())
        if finite:
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        problem = not finite
        if self.averager is not None:
            problem = self.averager.average(problem)
        if problem:
            self._fail_non_finite(outputs, finite)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.clip_grad_norm
        if clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.trainable, clip)
            outputs = {**outputs, "grad_norm": grad_norm.detach()}
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step_in_epoch += 1
        self.stage_step += 1
        self.global_step += 1
        return outputs

    def _check_outputs(self, outputs: Any) -> dict[str, torch.Tensor]:
        name = self.stage.name if self.stage else "?"
        if not isinstance(outputs, Mapping) or "loss" not in outputs:
            raise TypeError(
                f"stage {name!r}: step() must return a dict with a 'loss' tensor, "
                f"got {type(outputs).__name__}"
                + (f" with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else "")
            )
        clean: dict[str, torch.Tensor] = {}
        for key, value in outputs.items():
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(value, dtype=torch.float32)
            if value.numel() != 1:
                raise ValueError(
                    f"stage {name!r}: step() output {key!r} must be a scalar, got shape "
                    f"{tuple(value.shape)}"
                )
            clean[key] = value.reshape(())
        if not clean["loss"].requires_grad:
            raise ValueError(
                f"stage {name!r}: the loss does not require grad; does it depend on the "
                "stage's parameters?"
            )
        return clean

    def _fail_non_finite(self, outputs: Mapping[str, torch.Tensor], finite_here: bool) -> None:
        terms = {key: float(value.detach()) for key, value in outputs.items()}
        step = self.global_step + 1
        stage = self.stage.name if self.stage else "?"
        if finite_here:  # another rank saw the non-finite loss
            terms = {"loss on another rank": math.nan, **terms}
        self._log("error", {**self._position(), "step": step, "error": "non-finite loss",
                            "terms": terms})
        raise NonFiniteLossError(stage, self.epoch, step, terms, self.last_checkpoint)

    def _end_epoch(self, epoch: int) -> None:
        assert self.stage_cfg is not None and self.scheduler is not None
        self.epoch, self.step_in_epoch = epoch + 1, 0
        record = {**self._position(), "epoch": epoch, **self._epoch_means,
                  "lr": self.scheduler.lrs()}
        self._log("epoch", record, step=self.global_step)
        if self.cfg.train.log.progress and self.dist.is_main:
            terms = "  ".join(
                f"{k} {v:.4g}" for k, v in self._epoch_means.items() if isinstance(v, float)
            )
            lr = max(self.scheduler.lrs().values())
            print(f"[{self.stage.name}] epoch {epoch + 1}/{self.stage_cfg.epochs}  {terms}  "
                  f"lr {lr:.3g}", file=sys.stderr, flush=True)
        for hook in self.hooks:
            hook.after_epoch(self, record)
        last_epoch = epoch + 1 == self.stage_cfg.epochs
        every = self.cfg.train.checkpoint_every
        if not last_epoch and every and (epoch + 1) % every == 0:
            path = self._save_checkpoint(stage_done=False)
            if path is not None and self.keep_epoch_checkpoints:
                atomic_link(path, self.checkpoint_dir / f"{self.stage.name}-epoch{epoch + 1:03d}.pt")
        eval_every = self.cfg.train.eval_every
        if (
            self.evaluate is not None and eval_every
            and (epoch + 1) % eval_every == 0
            and self.stage is not None and self.stage.name in (self.eval_stages or ())
        ):
            self._run_evaluation(final=False, epoch=epoch)

    def _end_stage(self, stopped_early: bool) -> None:
        assert self.stage is not None
        path = self._save_checkpoint(stage_done=True)
        if path is not None:
            atomic_link(path, self.checkpoint_dir / f"{self.stage.name}.pt")
        self._log("stage", {"event": "end", "stopped_by_max_steps": stopped_early})
        for hook in self.hooks:
            hook.after_stage(self, self.stage)

    # ------------------------------------------------------------------ evaluation

    def _run_evaluation(self, final: bool, epoch: int | None = None) -> dict[str, Any]:
        """Rank 0 evaluates (eval mode, no grad, RNG left untouched); all ranks get the result."""
        assert self.evaluate is not None
        result: dict[str, Any] | None = None
        if self.dist.is_main:
            rng = capture_rng_state()
            was_training = {id(m): m.training for m in self.method.modules()}
            self.method.eval()
            try:
                with torch.no_grad():
                    result = dict(self.evaluate(self.method))
            finally:
                restore_rng_state(rng)
                for module in self.method.modules():
                    module.train(was_training.get(id(module), False))
        result = broadcast_object(result)
        barrier()
        assert result is not None
        self._last_eval_step = self.global_step
        record = {**self._position(), "final": final, "metrics": result}
        if epoch is not None:
            record["epoch"] = epoch
        self.eval_history.append(result)
        self._log("eval", record, step=self.global_step)
        if self.cfg.train.keep_best:
            self._keep_best(result, final)
        return result

    def _keep_best(self, result: Mapping[str, Any], final: bool) -> None:
        """``train.keep_best``: copy the checkpoint of the best Rank-1 so far (ties count,
        as in the CSDN code) to ``checkpoints/best.pt``. The score is the mean Rank-1 of
        the first setting of the evaluation summary -- the TEST set: model selection on
        the test set, for reproducing published numbers only."""
        settings = [k for k, v in result.items()
                    if k != "splits" and isinstance(v, Mapping) and "R1" in v.get("mean", {})]
        if not settings:
            return
        score = float(result[settings[0]]["mean"]["R1"])
        if self.best is not None and score < self.best["score"]:
            return
        path = self.last_checkpoint if final else self._save_checkpoint(stage_done=False)
        self.best = {"score": score, "setting": settings[0], "stage": self.stage.name
                     if self.stage is not None else None, "epoch": self.epoch,
                     "step": self.global_step}
        if self.dist.is_main and path is not None:
            atomic_link(path, self.checkpoint_dir / BEST_CHECKPOINT)
            (self.checkpoint_dir / BEST_RECORD).write_text(json.dumps(self.best) + "\n")
        self._log("best", {**self.best, "selected_on": "test set (train.keep_best)"},
                  step=self.global_step)
        if self.dist.is_main:
            print(f"[keep_best] Rank-1 {100 * score:.2f} ({settings[0]}) is the best so far: "
                  f"{self.checkpoint_dir / BEST_CHECKPOINT} -- SELECTED ON THE TEST SET",
                  file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ checkpoints

    def _position(self) -> dict[str, Any]:
        return {
            "stage": self.stage.name if self.stage is not None else None,
            "stage_index": self.stage_index,
            "epoch": self.epoch,
            "step": self.global_step,
            "stage_step": self.stage_step,
        }

    def _save_checkpoint(self, stage_done: bool) -> Path | None:
        """Write ``last.pt`` (rank 0; every rank contributes its RNG and sampler state)."""
        assert self.stage is not None
        sampler = self.stage.sampler
        local = {
            "rng": capture_rng_state(),
            "epoch_rng": self._epoch_rng,
            "sampler": sampler.state_dict(batches_consumed=self.step_in_epoch)
            if sampler is not None else None,
        }
        ranks = all_gather_object(local)
        if not self.dist.is_main:
            return None
        assert self.optimizer is not None and self.scheduler is not None
        state = {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "vireid_version": vireid.__version__,
            "torch_version": str(torch.__version__),
            "config": self.cfg.to_dict(),
            "method_name": self.method.name,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "progress": {
                "stage": self.stage.name,
                "stage_index": self.stage_index,
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "stage_step": self.stage_step,
                "global_step": self.global_step,
                "stage_done": stage_done,
            },
            "world_size": self.dist.world_size,
            "ranks": ranks,
        }
        path = atomic_save(state, self.checkpoint_dir / LAST_CHECKPOINT)
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ output

    def _log(self, kind: str, record: Mapping[str, Any], step: int | None = None) -> None:
        if self.log is not None:
            self.log.log(kind, {**self._position(), **record}, step=step)

    def _progress_bar(self, total: int | None, initial: int, description: str) -> Any:
        show = self.cfg.train.log.progress and self.dist.is_main and sys.stderr.isatty()
        if not show:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=description, leave=False, dynamic_ncols=True)
