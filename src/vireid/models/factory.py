"""Backbone registry and :func:`build_clip`: architecture configs (open_clip's JSON
layout) by name, and the assembly of a :class:`~vireid.models.clip.ClipModel` from
one, with its weights loaded through :mod:`vireid.models.weights`."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from vireid.models.clip import (
    DEFAULT_IMAGE_SIZE,
    ClipModel,
    ResNetEncoder,
    TextEncoder,
    VisualEncoder,
    VitEncoder,
)
from vireid.models.synthetic import CONFIGS as SYNTHETIC_CONFIGS
from vireid.models.weights import download_pretrained, load_weights

__all__ = ["backbone_config", "build_clip", "list_backbones", "register_backbone"]


_TINY_TEXT_CFG: dict[str, Any] = {
    # context length and vocabulary of the real CLIP text tower, so that the BPE
    # tokenizer shipped with open_clip works unchanged (open_clip model_configs).
    "context_length": 77,
    "vocab_size": 49408,
    "width": 64,
    "heads": 2,
    "layers": 2,
}

_LOCAL_CONFIGS: dict[str, dict[str, Any]] = {
    # Tiny variants of the two real families, for tests and the CPU demo.
    "tiny-vit": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 224,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": dict(_TINY_TEXT_CFG),
    },
    "tiny-rn50": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 224,
            "layers": [1, 1, 1, 1],
            "width": 16,
            "head_width": 64,
            "patch_size": None,
        },
        "text_cfg": dict(_TINY_TEXT_CFG),
    },
}
# 8-pixel patches: a 16x8 grid at 128x64. From scratch, 16-pixel patches (8x4 tokens
# of 768 pixels) learn far too slowly for CPU-sized runs.
_LOCAL_CONFIGS["tiny-vit-p8"] = copy.deepcopy(_LOCAL_CONFIGS["tiny-vit"])
_LOCAL_CONFIGS["tiny-vit-p8"]["vision_cfg"]["patch_size"] = 8
_LOCAL_CONFIGS.update(copy.deepcopy(SYNTHETIC_CONFIGS))  # the shipped synthetic CLIPs

_DOCUMENTED_BACKBONES = ("RN50", "ViT-B-16")
"""The real architectures the methods use (docs/methods.md); taken from open_clip's configs."""


def register_backbone(name: str, config: dict[str, Any]) -> None:
    """Register an architecture config (open_clip's JSON layout) under ``name``."""
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config:
            raise ValueError(f"backbone config {name!r} lacks the key {key!r}")
    _LOCAL_CONFIGS[name] = copy.deepcopy(config)


def list_backbones() -> list[str]:
    """Backbone names :func:`build_clip` accepts (open_clip's ViT and ModifiedResNet
    configs are accepted too; these are the ones the project documents and tests)."""
    return sorted(set(_LOCAL_CONFIGS) | set(_DOCUMENTED_BACKBONES))


def backbone_config(name: str) -> dict[str, Any]:
    """The architecture config of ``name`` (a copy): the local registry first,
    then open_clip's bundled ``model_configs``."""
    if name in _LOCAL_CONFIGS:
        return copy.deepcopy(_LOCAL_CONFIGS[name])
    from open_clip import get_model_config

    config = get_model_config(name)
    if config is None:
        raise ValueError(
            f"unknown backbone {name!r}; known: {', '.join(list_backbones())} "
            "(or any open_clip ViT / ModifiedResNet config name)"
        )
    vision = config.get("vision_cfg", {})
    text = config.get("text_cfg", {})
    if vision.get("timm_model_name") or text.get("hf_model_name") or config.get("multimodal_cfg"):
        raise ValueError(
            f"backbone {name!r} uses a timm / Hugging Face tower; only CLIP ViT and "
            "ModifiedResNet image towers with the CLIP text transformer are supported"
        )
    return copy.deepcopy(config)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"{name} must be a positive int or an (H, W) pair, got {value!r}")
    return pair  # type: ignore[return-value]



