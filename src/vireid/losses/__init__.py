"""Losses shared by the methods."""

from vireid.losses.supcon import supcon_loss
from vireid.losses.triplet import batch_hard_triplet_loss, pairwise_distances

__all__ = ["batch_hard_triplet_loss", "pairwise_distances", "supcon_loss"]
