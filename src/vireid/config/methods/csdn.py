"""Options of CSDN (``method.name: csdn``).

Torch-free, so that configs load without importing the method.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vireid.config.schema import MethodConfig


class CSDNConfig(MethodConfig):
    """Options of CSDN (defaults: the official code's recipe)."""

    name: Literal["csdn"] = "csdn"
    template: str = Field("A photo of a X X X X person.", description="Prompt; each X is learned.")
    prompts: Literal["modality_specific", "shared"] = Field(
        "modality_specific", description="One prompt learner per modality, or one for both."
    )
    fusion: Literal["attention", "sum", "visible_only"] = Field(
        "attention", description="SII: attention fusion, t^v + t^r, or t^v alone."
    )
    fusion_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after q, k, v (SII).")
    stems: Literal["modality_specific", "shared"] = Field(
        "modality_specific", description="A stem per modality, or one shared stem."
    )
    stem_relu: Literal["last", "all"] = Field(
        "last", description="ResNet stem: ReLU after bn3 only (official code) or after each BN (CLIP)."
    )
    gem_p: float = Field(3.0, gt=0, description="Initial GeM exponent (learned).")
    msel: bool = Field(True, description="Modality-shared enhancement loss on f and g.")
    msel_weight: float = Field(1.0, ge=0, description="Weight of each MSEL term.")
    id_loss_weight: float = Field(1.0, ge=0, description="Weight of each ID cross-entropy.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="ID cross-entropy smoothing.")
    triplet_weight: float = Field(0.15, ge=0, description="Weight of the WRT terms (lambda1).")
    i2t_visible_weight: float = Field(
        0.05, ge=0, description="Weight of CE(g^v . T^f) (lambda2)."
    )
    i2t_infrared_weight: float = Field(
        0.10, ge=0, description="Weight of CE(g^r . T^f) (lambda3)."
    )
    wrt_normalizer: Literal["exact", "official"] = Field(
        "exact", description="WRT softmax weights: exact masked softmax, or the official code's "
        "normaliser (+1e-6, no effective max-shift for negatives: the negative term collapses "
        "once the nearest negatives are more than ~10 apart).")
    sii_features: Literal["cached", "train_mode"] = Field(
        "cached", description="Stage-2 image features: the stage-1 cache (eval mode), or "
        "re-extracted as the official code does (BatchNorm in train mode on single-modality "
        "batches, updating its running statistics).")
    sample_with_replacement: bool = Field(
        True, description="Draw the K images of an identity with replacement (official sampler)."
    )

