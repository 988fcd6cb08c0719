"""Triplet losses on Euclidean distances."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances (N, M), computed in float32 and clamped away from 0 for a safe sqrt."""
    x = x.float()
    y = x if y is None else y.float()
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2 * x @ y.T
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet_loss(
    features: torch.Tensor, labels: torch.Tensor, margin: float | None = 0.3
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., 2017): for each anchor the farthest
    positive and the nearest negative. ``margin=None`` uses the soft margin
    ``log(1 + exp(d_ap - d_an))``. Margin 0.3: CLIP-ReID and the ReID
    "bag of tricks" (Luo et al., 2019).
    """
    dist = pairwise_distances(features)
    same = labels[:, None] == labels[None, :]
    d_ap = dist.masked_fill(~same, float("-inf")).amax(1)
    d_an = dist.masked_fill(same, float("inf")).amin(1)
    if torch.isinf(d_an).any():
        raise ValueError("batch-hard triplet loss needs at least two identities in the batch")
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()
