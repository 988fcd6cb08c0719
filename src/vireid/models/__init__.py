"""Models: the CLIP backbone adapter (clip), its registry and builder (factory), weight
loading (weights, pos_embed), prompt learners, heads and temporal modules."""

from vireid.models.clip import (
    FROZEN_PARTS,
    ClipModel,
    ResNetEncoder,
    TextEncoder,
    VisualEncoder,
    VisualOutput,
    VitEncoder,
    get_tokenizer,
)
from vireid.models.factory import backbone_config, build_clip, list_backbones, register_backbone
from vireid.models.heads import BNNeck, Classifier, GeM
from vireid.models.pos_embed import resize_grid_embedding
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
    "backbone_config",
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

