"""Evaluating features: one query/gallery problem, a feature file, or many trials."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.protocols import ProtocolRules
from vireid.data.types import EvalSplit, ReIDData, Sample
from vireid.evaluation.metrics import Metrics, compute_metrics
from vireid.utils import move_to_device

REPORTED_RANKS = (1, 5, 10, 20)
"""The ranks papers in the field report."""

FEATURE_FILE_KEYS = (
    "query_features", "query_ids", "query_cams",
    "gallery_features", "gallery_ids", "gallery_cams",
)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


DISTANCES = ("cosine", "euclidean")
"""Rankings ``evaluate_features`` offers (``eval.distance``)."""


def _prepared(query_features, gallery_features, distance: str,
              normalize: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The features as ``distance`` ranks them: checked, and L2-normalised when
    ``normalize`` says so (default: for cosine only)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    qf = torch.as_tensor(query_features)
    gf = torch.as_tensor(gallery_features)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"features must be (N, D) matrices of one width; got query {tuple(qf.shape)} "
            f"and gallery {tuple(gf.shape)}"
        )
    if normalize is None:
        normalize = distance == "cosine"
    return (l2_normalize(qf), l2_normalize(gf)) if normalize else (qf.float(), gf.float())


def feature_distances(query_features, gallery_features, distance: str = "cosine",
                      normalize: bool | None = None) -> torch.Tensor:
    """(Q, G) distances: ``cosine`` is the negative cosine similarity (features
    L2-normalised), ``euclidean`` the Euclidean distance of the features as given
    (``normalize=True`` L2-normalises them first, which ranks as cosine does)."""
    qf, gf = _prepared(query_features, gallery_features, distance, normalize)
    return torch.cdist(qf, gf) if distance == "euclidean" else -(qf @ gf.T)


def evaluate_features(
    query_features,
    gallery_features,
    query_ids,
    gallery_ids,
    query_cams,
    gallery_cams,
    protocol: str | ProtocolRules,
    normalize: bool | None = None,
    rerank: Any = None,
    distance: str = "cosine",
) -> Metrics:
    """Ranks the gallery for every query and scores it.

    ``distance="cosine"`` (default) L2-normalises the features and ranks by
    cosine similarity (``normalize=False``: by raw dot product);
    ``"euclidean"`` ranks by the Euclidean distance of the features as given
    (``normalize=True`` normalises them first). The query and gallery sets are
    evaluated as given: the protocol only selects the keep rule and the CMC
    variant. ``rerank``: None/False ranks by the plain distance; True, a mapping
    or an object with ``k1``, ``k2``, ``lambda_value`` (``cfg.eval.rerank``)
    applies k-reciprocal re-ranking (:mod:`vireid.evaluation.rerank`) to the
    (normalised, for cosine) features. Warns when many distances are tied.
    """
    if rerank is not None and rerank is not False:
        from vireid.evaluation.rerank import rerank_distances

        distances = rerank_distances(
            *_prepared(query_features, gallery_features, distance, normalize), rerank)
    else:
        distances = feature_distances(query_features, gallery_features, distance, normalize)
    return compute_metrics(distances, query_ids, gallery_ids, query_cams, gallery_cams, protocol)


def load_feature_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a safetensors file holding the six arrays of :data:`FEATURE_FILE_KEYS`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    missing = [k for k in FEATURE_FILE_KEYS if k not in tensors]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}; a feature file needs {', '.join(FEATURE_FILE_KEYS)}"
        )
    for side in ("query", "gallery"):
        feats = tensors[f"{side}_features"]
        if feats.ndim != 2:
            raise ValueError(f"{path}: {side}_features must be 2-D (N, D), got {tuple(feats.shape)}")
        if not torch.isfinite(feats.float()).all():
            raise ValueError(f"{path}: {side}_features contains NaN or infinite values")
        for key in (f"{side}_ids", f"{side}_cams"):
            if tensors[key].reshape(-1).shape[0] != feats.shape[0]:
                raise ValueError(
                    f"{path}: {key} has {tensors[key].numel()} entries, "
                    f"{side}_features has {feats.shape[0]} rows"
                )
            if tensors[key].is_floating_point():
                raise ValueError(f"{path}: {key} must hold integers, got {tensors[key].dtype}")
    return tensors


def evaluate_feature_file(path: str | Path, protocol: str, distance: str = "cosine") -> Metrics:
    """Scores a feature file (:func:`load_feature_file`) under ``protocol``."""
    t = load_feature_file(path)
    return evaluate_features(
        t["query_features"], t["gallery_features"], t["query_ids"], t["gallery_ids"],
        t["query_cams"], t["gallery_cams"], protocol, distance=distance,
    )


_TRIAL = re.compile(r"/?trial\d+$")


def summarize(results: Iterable[tuple[str, str, int, Metrics]]) -> dict:
    """Groups ``(split name, direction, trial, metrics)`` by setting and direction.

    Returns ``{group: {"trials": [row, ...], "mean": row, "std": row}}`` where a
    row maps ``R1, R5, R10, R20, mAP, mINP`` to fractions. The std is the
    population standard deviation over trials (0 for a single trial).
    """
    groups: dict[str, list[tuple[int, dict]]] = {}
    for name, direction, trial, metrics in results:
        setting = _TRIAL.sub("", name)
        key = setting if direction in setting else f"{setting} {direction}".strip()
        row = {f"R{k}": metrics.rank(k) for k in REPORTED_RANKS}
        row.update(mAP=metrics.mAP, mINP=metrics.mINP)
        groups.setdefault(key, []).append((trial, row))
    summary = {}
    for key, rows in groups.items():
        rows.sort(key=lambda r: r[0])
        table = np.array([[r[c] for c in rows[0][1]] for _, r in rows])
        cols = list(rows[0][1])
        summary[key] = {
            "trials": [dict(trial=t, **r) for t, r in rows],
            "mean": dict(zip(cols, table.mean(0).tolist())),
            "std": dict(zip(cols, table.std(0).tolist())),
        }
    return summary


def format_summary(summary: dict) -> str:
    """A terminal table: one line per trial, then mean ± std, in percent."""
    cols = ("R1", "R5", "R10", "R20", "mAP", "mINP")
    lines = []
    for key, group in summary.items():
        if key == "splits":
            continue
        lines.append(f"== {key}")
        lines.append(f"{'trial':>8} " + " ".join(f"{c:>13}" for c in cols))
        if len(group["trials"]) > 1:
            for row in group["trials"]:
                lines.append(f"{row['trial']:>8} " + " ".join(f"{100 * row[c]:13.2f}" for c in cols))
        mean, std = group["mean"], group["std"]
        lines.append(
            f"{'mean':>8} "
            + " ".join(f"{100 * mean[c]:6.2f} ±{100 * std[c]:5.2f}" for c in cols)
        )
    return "\n".join(lines)


def extract_features(method, samples: Sequence[Sample], batch_size: int = 64) -> torch.Tensor:
    """Inference features (N, F) of ``samples`` in order, on the CPU, in float32.

    ``method`` is a :class:`vireid.methods.base.Method`; it is put in eval mode
    and run on the device of its parameters.
    """
    device = next(method.parameters()).device
    method.eval()
    chunks = []
    with torch.inference_mode():
        for batch in method.test_loader(samples, batch_size):
            chunks.append(method.extract(move_to_device(batch, device)).float().cpu())
    features = torch.cat(chunks)
    if features.shape[0] != len(samples):
        raise RuntimeError(
            f"{type(method).__name__}.extract returned {features.shape[0]} features "
            f"for {len(samples)} samples"
        )
    return features


def split_features(
    embed: Callable[[list[Sample]], torch.Tensor], splits: Sequence[EvalSplit]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(query, gallery) features of each split; ``embed`` runs once, on the distinct
    samples of all of them (trials and directions share most of their samples)."""
    index: dict[Sample, int] = {}
    for split in splits:
        for sample in (*split.query, *split.gallery):
            index.setdefault(sample, len(index))
    features = embed(list(index))
    return [(features[[index[s] for s in split.query]],
             features[[index[s] for s in split.gallery]]) for split in splits]


