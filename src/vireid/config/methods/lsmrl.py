"""Options of LSMRL (``method.name: lsmrl``).

Torch-free, so that configs load without importing the method.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vireid.config.schema import MethodConfig

SHARED_TEMPLATE = "A X X X X person observed in both day and night conditions."
"""LSMRL's modality-shared prompt (methods.md section 3); each X is learned."""


class LSMRLConfig(MethodConfig):
    """Options of LSMRL (defaults: methods.md section 3; all assumptions, see the module)."""

    name: Literal["lsmrl"] = "lsmrl"
    # STFL
    stfl: bool = Field(True, description="Spatial-temporal blocks (off: frames independent).")
    basic_blocks: int = Field(6, ge=0, description="STFL: first blocks, frames independent.")
    grouped_blocks: int = Field(3, ge=0, description="STFL: next blocks, grouped frames; the "
                                "remaining blocks use the temporal patch shift.")
    group_size: int = Field(2, ge=1, description="STFL: consecutive frames per group (G).")
    shift_share: float = Field(0.25, ge=0, le=1, description="STFL: share of patch positions "
                               "shifted (half from t-1, half from t+1).")
    # SD
    template: str = Field(SHARED_TEMPLATE, description="Shared prompt; each X is learned.")
    sd: bool = Field(True, description="Semantic diffusion of the text bank into frame tokens.")
    sd_zero_init: bool = Field(True, description="SD output projection starts at zero.")
    text_refresh: Literal["step", "epoch"] = Field(
        "step", description="Text features of all identities with gradient every step, or a "
        "bank per epoch plus the batch identities with gradient.")
    # CMI
    cmi: bool = Field(True, description="Cross-modal interaction block.")
    cmi_inference: Literal["self", "skip"] = Field(
        "self", description="At inference: the CMI block as self-attention, or skipped.")
    heads: int | None = Field(None, ge=1, description="Heads of SD / CMI; null = D/64.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP width ratio of the CMI block.")
    # losses
    id_weight: float = Field(0.25, ge=0, description="Weight of each ID cross-entropy.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="ID cross-entropy smoothing.")
    triplet_weight: float = Field(1.0, ge=0, description="Batch-hard triplet weight.")
    triplet_margin: float | None = Field(0.3, description="Triplet margin; null = soft margin.")
    i2t_weight: float = Field(1.0, ge=0, description="Image->text cross-entropy weight.")
    center_weight: float = Field(1.0, ge=0, description="Cross-modal centre alignment weight "
                                 "(0 = off).")
    center_text_weight: float = Field(1.0, ge=0, description="Centre-to-text contrastive "
                                      "weight (0 = off).")
    center_text_temperature: float = Field(0.07, gt=0, description="Its temperature.")
    # inference
    neck_feat: Literal["after", "before"] = Field(
        "after", description="Inference feature after or before the BN necks.")
