"""Options of the CLIP-ReID baseline (``method.name: clipreid``).

Torch-free, so that configs load without importing the method.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vireid.config.schema import MethodConfig


class ClipReIDConfig(MethodConfig):
    """Options of the CLIP-ReID baseline (defaults: the paper's recipe)."""

    name: Literal["clipreid"] = "clipreid"
    template: str = Field("A photo of a X X X X person.", description="Prompt; each X is learned.")
    id_loss_weight: float = Field(0.25, ge=0, description="Weight of each ID cross-entropy.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="ID cross-entropy smoothing.")
    triplet_weight: float = Field(1.0, ge=0, description="Weight of the triplet terms.")
    triplet_margin: float | None = Field(0.3, description="Triplet margin; null = soft margin.")
    i2t_weight: float = Field(1.0, ge=0, description="Weight of the image->text cross-entropy.")
    i2t_label_smoothing: float = Field(
        0.1, ge=0, lt=1, description="Image->text cross-entropy smoothing (official code: the "
        "ID loss's CrossEntropyLabelSmooth, 0.1; 0 = plain cross-entropy).")
    camera_tokens: Literal["cls", "all"] = Field(
        "cls", description="Tokens that receive the camera embedding when "
        "model.camera_embedding is on (official code: the class token only).")
    neck_feat: Literal["after", "before"] = Field(
        "after", description="Inference feature after or before the BN necks."
    )

