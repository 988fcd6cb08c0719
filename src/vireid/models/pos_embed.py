"""Resizing positional embeddings to another token grid (ReID's non-square inputs)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["infer_grid", "resize_grid_embedding"]


def resize_grid_embedding(
    embedding: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """Resize a (prefix + gh*gw, D) positional embedding to another grid.

    The prefix tokens (the class token of the ViT, the mean token of the
    attention pool) are kept as they are; the grid part is resized bilinearly
    (``align_corners=False``, no antialias, as CLIP-ReID's ``resize_pos_embed``).
    ``old_grid`` defaults to the square grid, or, for a non-square token count,
    the factorisation closest to ``new_grid``'s aspect ratio. The same grid
    returns an unchanged copy.
    """
    if embedding.dim() != 2:
        raise ValueError(f"expected a (tokens, dim) embedding, got shape {tuple(embedding.shape)}")
    prefix, grid = embedding[:num_prefix_tokens], embedding[num_prefix_tokens:]
    count = grid.shape[0]
    if old_grid is None:
        old_grid = infer_grid(count, new_grid)
    if old_grid[0] * old_grid[1] != count:
        raise ValueError(f"a {old_grid[0]}x{old_grid[1]} grid does not hold {count} tokens")
    if tuple(old_grid) == tuple(new_grid):
        return embedding.clone()
    dtype = embedding.dtype
    image = grid.float().reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=tuple(new_grid), mode="bilinear", align_corners=False)
    grid = image.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(dtype)
    return torch.cat([prefix, grid], dim=0)


def infer_grid(count: int, like: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of ``count`` tokens: square when possible, else the
    factorisation with the aspect ratio closest to ``like``."""
    side = math.isqrt(count)
    if side * side == count:
        return side, side
    target = like[0] / like[1]
    pairs = [(h, count // h) for h in range(1, count + 1) if count % h == 0]
    return min(pairs, key=lambda hw: abs(math.log(hw[0] / hw[1]) - math.log(target)))
