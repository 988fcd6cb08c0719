"""Models: the CLIP backbone adapter, prompt learners, heads and weight loading."""

from vireid.models.clip import (
    FROZEN_PARTS,
    ClipModel,
    ResNetEncoder,
    TextEncoder,
    VisualEncoder,
    VisualOutput,
    VitEncoder,
    build_clip,
    get_tokenizer,
    list_backbones,
    register_backbone,
    resize_grid_embedding,
)
from vireid.models.heads import BNNeck, Classifier, GeM
from vireid.models.prompts import DEFAULT_TEMPLATE, PromptLearner
from vireid.models.weights import (
    WeightsDownloadError,
    WeightsError,
    WeightsNotFoundError,
    WeightsReport,
    download_pretrained,
    fetch_weights,
    load_weights,
    read_state_dict,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "FROZEN_PARTS",
    "BNNeck",
    "Classifier",
    "ClipModel",
    "GeM",
    "PromptLearner",
    "ResNetEncoder",
    "TextEncoder",
    "VisualEncoder",
    "VisualOutput",
    "VitEncoder",
    "WeightsDownloadError",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsReport",
    "build_clip",
    "download_pretrained",
    "fetch_weights",
    "get_tokenizer",
    "list_backbones",
    "load_weights",
    "read_state_dict",
    "register_backbone",
    "resize_grid_embedding",
]

# The synthetic CLIPs (vireid.clip_pretrain) register their architectures here.
from vireid.clip_pretrain.backbones import register as _register_synthetic  # noqa: E402

_register_synthetic()
