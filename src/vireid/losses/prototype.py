"""Cross-modality prototype collaboration (CPC) of X-ReID (docs/methods.md#x-reid-xreid).

Each training identity has a visible and an infrared prototype (unit vectors,
``C x dim`` each), kept in :class:`CrossModalPrototypes` as buffers so that
checkpoints carry them:

* initialisation / rebuild: the normalised mean feature of each identity in each
  modality (:func:`prototype_sums` + :meth:`CrossModalPrototypes.set_from_sums`;
  the sums can be all-reduced across ranks first);
* update after each step (paper Eq. 2): for every identity of the batch, the
  sample least similar to the prototype (cross-modal hard sample) moves it,
  ``m <- mu m + (1 - mu) f*``, then ``m <- m / |m|`` (:func:`hard_sample_update`).
  The visible memory takes its hard sample among the infrared samples and the
  infrared memory among the visible ones (``source="other"``, the paper); the
  X-ReID code takes it among all samples of the batch (``source="both"``).
  Under DDP the batch features of every rank are gathered first, so all ranks
  apply the same update (:func:`gather_across_ranks`);
* CPCL (:func:`prototype_contrastive_loss`): cross-entropy over all identities
  of ``cos(f, m) / tau`` against each memory, summed over the two memories.

Constants: tau = 0.05 and mu = 0.1 in the X-ReID code (``ClusterMemory(temp=0.05,
momentum=0.1, use_hard=True)``); mu = 0.2 in the paper.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vireid.comm import collective_device, is_distributed

__all__ = [
    "CrossModalPrototypes",
    "gather_across_ranks",
    "hard_sample_update",
    "prototype_contrastive_loss",
    "prototype_sums",
]

VISIBLE, INFRARED = 0, 1  # vireid.data.types.Modality codes


def prototype_contrastive_loss(
    features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
    temperature: float = 0.05,
) -> torch.Tensor:
    """``CE(normalize(f) @ prototypes^T / tau, y)``; ``prototypes`` (C, dim), unit rows."""
    logits = F.normalize(features.float(), dim=1) @ prototypes.float().T
    return F.cross_entropy(logits / temperature, labels)


@torch.no_grad()
def hard_sample_update(
    memory: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float
) -> torch.Tensor:
    """Memory (C, dim) after the hard-sample momentum update, in place (also returned).

    For each identity y among ``labels``: ``f*`` = the normalised feature of
    label y least similar (cosine) to ``memory[y]`` (the first one on ties);
    ``memory[y] = normalize(momentum * memory[y] + (1 - momentum) * f*)``.
    """
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} features but {labels.shape[0]} labels")
    if features.shape[0] == 0:
        return memory
    feats = F.normalize(features.detach().float(), dim=1).to(memory.dtype)
    labels = labels.to(memory.device).long()
    sims = (feats * memory[labels]).sum(1)
    for label in torch.unique(labels).tolist():
        rows = (labels == label).nonzero().flatten()
        hardest = rows[sims[rows].argmin()]
        moved = momentum * memory[label] + (1.0 - momentum) * feats[hardest]
        memory[label] = moved / moved.norm().clamp_min(1e-12)
    return memory


def prototype_sums(
    features: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-modality sums (2, C, dim) and counts (2, C) of ``features`` by identity."""
    features = features.detach().float()
    sums = features.new_zeros(2, num_classes, features.shape[1])
    counts = features.new_zeros(2, num_classes)
    index = modalities.long().to(features.device) * num_classes + labels.long().to(features.device)
    sums.view(2 * num_classes, -1).index_add_(0, index, features)
    counts.view(-1).index_add_(0, index, torch.ones_like(index, dtype=counts.dtype))
    return sums, counts


def gather_across_ranks(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor (first dimension) over all ranks, in rank order.

    Outside an initialised process group the tensors come back unchanged. Ranks
    may hold different numbers of rows.
    """
    if not is_distributed():
        return tensors
    world = dist.get_world_size()
    device = collective_device()
    size = torch.tensor([tensors[0].shape[0]], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    out = []
    for tensor in tensors:
        original = tensor.device
        work = tensor.detach().to(device)
        padded = work.new_zeros((longest, *work.shape[1:]))
        padded[: work.shape[0]] = work
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:n] for p, n in zip(parts, counts)]).to(original))
    return tuple(out)


class CrossModalPrototypes(nn.Module):
    """Visible and infrared identity prototypes (buffers ``visible``, ``infrared``, ``ready``).

    ``momentum`` (mu), ``temperature`` (tau) and ``source`` ("other" or "both")
    as in the module docstring.
    """

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.2,
                 temperature: float = 0.05, source: Literal["other", "both"] = "other") -> None:
        super().__init__()
        if source not in ("other", "both"):
            raise ValueError(f"source must be 'other' or 'both', got {source!r}")
        self.num_classes, self.dim = num_classes, dim
        self.momentum, self.temperature, self.source = momentum, temperature, source
        self.register_buffer("visible", torch.zeros(num_classes, dim))
        self.register_buffer("infrared", torch.zeros(num_classes, dim))
        self.register_buffer("ready", torch.tensor(False))

    @torch.no_grad()
    def set_from_sums(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Prototypes = normalised means (identities without samples in a modality get 0)."""
        means = sums / counts.clamp_min(1).unsqueeze(-1)
        means = F.normalize(means, dim=-1)
        self.visible.copy_(means[VISIBLE])
        self.infrared.copy_(means[INFRARED])
        self.ready.fill_(True)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CPCL: prototype cross-entropy against the visible plus the infrared memory.

        Uses copies of the memories, so :meth:`update` may follow before ``backward``.
        """
        return (prototype_contrastive_loss(features, labels, self.visible.clone(), self.temperature)
                + prototype_contrastive_loss(features, labels, self.infrared.clone(),
                                             self.temperature))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor,
               gather: bool = True) -> None:
        """Hard-sample momentum update of both memories from a batch (gathered across
        ranks when ``gather`` and a process group is running)."""
        feats, labels, modalities = features.detach(), labels.detach(), modalities.detach()
        if gather:
            feats, labels, modalities = gather_across_ranks(feats, labels, modalities)
        modalities = modalities.to(labels.device)
        for memory, own in ((self.visible, VISIBLE), (self.infrared, INFRARED)):
            keep = modalities != own if self.source == "other" else torch.ones_like(labels, dtype=torch.bool)
            hard_sample_update(memory, feats[keep], labels[keep], self.momentum)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}, "
                f"temperature={self.temperature}, source={self.source!r}")
