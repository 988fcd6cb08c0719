"""Searching a gallery with a trained model: :class:`Retriever`.

>>> model = vireid.load_model("runs/demo/clipreid_tiny")                      # doctest: +SKIP
>>> retriever = vireid.Retriever(model, gallery="data/gallery", cache="gallery.safetensors")
>>> result = retriever.search(["query.jpg"], topk=10, modality="infrared")    # doctest: +SKIP
>>> for match in result[0]: print(match.rank, match.path, match.distance)     # doctest: +SKIP

The gallery is embedded once and cached (safetensors, see
:mod:`vireid.retrieval.features`); a cache made by another model or for other
files is detected through the model fingerprint and the files digest, and rebuilt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vireid.data.types import Modality, Sample
from vireid.evaluation.rerank import K1, K2, LAMBDA, k_reciprocal_rerank
from vireid.retrieval.features import (
    FeatureSet,
    files_digest,
    gallery_samples,
    load_feature_file_sets,
    load_feature_set,
    save_feature_set,
)
from vireid.retrieval.index import FeatureIndex
from vireid.retrieval.model import ReIDModel

__all__ = ["CACHE_ROLE", "Match", "Retriever", "SearchResult"]

CACHE_ROLE = "search-cache"
"""Metadata ``role`` of the gallery caches a :class:`Retriever` writes. Only such a file is
ever overwritten at a cache path; another feature file there (``vireid extract --folder``)
is reused while it fits, and is an error when stale."""


def _read_cache(path: Path) -> FeatureSet:
    """The single feature set at ``path``; ``ValueError`` if the path holds anything else."""
    if not path.is_file():
        raise ValueError(f"cache {path} exists and is not a file; choose another cache path")
    try:
        sets = load_feature_file_sets(path)
    except ValueError as err:
        raise ValueError(f"cache {path} holds something that is not a gallery cache ({err}); "
                         "refusing to overwrite it: choose another cache path") from None
    if "" not in sets:
        raise ValueError(
            f"cache {path} is a query/gallery feature file (vireid extract --split), not a "
            "gallery cache; refusing to overwrite it: choose another cache path"
        )
    return sets[""]


@dataclass(frozen=True)
class Match:
    """One ranked gallery item."""

    rank: int
    index: int
    distance: float
    path: str | tuple[str, ...]
    id: int
    camera: int
    modality: str


@dataclass
class SearchResult:
    """Top-k gallery rows per query: ``indices`` and ``distances`` (Q, k), closest first.

    Distances are cosine distances ``1 - cos`` or, with re-ranking, the re-ranked
    distances of :mod:`vireid.evaluation.rerank`.
    """

    indices: torch.Tensor
    distances: torch.Tensor
    gallery: FeatureSet
    reranked: bool = False

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, query: int) -> list[Match]:
        return self.matches(query)

    def matches(self, query: int) -> list[Match]:
        g = self.gallery
        out = []
        for rank, (i, d) in enumerate(zip(self.indices[query].tolist(),
                                          self.distances[query].tolist()), start=1):
            out.append(Match(rank, i, float(d), g.paths[i], int(g.ids[i]), int(g.cams[i]),
                             Modality(int(g.modalities[i])).name.lower()))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form: ``{"reranked": bool, "queries": [[match, ...], ...]}``."""
        return {"reranked": self.reranked,
                "queries": [[asdict(m) for m in self.matches(q)] for q in range(len(self))]}


