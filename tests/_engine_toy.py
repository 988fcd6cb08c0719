"""A tiny two-stage method on fixed random tensors, for the engine tests.

Stage ``prompt`` trains a prompt vector and the classifier with the backbone
frozen (in eval mode); stage ``finetune`` trains the backbone and the classifier.
Batches come from :class:`IdentitySampler` through a DataLoader, so samplers,
workers and resume are exercised as in real training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vireid.config import Config, config_from_dict
from vireid.data.samplers import IdentitySampler
from vireid.methods.base import Method, ParamGroup, Stage


class ToyData(Dataset):
    """Fixed features and labels; item ``i`` is always the same (no RNG in workers)."""

    def __init__(self, num_ids: int, per_id: int, dim: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(num_ids).repeat_interleave(per_id)
        centres = torch.randn(num_ids, dim, generator=generator)
        noise = 0.5 * torch.randn(self.labels.numel(), dim, generator=generator)
        self.x = centres[self.labels] + noise

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"x": self.x[index], "y": self.labels[index], "index": index}


class ToyMethod(Method):
    name = "toy"

    def __init__(
        self,
        num_ids: int = 6,
        per_id: int = 4,
        dim: int = 8,
        hidden: int = 16,
        identities_per_batch: int = 2,
        instances_per_identity: int = 2,
        num_batches: int | None = 3,
        workers: int = 0,
        dropout: float = 0.1,
        batchnorm: bool = True,
        rank: int = 0,
        world_size: int = 1,
        identity_order: str = "random",
        seed: int = 0,
    ) -> None:
        nn.Module.__init__(self)  # a toy: no Config or ReIDData for Method.__init__
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.prompt = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Linear(hidden, num_ids)
        self.toy_data = ToyData(num_ids, per_id, dim, seed)
        self.sampler_args = dict(
            num_identities=identities_per_batch, num_instances=instances_per_identity,
            seed=seed, rank=rank, world_size=world_size, num_batches=num_batches,
            identity_order=identity_order,
        )
        self.workers = workers
        self.seen: list[list[int]] = []  # dataset indices of every step
        self.poison: Callable[[int], bool] | None = None  # step number (1-based) -> NaN loss?
        self.observe: Callable[[str, dict[str, Any]], None] | None = None

    def make_sampler(self) -> IdentitySampler:
        return IdentitySampler(self.toy_data.labels.tolist(), **self.sampler_args)

    def _stage(self, name: str, groups: Callable[[], list[ParamGroup]], train_modules=None) -> Stage:
        sampler = self.make_sampler()
        loader = DataLoader(self.toy_data, batch_sampler=sampler, num_workers=self.workers)
        return Stage(
            name=name, param_groups=groups, loader=loader,
            step=lambda batch: self._step(name, batch), sampler=sampler,
            train_modules=train_modules,
        )

    def stages(self) -> list[Stage]:
        return [
            self._stage(
                "prompt",
                lambda: [ParamGroup("prompts", [self.prompt]),
                         ParamGroup("classifier", list(self.head.parameters()))],
                train_modules=lambda: [self.head],
            ),
            self._stage(
                "finetune",
                lambda: [ParamGroup("backbone", list(self.backbone.parameters())),
                         ParamGroup("classifier", list(self.head.parameters()))],
            ),
        ]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) + self.prompt

    def _step(self, stage: str, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.seen.append(batch["index"].tolist())
        if self.observe is not None:
            self.observe(stage, batch)
        feats = self.features(batch["x"])
        ce = F.cross_entropy(self.head(feats).float(), batch["y"])
        reg = 0.01 * feats.float().pow(2).mean()
        loss = ce + reg
        if self.poison is not None and self.poison(len(self.seen)):
            loss = loss * float("nan")
        return {"loss": loss, "ce": ce, "reg": reg}

    def extract(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.features(batch["x"])


def toy_config(**train: Any) -> Config:
    """Config for :class:`ToyMethod`; ``train`` keys override the train section
    (``stages`` merges per stage into the defaults)."""
    stages = {
        "prompt": {"epochs": 2, "lr": 0.05, "optimizer": "adam"},
        "finetune": {"epochs": 2, "lr": 0.02, "optimizer": "adam"},
    }
    for name, settings in train.pop("stages", {}).items():
        if settings is None:
            stages.pop(name, None)
        else:
            stages[name] = {**stages.get(name, {"epochs": 1, "lr": 0.01}), **settings}
    section = {
        "device": "cpu",
        "stages": stages,
        "checkpoint_every": 1,
        "log": {"every_steps": 1, "progress": False},
        **train,
    }
    return config_from_dict(
        {
            "name": "toy",
            "seed": 0,
            "data": {"name": "sysu", "root": "/nonexistent", "workers": 0},
            "method": {"name": "toy"},
            "train": section,
        }
    )
