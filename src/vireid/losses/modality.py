"""Modality-level losses of LSMRL (docs/methods.md#lsmrl-lsmrl; the paper's abstract names
two, for discrimination and generalisation, without equations: these are our
design, each an assumption).

Both work on per-(identity, modality) centres of ℓ2-normalised features in the
batch:

* :func:`cross_modal_center_loss`: the squared Euclidean distance between the
  visible and the infrared centre of each identity present in both modalities,
  averaged over those identities;
* :func:`center_text_contrastive_loss`: each centre (re-normalised) is
  classified among the identity text features by cosine similarity over a
  temperature, the target being its own identity's shared text feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["center_text_contrastive_loss", "cross_modal_center_loss", "modality_centers"]


def modality_centers(
    features: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean ℓ2-normalised feature of every (identity, modality) of the batch.

    Returns ``(centers (M, d), labels (M,), modality (M,))``, sorted by identity
    then modality.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1] \
            or modality.shape != features.shape[:1]:
        raise ValueError(f"expected features (B, d), labels (B,) and modality (B,), got "
                         f"{tuple(features.shape)}, {tuple(labels.shape)}, {tuple(modality.shape)}")
    keys = labels.long() * 2 + modality.long()
    unique, inverse = torch.unique(keys, return_inverse=True)
    normed = F.normalize(features.float(), dim=1)
    sums = normed.new_zeros(len(unique), normed.shape[1]).index_add_(0, inverse, normed)
    counts = torch.bincount(inverse, minlength=len(unique)).clamp_min(1)
    return sums / counts[:, None], unique // 2, unique % 2


def cross_modal_center_loss(
    features: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor
) -> torch.Tensor:
    """Mean over identities seen in both modalities of ``||c_vis - c_ir||^2``; zero
    (connected to the graph) when there is none."""
    centers, center_labels, _ = modality_centers(features, labels, modality)
    # sorted keys: an identity in both modalities has its visible centre right
    # before its infrared one
    both = center_labels[1:] == center_labels[:-1]
    if not bool(both.any()):
        return features.sum() * 0.0
    visible, infrared = centers[:-1][both], centers[1:][both]
    return (visible - infrared).pow(2).sum(1).mean()


def center_text_contrastive_loss(
    features: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
    text: torch.Tensor, temperature: float = 0.07,
) -> torch.Tensor:
    """Cross-entropy of ``cos(centre, text_j) / temperature`` over every identity j
    of ``text`` (C, d), each centre's target being its identity."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    centers, center_labels, _ = modality_centers(features, labels, modality)
    logits = F.normalize(centers, dim=1) @ F.normalize(text.float(), dim=1).T / temperature
    return F.cross_entropy(logits, center_labels)