class Retriever:
    """A gallery embedded by ``model``, searchable with queries of the other modality.

    ``gallery``: a folder (every image; for a video model, every folder of frames is a
    tracklet), a list of image paths / frame lists / :class:`~vireid.data.types.Sample`,
    a :class:`FeatureSet`, or a feature file written by ``vireid extract``.
    ``cache``: a safetensors file for the gallery features, reused while the model and
    the files are unchanged, rebuilt otherwise (see :attr:`cache_status`).
    ``modality``, ``ids``, ``cameras``: labels of gallery items given as paths.
    ``backend``: "auto", "torch" or "faiss" (:class:`FeatureIndex`).
    """

    def __init__(
        self,
        model: ReIDModel | None,
        gallery: Any,
        *,
        cache: str | os.PathLike[str] | None = None,
        modality: str | int | Modality = Modality.VISIBLE,
        ids: Sequence[int] | None = None,
        cameras: Sequence[int] | None = None,
        backend: str = "auto",
        batch_size: int | None = None,
    ):
        self.model = model
        self.cache = Path(cache) if cache is not None else None
        self.cache_status: str | None = None
        """None (no cache), "built", "reused", "rebuilt (reason)", or "loaded" (a feature file)."""
        if isinstance(gallery, FeatureSet):
            self.gallery = gallery
        elif isinstance(gallery, (str, os.PathLike)) and Path(gallery).is_file():
            self.gallery = load_feature_set(gallery, side="gallery")
            self.cache_status = "loaded"
            if model is not None and self.gallery.model not in (None, model.fingerprint):
                raise ValueError(
                    f"{gallery} holds features of another model (fingerprint "
                    f"{self.gallery.model[:12]}..., this model {model.fingerprint[:12]}...); "
                    "extract the gallery again with this model"
                )
        else:
            if model is None:
                raise ValueError("a model is needed to embed a gallery of images")
            samples = gallery_samples(gallery, model.is_video, modality, ids, cameras)
            self.gallery = self._embed(samples, batch_size)
        self.index = FeatureIndex(self.gallery.features, backend)

    def __len__(self) -> int:
        return len(self.gallery)

    def _embed(self, samples: list[Sample], batch_size: int | None) -> FeatureSet:
        assert self.model is not None
        meta = {"model": self.model.fingerprint, "files": files_digest(samples),
                "role": CACHE_ROLE}
        if self.cache is not None and self.cache.exists():
            cached = _read_cache(self.cache)
            if cached.metadata.get("model") != meta["model"]:
                reason = "computed by another model"
            elif cached.metadata.get("files") != meta["files"]:
                reason = "the gallery files changed"
            else:
                self.cache_status = "reused"
                return cached
            if cached.metadata.get("role") != CACHE_ROLE:
                raise ValueError(
                    f"cache {self.cache} is a feature file written by vireid extract, not a "
                    f"search cache, and it is stale ({reason}); refusing to overwrite it: "
                    "choose another cache path"
                )
            self.cache_status = f"rebuilt ({reason})"
        elif self.cache is not None:
            self.cache_status = "built"
        features = self.model.extract_samples(samples, batch_size)
        result = FeatureSet.from_samples(features, samples, meta)
        if self.cache is not None:
            save_feature_set(self.cache, result)
        return result

    def query_features(self, queries: Any, modality: Any = Modality.INFRARED,
                       cameras: Any = None) -> torch.Tensor:
        """L2-normalised query features: from a FeatureSet, an (N, D) feature tensor,
        or inputs of :meth:`ReIDModel.extract`."""
        if isinstance(queries, FeatureSet):
            feats = queries.features
        elif isinstance(queries, torch.Tensor) and queries.ndim == 2 and queries.is_floating_point():
            feats = queries
        else:
            if self.model is None:
                raise ValueError("a model is needed to embed query images")
            return self.model.extract(queries, modality=modality, cameras=cameras)
        if feats.shape[1] != self.index.dim:
            raise ValueError(f"query features have width {feats.shape[1]}, the gallery "
                             f"{self.index.dim}")
        return torch.nn.functional.normalize(feats.float(), dim=1)

    def search(
        self,
        queries: Any,
        topk: int = 10,
        *,
        rerank: bool = False,
        modality: Any = Modality.INFRARED,
        cameras: Any = None,
        k1: int = K1,
        k2: int = K2,
        lambda_value: float = LAMBDA,
    ) -> SearchResult:
        """The ``topk`` closest gallery items of each query.

        ``rerank``: k-reciprocal re-ranking (``k1``, ``k2``, ``lambda_value``) of the whole
        gallery; it costs a pass over gallery x gallery neighbours, so it suits galleries
        of up to some ten thousand items.
        """
        qf = self.query_features(queries, modality, cameras)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if not rerank:
            sims, idx = self.index.search(qf, topk)
            return SearchResult(idx, 1.0 - sims, self.gallery, reranked=False)
        device = self.model.device if self.model is not None else torch.device("cpu")
        dist = k_reciprocal_rerank(qf.to(device), self.gallery.features.to(device),
                                   k1=k1, k2=k2, lambda_value=lambda_value)
        top = dist.topk(min(topk, dist.shape[1]), dim=1, largest=False)
        return SearchResult(top.indices.cpu(), top.values.cpu(), self.gallery, reranked=True)
