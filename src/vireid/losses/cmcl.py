"""Cross-modality consistency loss (CMCL) of X-ReID (docs/methods.md#x-reid-xreid).

The temporally pooled output of an intra-modal interaction branch (SII or LII)
of a clip is pulled towards its cross-modal counterpart (the same token after
the cross-modal interaction with the same identity's other-modality clip):
the mean squared distance between the two.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["cross_modal_consistency_loss"]


def cross_modal_consistency_loss(
    intra: torch.Tensor, cross: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """Mean over clips of the squared distance between ``intra`` and ``cross`` (B, D).

    ``reduction="mean"`` averages the squared differences over the D channels too
    (``F.mse_loss``); ``"sum"`` sums them (the squared Euclidean distance). An empty
    batch gives 0 (still attached to the graph).
    """
    if intra.shape != cross.shape or intra.dim() != 2:
        raise ValueError(f"expected two (B, D) tensors, got {tuple(intra.shape)} and "
                         f"{tuple(cross.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    squared = (intra.float() - cross.float()).pow(2)
    if intra.shape[0] == 0:
        return squared.sum()
    per_clip = squared.mean(1) if reduction == "mean" else squared.sum(1)
    return per_clip.mean()
