"""Optimiser of a stage, built from its :class:`~vireid.config.StageConfig`.

Each :class:`~vireid.methods.base.ParamGroup` of the stage becomes one or two
optimiser groups:

- lr = ``stage.lr * lr_multipliers.get(group.name, 1)``;
- weight decay = ``group.weight_decay`` if the method set it, else the stage's
  ``weight_decay``;
- when the stage sets ``weight_decay_bias`` or a ``bias_lr_factor`` other than 1,
  biases (parameters whose name ends in ``bias``) move to a group ``<name>.bias``
  with ``lr * bias_lr_factor`` (CLIP-ReID ``make_optimizer``) and the weights of
  normalisation layers to a group ``<name>.norm`` with the group's lr; both get
  decay ``weight_decay_bias`` when it is set (StageConfig: "biases and norms").

A multiplier naming no group of the stage is an error (a typo would otherwise
silently train at the base lr).

Every optimiser group carries ``name`` and ``base_lr`` keys (the scheduler
scales ``base_lr``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.optim import SGD, Adam, AdamW, Optimizer

from vireid.config import StageConfig
from vireid.methods.base import ParamGroup

__all__ = ["build_optimizer", "trainable_parameters"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _parameter_names(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}


def _norm_parameter_ids(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def trainable_parameters(
    model: nn.Module, groups: Sequence[ParamGroup], stage_name: str = "?"
) -> list[nn.Parameter]:
    """The parameters of ``groups``, checked: each once, each registered in ``model``.

    A parameter that is not registered in ``model`` would train but never be
    saved in a checkpoint, so it is an error, as is a parameter in two groups.
    """
    names = _parameter_names(model)
    seen: dict[int, str] = {}
    params: list[nn.Parameter] = []
    for group in groups:
        for param in group.params:
            if not isinstance(param, nn.Parameter):
                raise TypeError(
                    f"stage {stage_name!r}, group {group.name!r}: expected nn.Parameter, "
                    f"got {type(param).__name__}"
                )
            key = id(param)
            if key not in names:
                raise ValueError(
                    f"stage {stage_name!r}, group {group.name!r}: a parameter of shape "
                    f"{tuple(param.shape)} is not registered in the method, so it would not be "
                    "saved in checkpoints"
                )
            if key in seen:
                raise ValueError(
                    f"stage {stage_name!r}: parameter {names[key]!r} is in groups "
                    f"{seen[key]!r} and {group.name!r}"
                )
            seen[key] = group.name
            params.append(param)
    return params


def build_optimizer(
    model: nn.Module, groups: Sequence[ParamGroup], cfg: StageConfig, stage_name: str = "?"
) -> Optimizer:
    """The optimiser for ``groups`` (parameters of ``model``) with the settings of ``cfg``."""
    trainable_parameters(model, groups, stage_name)  # validation
    names = _parameter_names(model)
    norm_ids = _norm_parameter_ids(model)
    split_bias = cfg.weight_decay_bias is not None or cfg.bias_lr_factor != 1.0
    unknown = sorted(set(cfg.lr_multipliers) - {g.name for g in groups})
    if unknown:
        raise ValueError(
            f"train.stages.{stage_name}.lr_multipliers names {unknown}, but the stage's "
            f"parameter groups are {[g.name for g in groups]}"
        )
    torch_groups: list[dict[str, Any]] = []
    for group in groups:
        if not group.params:
            continue
        lr = cfg.lr * cfg.lr_multipliers.get(group.name, 1.0)
        decay = cfg.weight_decay if group.weight_decay is None else group.weight_decay
        main: list[nn.Parameter] = []
        biases: list[nn.Parameter] = []
        norms: list[nn.Parameter] = []
        for param in group.params:
            is_bias = names[id(param)].endswith("bias")
            if split_bias and is_bias:
                biases.append(param)
            elif split_bias and id(param) in norm_ids:
                norms.append(param)
            else:
                main.append(param)
        bias_decay = cfg.weight_decay_bias if cfg.weight_decay_bias is not None else decay
        for suffix, params, group_lr, group_decay in (
            ("", main, lr, decay),
            (".bias", biases, lr * cfg.bias_lr_factor, bias_decay),
            (".norm", norms, lr, bias_decay),
        ):
            if params:
                torch_groups.append(
                    {
                        "params": params,
                        "lr": group_lr,
                        "base_lr": group_lr,
                        "weight_decay": group_decay,
                        "name": group.name + suffix,
                    }
                )
    if not torch_groups:
        raise ValueError(f"stage {stage_name!r} has no parameters to train")
    if cfg.optimizer == "sgd":
        return SGD(torch_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    optimizer_class = Adam if cfg.optimizer == "adam" else AdamW
    return optimizer_class(
        torch_groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
