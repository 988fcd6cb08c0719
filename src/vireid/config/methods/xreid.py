"""Options of X-ReID (``method.name: xreid``).

Torch-free, so that configs load without importing the method.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vireid.config.schema import MethodConfig


class XReIDConfig(MethodConfig):
    """Options of X-ReID (defaults: the paper's method; see the module docstring)."""

    name: Literal["xreid"] = "xreid"
    # ablation switches
    sii: bool = Field(True, description="Short-term intra-modal interaction (SII).")
    lii: bool = Field(True, description="Long-term intra-modal interaction (LII).")
    cii: bool = Field(True, description="Cross-modal interaction + CMCL (training only).")
    cpc: bool = Field(True, description="Prototype memories + CPCL (off: plain ID loss).")
    # MII
    sii_stride: int = Field(1, ge=1, description="SII temporal shift stride S.")
    sii_fold_div: int = Field(4, ge=2, description="SII: 1/fold_div of channels per direction.")
    sii_blocks: int = Field(2, ge=1, description="SII cross-attention blocks (paper: 2).")
    lii_stride: int = Field(2, ge=1, description="LII: class token of frame t-S queries frame t "
                            "(with lii_edge cyclic, S = T-1 is the code's t+1).")
    lii_blocks: int = Field(1, ge=1, description="LII cross-attention blocks.")
    lii_edge: Literal["cyclic", "self"] = Field(
        "cyclic", description="LII source of frames t < S: (t-S) mod T, or the frame itself.")
    mii_heads: int | None = Field(None, ge=1, description="Heads of the new blocks; null = D/64.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP width ratio of the new blocks.")
    detach_mii_input: bool = Field(
        True, description="MII/CII read the backbone tokens without gradient (X-ReID code).")
    camera_tokens: Literal["all", "cls"] = Field(
        "all", description="Tokens that receive the camera embedding (paper: all; code: cls).")
    # CPC
    memory_momentum: float = Field(0.2, ge=0, lt=1, description="mu (paper 0.2, code 0.1).")
    memory_temperature: float = Field(0.05, gt=0, description="tau of CPCL (code: 0.05).")
    memory_update_source: Literal["other", "both"] = Field(
        "other", description="Hard sample from the other modality (paper) or both (code).")
    memory_rebuild: Literal["every_epoch", "once"] = Field(
        "every_epoch", description="Rebuild the prototypes at every epoch (code) or once.")
    memory_sampling: Literal["first_of_chunk", "evenly", "rrs", "random_sorted"] | None = Field(
        None, description="Frames of the memory pass; null = data.video.test_sampling "
        "(first_of_chunk when that is dense).")
    memory_num_frames: int | None = Field(
        None, ge=1, description="T of the memory pass; null = the test T.")
    memory_camera_embedding: bool = Field(
        True, description="Camera embedding in the memory pass (code: none).")
    memory_bn_mode: Literal["eval", "train"] = Field(
        "eval", description="BN-necks in the memory pass: running statistics, or batch "
        "statistics with running averages updated (code, first epoch: train).")
    # sampling and augmentation
    sample_with_replacement: bool = Field(
        False, description="Draw the K clips of an identity with replacement (code: always).")
    sampler_replay: bool = Field(
        False, description="Draw one batch order once and replay it across epochs (code).")
    iterations_per_epoch: int | None = Field(
        None, ge=1, description="Batches per epoch; null = the sampler's count (code: 300).")
    erasing_per_frame: bool = Field(
        False, description="Random erasing drawn per frame (code) instead of per clip.")
    # losses
    id_weight: float = Field(1.0, ge=0, description="ID cross-entropy weight (code: 0.25).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="ID cross-entropy smoothing.")
    triplet_weight: float = Field(1.0, ge=0, description="Batch-hard triplet weight.")
    triplet_margin: float | None = Field(0.3, description="Triplet margin; null = soft margin.")
    cpcl_weight: float = Field(1.0, ge=0, description="CPCL weight.")
    cmcl_weight: float = Field(1.0, ge=0, description="CMCL weight.")
    cmcl_reduction: Literal["mean", "sum"] = Field(
        "mean", description="CMCL over channels: mean (MSE) or sum (squared distance).")
    frame_id_loss: bool = Field(True, description="Frame-level ID terms (X-ReID code).")
    frame_id_weight: float | None = Field(
        None, ge=0, description="Weight of the frame-level ID terms; null = 1/T (code).")
    # inference
    mii_neck: bool = Field(True, description="BN-neck on O in the inference feature (code).")

