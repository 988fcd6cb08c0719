"""Modality-shared enhancement loss (MSEL) of CSDN (Yu et al., IEEE TMM 2025).

For every anchor, compare how far it lies from its own identity inside its own
modality and across the other modality:

- ``intra``: mean Euclidean distance to the *other* samples of the same identity
  in the anchor's modality (the reference code takes the top-(K-1) entries of
  the same-identity distance row, i.e. all of them but the anchor itself when
  each identity has K samples per modality);
- ``cross``: mean distance to the samples of the same identity in the other
  modality;

``loss = ( mean_vis (cross - intra)^2 + mean_ir (cross - intra)^2 ) / 2``
(docs/methods.md#csdn-csdn; ``tools/MSEL.py`` of the official code, class ``MSEL``).
"""

from __future__ import annotations

import torch

from vireid.losses.triplet import pairwise_distances

__all__ = ["modality_shared_enhancement_loss"]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    count = mask.sum(1)
    if bool((count == 0).any()):
        raise ValueError(f"MSEL: an anchor has no {what}; every identity needs at least two "
                         "samples per modality and samples in both modalities")
    return (values * mask).sum(1) / count


def modality_shared_enhancement_loss(
    visible: torch.Tensor,
    infrared: torch.Tensor,
    visible_labels: torch.Tensor,
    infrared_labels: torch.Tensor,
) -> torch.Tensor:
    """MSEL between visible features (Nv, D) and infrared features (Nr, D).

    Every identity of either set needs at least two samples in its modality and one
    in the other. The reference code assumes the same identity order in both halves;
    here identities are matched by label.
    """
    if visible.dim() != 2 or infrared.dim() != 2 or visible.shape[1] != infrared.shape[1]:
        raise ValueError(
            f"expected visible (Nv, D) and infrared (Nr, D) features, got "
            f"{tuple(visible.shape)} and {tuple(infrared.shape)}"
        )
    if visible_labels.shape[0] != visible.shape[0] or infrared_labels.shape[0] != infrared.shape[0]:
        raise ValueError("MSEL: one label per feature row is needed in each modality")
    gaps = []
    for own, other, own_labels, other_labels in (
        (visible, infrared, visible_labels, infrared_labels),
        (infrared, visible, infrared_labels, visible_labels),
    ):
        intra_dist = pairwise_distances(own)
        cross_dist = pairwise_distances(own, other)
        same_intra = own_labels[:, None] == own_labels[None, :]
        same_intra.fill_diagonal_(False)
        same_cross = own_labels[:, None] == other_labels[None, :]
        intra = _masked_mean(intra_dist, same_intra, "other sample of its identity in its modality")
        cross = _masked_mean(cross_dist, same_cross, "sample of its identity in the other modality")
        gaps.append((cross - intra).pow(2).mean())
    return (gaps[0] + gaps[1]) / 2