def build_clip(
    backbone: str,
    image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
    *,
    weights: str | Path | None = None,
    pretrained: str | None = None,
    last_stride: int = 1,
    patch_stride: int | None = None,
    num_cameras: int = 0,
    camera_scale: float = 1.0,
    camera_tokens: str = "all",
    frozen: Sequence[str] = (),
    quick_gelu: bool = True,
    trust_torchscript_code: bool = False,
) -> ClipModel:
    """Build a CLIP model for re-identification.

    ``backbone``: ``ViT-B-16``, ``RN50`` (open_clip configs), ``tiny-vit``, ``tiny-vit-p8``,
    ``tiny-rn50`` (:func:`list_backbones`). ``image_size``: (H, W) input size.
    ``weights``: a local weight file (OpenAI TorchScript archive, open_clip
    checkpoint, safetensors; see :func:`vireid.models.weights.load_weights`).
    ``pretrained``: an open_clip tag (``openai``) downloaded through open_clip:
    only when given here, never implicitly. ``last_stride``: stride of the
    ResNet's layer4 (1 or 2). ``patch_stride``: ViT patch stride (None = the
    patch size). ``num_cameras`` > 0 adds a camera embedding (ViT only) scaled by
    ``camera_scale`` and added to ``camera_tokens`` ("all" tokens, as asked for
    X-ReID; "cls": the class token only, as CLIP-ReID's code does).
    ``frozen``: part names (:data:`FROZEN_PARTS`). ``quick_gelu``: OpenAI's CLIP
    weights were trained with QuickGELU (open_clip ``pretrained.py``: every
    ``openai`` tag has ``quick_gelu=True``), so it is the default.
    """
    if weights is not None and pretrained is not None:
        raise ValueError("give either weights (a local file) or pretrained (a tag), not both")
    size = _pair(image_size, "image_size")
    config = backbone_config(backbone)
    if pretrained is not None:  # fetch first: no point building a model that cannot be loaded
        weights = download_pretrained(backbone, str(pretrained))
    embed_dim = int(config["embed_dim"])
    vision = dict(config["vision_cfg"])
    text_cfg = dict(config["text_cfg"])
    from open_clip.transformer import QuickGELU

    act_layer: type[nn.Module] = QuickGELU if quick_gelu else nn.GELU
    head_width = int(vision.get("head_width", 64))
    layers = vision.get("layers", 12)
    if isinstance(layers, (list, tuple)):
        if num_cameras:
            raise ValueError(
                "num_cameras > 0 needs a ViT backbone; the camera embedding is ViT only"
            )
        if patch_stride is not None:
            raise ValueError("patch_stride applies to ViT backbones only")
        visual: VisualEncoder = ResNetEncoder(
            image_size=size,
            layers=layers,
            width=int(vision.get("width", 64)),
            heads=int(vision.get("width", 64)) * 32 // head_width,
            embed_dim=embed_dim,
            last_stride=last_stride,
        )
    else:
        visual = VitEncoder(
            image_size=size,
            patch_size=int(vision.get("patch_size", 16)),
            width=int(vision.get("width", 768)),
            layers=int(layers),
            heads=int(vision.get("width", 768)) // head_width,
            mlp_ratio=float(vision.get("mlp_ratio", 4.0)),
            embed_dim=embed_dim,
            act_layer=act_layer,
            patch_stride=patch_stride,
            num_cameras=num_cameras,
            camera_scale=camera_scale,
            camera_tokens=camera_tokens,
        )
    text = TextEncoder(
        context_length=int(text_cfg.get("context_length", 77)),
        vocab_size=int(text_cfg.get("vocab_size", 49408)),
        width=int(text_cfg.get("width", 512)),
        heads=int(text_cfg.get("heads", 8)),
        layers=int(text_cfg.get("layers", 12)),
        mlp_ratio=float(text_cfg.get("mlp_ratio", 4.0)),
        embed_dim=embed_dim,
        act_layer=act_layer,
    )
    # CLIP's initial temperature, log(1/0.07) (open_clip model.py).
    model = ClipModel(visual, text, backbone=backbone, logit_scale=math.log(1 / 0.07))
    if weights is not None:
        model.weights_report = load_weights(
            model, weights, trust_torchscript_code=trust_torchscript_code
        )
    if frozen:
        model.freeze(list(frozen))
    return model
