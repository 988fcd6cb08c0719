"""Losses shared by the methods."""

from vireid.losses.cmcl import cross_modal_consistency_loss
from vireid.losses.modality import center_text_contrastive_loss, cross_modal_center_loss
from vireid.losses.msel import modality_shared_enhancement_loss
from vireid.losses.prototype import (
    CrossModalPrototypes,
    hard_sample_update,
    prototype_contrastive_loss,
)
from vireid.losses.supcon import image_text_supcon, supcon_loss
from vireid.losses.triplet import batch_hard_triplet_loss, pairwise_distances
from vireid.losses.wrt import weighted_regularized_triplet_loss

__all__ = [
    "CrossModalPrototypes",
    "batch_hard_triplet_loss",
    "center_text_contrastive_loss",
    "cross_modal_center_loss",
    "cross_modal_consistency_loss",
    "hard_sample_update",
    "image_text_supcon",
    "modality_shared_enhancement_loss",
    "pairwise_distances",
    "prototype_contrastive_loss",
    "supcon_loss",
    "weighted_regularized_triplet_loss",
]
