"""Re-identification heads: BN-neck, identity classifier, GeM pooling.

Sources: the BN-neck and classifier initialisations follow Luo et al.,
"Bag of Tricks and a Strong Baseline for Deep Person Re-identification"
(CVPR-W 2019) as used by CLIP-ReID (``weights_init_kaiming`` /
``weights_init_classifier``); GeM is Radenovic et al., "Fine-tuning CNN Image
Retrieval with No Human Annotation" (TPAMI 2018), with p initialised to 3 as in
CSDN (docs/methods.md#csdn-csdn).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BNNeck", "Classifier", "GeM"]


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d whose shift (bias) is frozen at 0 and scale starts at 1 (bag of tricks)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.constant_(self.weight, 1.0)
        nn.init.constant_(self.bias, 0.0)
        self.bias.requires_grad_(False)


class Classifier(nn.Linear):
    """Linear identity classifier, weights normal with std 0.001 (bag of tricks), no bias by default."""

    def __init__(self, dim: int, num_classes: int, bias: bool = False) -> None:
        super().__init__(dim, num_classes, bias=bias)
        nn.init.normal_(self.weight, std=0.001)
        if self.bias is not None:
            nn.init.constant_(self.bias, 0.0)


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial dimensions: (B, C, H, W) -> (B, C).

    ``(mean(clamp(x, eps) ** p)) ** (1 / p)``; ``p`` is learned when ``learnable``.
    p = 1 is average pooling, p -> inf approaches max pooling.
    """

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        value = torch.tensor(float(p))
        if learnable:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"GeM expects (B, C, H, W), got shape {tuple(x.shape)}")
        p = self.p.to(x.dtype)
        pooled = F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(p), 1).flatten(1)
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.3f}, eps={self.eps}, learnable={isinstance(self.p, nn.Parameter)}"
