"""Supervised contrastive loss between two sets of features (Khosla et al., NeurIPS 2020)."""

from __future__ import annotations

import torch


def supcon_loss(
    anchors: torch.Tensor,
    contrast: torch.Tensor,
    anchor_labels: torch.Tensor,
    contrast_labels: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over anchors of -mean log-softmax at the positives among ``contrast``.

    Logits are raw dot products divided by ``temperature``, as in CLIP-ReID's
    image-to-text / text-to-image prompt-learning loss (temperature 1;
    docs/methods.md#clip-reid-baseline-clipreid). Positives are the contrast items with
    the anchor's label.
    """
    logits = anchors.float() @ contrast.float().T / temperature
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (anchor_labels[:, None] == contrast_labels[None, :]).float()
    count = positives.sum(1)
    if bool((count == 0).any()):
        raise ValueError("every anchor needs at least one positive in the contrast set")
    return -((positives * log_prob).sum(1) / count).mean()


def image_text_supcon(image: torch.Tensor, text: torch.Tensor,
                      labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """CLIP-ReID's prompt-learning loss: image->text plus text->image :func:`supcon_loss`
    over a batch of paired features (same ``labels`` on both sides). Returns ``loss``
    and the two detached terms ``i2t`` and ``t2i``, ready to log."""
    i2t = supcon_loss(image, text, labels, labels)
    t2i = supcon_loss(text, image, labels, labels)
    return {"loss": i2t + t2i, "i2t": i2t.detach(), "t2i": t2i.detach()}
