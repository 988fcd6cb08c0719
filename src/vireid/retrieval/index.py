"""Nearest-neighbour search over L2-normalised features (cosine similarity).

Two backends give the same (exact) results:

- ``torch``: blocked matrix product + top-k, on the features' device (CPU or GPU);
- ``faiss``: ``IndexFlatIP`` of faiss (optional extra ``vireid[faiss]``, imported only
  when asked for), multi-threaded on the CPU.

Exact search is bound by the matrix product in both: on a 2-core CPU, 1,000 queries
against 100,000 features of width 1,280 took 3.8 s with torch and 4.3 s with faiss
(benchmarks/search_speed.py), so ``backend="auto"`` takes torch; ask for faiss
where its CPU kernels do better (e.g. many cores) or to stay inside a faiss deployment.
"""

from __future__ import annotations

import torch

__all__ = ["FeatureIndex", "faiss_available"]

_QUERY_ROWS = 1024
_GALLERY_ROWS = 8192
"""The torch search multiplies blocks of up to 1024 queries by 8192 gallery rows (32 MiB of
similarities) and merges the blocks' top-k: the gallery is read once per 1024 queries
(smaller query blocks made the 100k-gallery benchmark 1.4x slower on CPU)."""


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "the faiss backend needs the optional faiss package: pip install 'vireid[faiss]' "
            "(or faiss-cpu)"
        ) from None
    return faiss


class FeatureIndex:
    """Exact cosine-similarity index of a gallery (rows are L2-normalised here).

    ``search(queries, k)`` returns ``(similarities, indices)``, both (Q, k), best first.
    """

    def __init__(self, features: torch.Tensor, backend: str = "auto",
                 device: str | torch.device | None = None):
        if features.ndim != 2:
            raise ValueError(f"gallery features must be (N, D), got shape {tuple(features.shape)}")
        if backend not in ("auto", "torch", "faiss"):
            raise ValueError(f"unknown index backend {backend!r}; expected auto, torch or faiss")
        if backend == "auto":
            backend = "torch"
        self.backend = backend
        feats = torch.nn.functional.normalize(features.detach().float(), dim=1)
        if device is not None:
            feats = feats.to(device)
        self.features = feats
        self._faiss = None
        if backend == "faiss":
            faiss = _import_faiss()
            array = feats.cpu().contiguous().numpy()
            self._faiss = faiss.IndexFlatIP(array.shape[1])
            self._faiss.add(array)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got shape {tuple(queries.shape)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, len(self))
        q = torch.nn.functional.normalize(queries.detach().float(), dim=1)
        if q.shape[0] == 0:
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        if self._faiss is not None:
            sims, idx = self._faiss.search(q.cpu().contiguous().numpy(), k)
            return torch.from_numpy(sims), torch.from_numpy(idx).long()
        q = q.to(self.features.device)
        sims, idx = [], []
        for s in range(0, q.shape[0], _QUERY_ROWS):
            block = q[s:s + _QUERY_ROWS]
            best_v = best_i = None
            for g in range(0, len(self), _GALLERY_ROWS):
                part = block @ self.features[g:g + _GALLERY_ROWS].T
                top = part.topk(min(k, part.shape[1]), dim=1)
                values, indices = top.values, top.indices + g
                if best_v is not None:
                    values = torch.cat([best_v, values], dim=1)
                    indices = torch.cat([best_i, indices], dim=1)
                    merged = values.topk(k, dim=1)
                    values, indices = merged.values, indices.gather(1, merged.indices)
                best_v, best_i = values, indices
            sims.append(best_v.cpu())
            idx.append(best_i.cpu())
        return torch.cat(sims), torch.cat(idx)
