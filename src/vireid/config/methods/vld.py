"""Options of VLD (``method.name: vld``).

Torch-free, so that configs load without importing the method. Defaults follow the
official code (github Visuang/VLD); docs/methods.md#vld-code-paper-and-our-defaults lists where our
defaults and the code differ.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vireid.config.schema import MethodConfig

VLD_TEMPLATE = "A X X X X person observed in both day and night conditions."
"""The invariant-modality prompt of VLD's code (one template for both modalities)."""


class VLDConfig(MethodConfig):
    """Options of VLD (defaults: the official code; see vireid.methods.vld)."""

    name: Literal["vld"] = "vld"
    # invariant-modality language prompts
    template: str = Field(VLD_TEMPLATE, description="Prompt shared by both modalities; each X "
                          "is one learned token per identity (code: 4 tokens).")
    # spatial-temporal prompting (STH + STA)
    stp: bool = Field(True, description="Spatial-temporal prompting: T x T prompt tokens "
                      "exchanged between frames (STH) and their aggregation (STA). Off: "
                      "frames independent, class-token feature only.")
    sth_start_block: int = Field(9, ge=0, description="0-based block before which the prompt "
                                 "tokens are appended (code: STH_start_layer 9 of 12); they are "
                                 "transposed between frames before every later block.")
    prompt_init_std: float = Field(1.0, gt=0, description="Std of the prompt tokens' normal "
                                   "init (code: torch.randn, std 1).")
    sta_heads: int | None = Field(None, ge=1, description="Heads of the STA attention; null = "
                                  "width / 64 (code: 12).")
    # losses (code: core/video_train.py, main.py weights)
    id_weight: float = Field(1.0, ge=0, description="Weight of each backbone ID cross-entropy "
                             "(768-d and 512-d heads; code: 1).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="ID smoothing (code: none).")
    i2t_weight: float = Field(0.08, ge=0, description="Image->text cross-entropy on raw dot "
                              "products (code: weight_a 0.08).")
    sta_id_weight: float = Field(0.4, ge=0, description="STA ID cross-entropy (code: "
                                 "weight_b 0.4).")
    triplet_weight: float = Field(1.0, ge=0, description="Weight of each WRT on the backbone "
                                  "features (last-block input, class token, projection).")
    sta_triplet_weight: float = Field(1.0, ge=0, description="WRT on the STA feature (code: "
                                      "weight_c 1.0).")
    wrt_normalizer: Literal["official", "exact"] = Field(
        "official", description="WRT softmax as the code computes it (+1e-6 in the normaliser, "
        "no max-shift on negatives) or the exact masked softmax.")
    # recipe
    iterations_per_epoch: int | None = Field(
        200, ge=1, description="Batches per epoch (code: --steps 200); null = one pass of the "
        "sampler.")
    per_frame_augment: bool = Field(True, description="Crop, flip, erasing and channel choice "
                                    "drawn per frame (code) instead of once per clip.")
    channel_exchange_prob: float = Field(
        0.5, ge=0, le=1, description="Share of visible clips given one random channel in all "
        "three (code: a coin per tracklet, 'transform_color2').")
    interpolation: Literal["bilinear", "bicubic"] = Field(
        "bilinear", description="Resize filter (code: torchvision's default, bilinear).")
