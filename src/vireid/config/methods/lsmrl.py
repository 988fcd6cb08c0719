"""Options of LSMRL (``method.name: lsmrl``).

Torch-free, so that configs load without importing the method. LSMRL is VLD's
framework (:class:`~vireid.config.methods.vld.VLDConfig`: prompts, losses, recipe,
test feature, all from VLD's code) with STFL in place of VLD's spatial-temporal
prompting, plus SD, CMI and two modality-level losses. Everything below is our
assumption: only LSMRL's abstract could be read (docs/methods.md#lsmrl-lsmrl).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vireid.config.methods.vld import VLD_TEMPLATE, VLDConfig

SHARED_TEMPLATE = VLD_TEMPLATE
"""LSMRL's modality-shared prompt: VLD's (the abstract: "modality-shared prompts")."""


class LSMRLConfig(VLDConfig):
    """Options of LSMRL: VLD's (inherited, with their defaults from VLD's code) and the
    LSMRL-specific designs (assumptions, see vireid.methods.lsmrl)."""

    name: Literal["lsmrl"] = "lsmrl"
    stp: bool = Field(False, description="VLD's spatial-temporal prompting (STH + STA); LSMRL "
                      "replaces it by STFL (turn stfl off to use it).")
    # STFL
    stfl: bool = Field(True, description="Spatial-temporal blocks (off: VLD's trunk).")
    basic_blocks: int = Field(6, ge=0, description="STFL: first blocks, frames independent.")
    grouped_blocks: int = Field(3, ge=0, description="STFL: next blocks, grouped frames; the "
                                "remaining blocks use the temporal patch shift.")
    group_size: int = Field(2, ge=1, description="STFL: consecutive frames per group (G).")
    shift_share: float = Field(0.25, ge=0, le=1, description="STFL: share of patch positions "
                               "shifted (half from t-1, half from t+1).")
    # SD
    sd: bool = Field(True, description="Semantic diffusion of the text bank into frame tokens.")
    sd_zero_init: bool = Field(True, description="SD output projection starts at zero.")
    text_refresh: Literal["step", "epoch"] = Field(
        "step", description="Text features of all identities with gradient every step (VLD's "
        "code), or a bank per epoch plus the batch identities with gradient.")
    # CMI
    cmi: bool = Field(True, description="Cross-modal interaction block.")
    cmi_inference: Literal["self", "skip"] = Field(
        "self", description="At inference: the CMI block as self-attention, or skipped.")
    heads: int | None = Field(None, ge=1, description="Heads of SD / CMI; null = D/64.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP width ratio of the CMI block.")
    # modality-level losses
    center_weight: float = Field(1.0, ge=0, description="Cross-modal centre alignment weight "
                                 "(0 = off).")
    center_text_weight: float = Field(1.0, ge=0, description="Centre-to-text contrastive "
                                      "weight (0 = off).")
    center_text_temperature: float = Field(0.07, gt=0, description="Its temperature.")
