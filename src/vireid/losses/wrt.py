"""Weighted regularisation triplet loss (WRT).

Ye, Shen, Lin, Xiang, Shao, Hoi, "Deep Learning for Person Re-identification: A
Survey and Outlook" (TPAMI 2021), the AGW baseline; used by CAJ (ICCV 2021) and
CSDN (TMM 2025) for visible-infrared re-identification.

For each anchor, the positive distances are averaged with softmax weights of the
distances themselves (far positives weigh more) and the negative distances with
softmax weights of their negatives (near negatives weigh more); the loss is the
soft margin ``log(1 + exp(d_pos - d_neg))`` averaged over anchors. As in the
reference code the positives include the anchor itself (distance ~0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.losses.triplet import pairwise_distances

__all__ = ["weighted_regularized_triplet_loss"]


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of ``scores`` over the entries where ``mask`` is true (0 elsewhere)."""
    masked = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(masked, dim=1).masked_fill(~mask, 0.0)


def _reference_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference code's weights: shift by the row maximum of ``scores * mask``
    (0 for the negative branch, whose scores are all negative), normaliser + 1e-6."""
    mask = mask.to(scores.dtype)
    shift = (scores * mask).amax(1, keepdim=True)
    weights = torch.exp(scores - shift) * mask
    return weights / (weights.sum(1, keepdim=True) + 1e-6)


def weighted_regularized_triplet_loss(
    features: torch.Tensor, labels: torch.Tensor, normalize: bool = False,
    normalizer: str = "exact",
) -> torch.Tensor:
    """WRT loss of ``features`` (N, D) with identity ``labels`` (N,).

    ``normalize`` L2-normalises the features first (the reference default: off).
    Every anchor needs at least one negative in the batch. ``normalizer``:
    ``"exact"`` masked softmax, or ``"official"``, the reference code's (AGW, CAJ,
    CSDN, VLD ``TripletLoss_WRT``): 1e-6 added to the normaliser and, for the
    negatives, no effective max-shift, so that far negatives underflow and the
    loss grows again once they are ~10 or more away.
    """
    if normalizer not in ("exact", "official"):
        raise ValueError(f"normalizer must be 'exact' or 'official', got {normalizer!r}")
    if features.dim() != 2 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"expected features (N, D) and labels (N,), got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    x = F.normalize(features.float(), dim=1) if normalize else features.float()
    dist = pairwise_distances(x)
    same = labels[:, None] == labels[None, :]
    different = ~same
    if not bool(different.any(1).all()):
        raise ValueError("the WRT triplet loss needs at least two identities in the batch")
    softmax = _masked_softmax if normalizer == "exact" else _reference_softmax
    weight_pos = softmax(dist, same)
    weight_neg = softmax(-dist, different)
    furthest_positive = (dist * weight_pos).sum(1)
    closest_negative = (dist * weight_neg).sum(1)
    return F.softplus(furthest_positive - closest_negative).mean()