def evaluate_method(
    method,
    data: ReIDData,
    batch_size: int = 64,
    splits: Sequence[str] | None = None,
    rerank: Any = None,
    distance: str = "cosine",
) -> dict:
    """Scores ``method`` on every evaluation split of ``data`` (or those named in ``splits``).

    Each distinct test sample is embedded once, however many trials and
    directions use it. Returns :func:`summarize`'s table plus ``"splits"``:
    one row per split with its full CMC. ``rerank``, ``distance`` (``eval.distance``):
    as in :func:`evaluate_features`.
    """
    chosen = select_splits(data.splits, splits)
    pairs = split_features(lambda s: extract_features(method, s, batch_size), chosen)
    results = []
    for split, (query, gallery) in zip(chosen, pairs):
        metrics = evaluate_features(
            query, gallery,
            [s.pid for s in split.query], [s.pid for s in split.gallery],
            [s.camera for s in split.query], [s.camera for s in split.gallery],
            split.protocol, rerank=rerank, distance=distance,
        )
        results.append((split.name, split.direction, split.trial, metrics))
    summary = summarize(results)
    summary["splits"] = [
        {"name": n, "direction": d, "trial": t, **m.as_dict()} for n, d, t, m in results
    ]
    return summary


def select_splits(available: Sequence[EvalSplit], names: Sequence[str] | None) -> list[EvalSplit]:
    """The splits named in ``names`` (a split name or a setting such as ``all-search``);
    all of them when ``names`` is empty. Raises ``ValueError`` naming the unknown
    ones and the available settings: call it before training (``eval.splits``)."""
    if not names:
        return list(available)
    def matches(split: EvalSplit, name: str) -> bool:
        return split.name == name or split.name.startswith(f"{name}/")

    unknown = [n for n in names if not any(matches(s, n) for s in available)]
    if unknown:
        raise ValueError(
            f"eval.splits: no evaluation split matches {unknown}; available: "
            f"{sorted({_TRIAL.sub('', s.name) for s in available})}"
        )
    return [s for s in available if any(matches(s, n) for n in names)]


