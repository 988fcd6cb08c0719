"""Architectures of the synthetic CLIPs and the weight files shipped in the package.

The configs use open_clip's JSON layout and sit in the backbone registry of
:mod:`vireid.models.factory`; :mod:`vireid.clip_pretrain` (the training app) makes
the weight files, this module says where the shipped ones are.
Both keep open_clip's BPE tokenizer and its 49,408-token vocabulary, so every text
path is the real one; the context is 32 tokens (captions are shorter), which the CLIP
text transformer supports as it is (its positional embedding has one row per
position). In a CLIP this small, most parameters sit in the token-embedding table
(49,408 x text width), which is why the text tower is narrow.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

SYNTHETIC_TAG = "synthetic"
"""``pretrained`` tag (``model.pretrained=synthetic``) of the shipped weights."""

PRETRAIN_IMAGE_SIZE: tuple[int, int] = (64, 32)
"""(H, W) the shipped CLIPs were pretrained at; other sizes resize the positional
embedding when the weights are loaded (as for OpenAI's 224x224 weights)."""

_TEXT_CFG: dict[str, Any] = {
    "context_length": 32,
    "vocab_size": 49408,  # open_clip's SimpleTokenizer vocabulary (bpe_simple_vocab_16e6)
    "width": 96,
    "heads": 4,
    "layers": 4,
}

CONFIGS: dict[str, dict[str, Any]] = {
    # ViT with 8-pixel patches: an 8x4 grid at 64x32.
    "synth-vit-p8": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 224, "layers": 4, "width": 192, "head_width": 32,
                       "patch_size": 8},
        "text_cfg": dict(_TEXT_CFG),
    },
    # ModifiedResNet (CLIP's RN50 family: 3-conv stem, anti-aliased bottlenecks,
    # attention pool), stages of 1, 2, 2, 1 blocks.
    "synth-rn": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 224, "layers": [1, 2, 2, 1], "width": 16,
                       "head_width": 64, "patch_size": None},
        "text_cfg": dict(_TEXT_CFG),
    },
}

SHIPPED: dict[str, tuple[str, str]] = {
    "synth-vit-p8": ("synth-vit-p8.safetensors",
                     "49a312ad61c300348b42f5b2d22b1ce690d070ed43d22661a0c0381a56bbd27e"),
    "synth-rn": ("synth-rn.safetensors",
                 "390b317df530fabf7e9ac27ef77d1d26fb2549e8f981bfe3f01a9c9134951c57"),
}
"""backbone -> (file name under ``vireid/assets/clip``, its SHA-256)."""


def assets_dir() -> Path:
    """The package folder holding the shipped weight files."""
    return Path(str(resources.files("vireid") / "assets" / "clip"))


def shipped_weights(backbone: str) -> Path:
    """The shipped ``synthetic`` weight file of ``backbone`` (fp16 safetensors, with a
    ``.sha256`` file beside it that :func:`~vireid.models.weights.load_weights` checks)."""
    if backbone not in SHIPPED:
        raise ValueError(
            f"no {SYNTHETIC_TAG!r} weights are shipped for backbone {backbone!r}; shipped: "
            f"{', '.join(sorted(SHIPPED)) or 'none'} (make your own with "
            f"`vireid clip pretrain --backbone {backbone} --out FILE`, then model.weights=FILE)"
        )
    path = assets_dir() / SHIPPED[backbone][0]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped weights of {backbone} are missing: {path}")
    return path
