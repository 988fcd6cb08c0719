"""The contract between a method and the training engine.

A method is an ``nn.Module`` that owns its model and declares its training
stages. The engine knows nothing method-specific: for each :class:`Stage` it
freezes every parameter but the stage's, builds the optimiser and scheduler
from ``cfg.train.stages[stage.name]``, and calls ``stage.step(batch)`` on the
batches of ``stage.loader``; the method computes its losses there. At test
time the evaluator calls :meth:`Method.extract` on batches built by
:meth:`Method.test_loader`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from vireid.data.loaders import collate_samples, seed_worker
from vireid.data.samplers import CrossModalIdentitySampler
from vireid.data.types import Sample


class ResumableSampler(Protocol):
    """What the engine needs from a stage's sampler to resume mid-epoch."""

    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self, batches_consumed: int | None = None) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class ParamGroup:
    """Parameters that share an optimiser setting.

    ``name`` selects a learning-rate multiplier in the stage config
    (``lr_multipliers: {name: factor}``); unnamed multipliers default to 1.
    """

    name: str
    params: list[nn.Parameter]
    weight_decay: float | None = None  # None: the stage's weight_decay


@dataclass
class Stage:
    """One training stage.

    ``param_groups`` are the only parameters that train in this stage (the
    engine sets ``requires_grad`` accordingly). ``loader`` yields batches
    (dicts of tensors and lists); ``sampler``, when given, is put to the epoch
    and saved in checkpoints. ``step`` returns a dict with a scalar ``loss``
    to minimise and any other scalars to log. ``setup`` runs once when the
    stage starts (and again on resume), e.g. to cache frozen features;
    ``on_epoch_start(epoch)`` before every epoch.
    """

    name: str
    param_groups: Callable[[], Sequence[ParamGroup]]
    loader: Iterable[dict[str, Any]]
    step: Callable[[dict[str, Any]], dict[str, torch.Tensor]]
    sampler: ResumableSampler | None = None
    setup: Callable[[], None] | None = None
    on_epoch_start: Callable[[int], None] | None = None
    train_modules: Callable[[], Iterable[nn.Module]] | None = None
    """Modules put in train mode during the stage (default: the whole method)."""
    extras: dict[str, Any] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of every method (one file per method under ``vireid.methods``).

    Subclasses set ``cfg`` (the resolved Config), ``data`` (the ReIDData),
    ``rank`` and ``world_size``; the data helpers below read them.
    """

    name: str = "method"

    def _loader(self, dataset, **kwargs) -> DataLoader:
        """A DataLoader over ``dataset`` with the config's workers and the project's collate."""
        d = self.cfg.data
        return DataLoader(
            dataset, collate_fn=collate_samples, num_workers=d.workers,
            worker_init_fn=seed_worker, persistent_workers=False,
            pin_memory=d.pin_memory and torch.cuda.is_available(), **kwargs,
        )

    def cross_modal_sampler(self, stage: str) -> CrossModalIdentitySampler:
        """P identities x K samples per modality for ``stage`` (the stage's own P/K, else
        ``data.*``); an impossible composition is an error naming the config key."""
        d = self.cfg.data
        stage_cfg = self.cfg.train.stages.get(stage)
        per_stage = stage_cfg is not None and stage_cfg.identities_per_batch is not None
        P = stage_cfg.identities_per_batch if per_stage else d.identities_per_batch
        K = (stage_cfg.instances_per_identity if stage_cfg and stage_cfg.instances_per_identity
             else d.instances_per_identity)
        try:
            return CrossModalIdentitySampler.from_samples(
                self.data.train, P, K, seed=self.cfg.seed, rank=self.rank,
                world_size=self.world_size,
            )
        except ValueError as err:
            key = (f"train.stages.{stage}.identities_per_batch" if per_stage
                   else "data.identities_per_batch")
            raise self.cfg.error(key, f"impossible batch composition: {err}") from None

    def stages(self) -> list[Stage]:
        """The training stages, in the order they run."""
        raise NotImplementedError

    def compile_modules(self) -> list[nn.Module]:
        """Modules ``torch.compile`` may compile in place when ``train.compile`` is on
        (default: none, and the engine compiles ``stage.step`` instead)."""
        return []

    def extract(self, batch: dict[str, Any]) -> torch.Tensor:
        """Inference features (B, F) of a batch built by :meth:`test_loader`."""
        raise NotImplementedError

    def test_loader(self, samples: Sequence[Sample], batch_size: int) -> Iterable[dict[str, Any]]:
        """Batches of test samples, in order, each with the keys :meth:`extract` reads."""
        raise NotImplementedError
