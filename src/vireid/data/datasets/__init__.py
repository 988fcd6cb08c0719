"""Loaders of the five benchmarks, their registry, and dataset statistics.

>>> data = load_dataset("sysu", "SYSU-MM01", mode="indoor")   # doctest: +SKIP
>>> print(format_stats(dataset_stats(data)))                       # doctest: +SKIP

Every loader reads the release unchanged and returns a
:class:`~vireid.data.types.ReIDData`: the training samples and every
evaluation split of the dataset's protocol. A wrong root or a missing index
file raises one :class:`DatasetLayoutError` naming the paths and showing the
expected layout (:func:`expected_tree`).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from vireid.data.datasets.base import (
    MAX_LISTED,
    DatasetError,
    DatasetLayoutError,
    DatasetLoader,
    DatasetOptionError,
    IndexFormatError,
    MissingImagesError,
    OutsideRootError,
    inside_root,
)
from vireid.data.datasets.bupt import BUPTCampus
from vireid.data.datasets.llcm import LLCM
from vireid.data.datasets.regdb import RegDB
from vireid.data.datasets.sysu import SYSUMM01
from vireid.data.datasets.vcm import HITSZVCM
from vireid.data.types import Modality, ReIDData, Sample

__all__ = [
    "DATASETS",
    "ALIASES",
    "BUPTCampus",
    "DatasetError",
    "DatasetLayoutError",
    "DatasetLoader",
    "DatasetOptionError",
    "HITSZVCM",
    "IndexFormatError",
    "LLCM",
    "MissingImagesError",
    "OutsideRootError",
    "RegDB",
    "SYSUMM01",
    "dataset_options",
    "check_images",
    "dataset_files",
    "dataset_stats",
    "expected_tree",
    "format_bad_images",
    "inside_root",
    "format_stats",
    "get_dataset",
    "load_dataset",
]

DATASETS: dict[str, type[DatasetLoader]] = {
    cls.name: cls for cls in (SYSUMM01, RegDB, LLCM, HITSZVCM, BUPTCampus)
}
"""Loader classes by their short name: sysu, regdb, llcm, vcm, bupt."""

ALIASES: dict[str, str] = {
    alias: cls.name for cls in DATASETS.values() for alias in (cls.aliases + (cls.title.lower(),))
}
"""Other accepted spellings (``sysu-mm01``, ``hitsz-vcm``, ``buptcampus``, ...) -> short name."""


def get_dataset(name: str) -> type[DatasetLoader]:
    """The loader class of a dataset name or alias (case-insensitive)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise DatasetOptionError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} "
            f"(aliases: {', '.join(sorted(ALIASES))})"
        )
    return DATASETS[key]


def load_dataset(name: str, root: str | os.PathLike[str], **options: Any) -> ReIDData:
    """Loads a benchmark from ``root``. Unknown option keys raise :class:`DatasetOptionError`."""
    return get_dataset(name)(root, **options).load()


def load_data(cfg) -> ReIDData:
    """The dataset a :class:`~vireid.config.Config` names (``data.name``, ``data.root`` or
    ``$VIREID_DATA``, ``data.options``), validated, with its evaluation splits."""
    from vireid.config import resolve_data_root

    return load_dataset(cfg.data.name, resolve_data_root(cfg.data), **cfg.data.options)


def expected_tree(name: str) -> str:
    """The on-disk layout a dataset's loader expects, as printed in its errors."""
    return get_dataset(name).EXPECTED_TREE


def dataset_options(name: str) -> dict[str, tuple[Any, str]]:
    """``{option: (default, help)}`` of a dataset's loader."""
    return {k: (o.default, o.help) for k, o in get_dataset(name).OPTIONS.items()}


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------

_MODALITY_NAMES = {Modality.VISIBLE: "visible", Modality.INFRARED: "infrared"}


def _pool_stats(samples: tuple[Sample, ...] | list[Sample]) -> dict[str, Any]:
    tracklets = any(s.is_tracklet for s in samples)
    by_modality = Counter(_MODALITY_NAMES[Modality(s.modality)] for s in samples)
    stats: dict[str, Any] = {
        "unit": "tracklets" if tracklets else "images",
        "count": len(samples),
        "identities": len({s.pid for s in samples}),
        "by_modality": {m: by_modality.get(m, 0) for m in ("visible", "infrared")},
        "by_camera": dict(sorted(Counter(s.camera for s in samples).items())),
    }
    if tracklets:
        lengths = [len(s.frames) for s in samples]
        stats["frames"] = {
            "min": min(lengths),
            "mean": sum(lengths) / len(lengths),
            "max": max(lengths),
            "total": sum(lengths),
        }
    return stats


def dataset_stats(data: ReIDData) -> dict[str, Any]:
    """Counts for ``vireid data check``: identities, images or tracklets per modality and camera.

    Returns ``{"name", "title", "root", "num_classes", "train": pool, "splits": [...], "extra"}``
    where each split is ``{"name", "direction", "trial", "query": pool, "gallery": pool}``
    and a pool is ``{"unit", "count", "identities", "by_modality", "by_camera"}``
    plus ``"frames": {"min", "mean", "max", "total"}`` for tracklets.
    """
    loader = DATASETS.get(data.name)
    return {
        "name": data.name,
        "title": loader.title if loader is not None else data.name,
        "root": data.root,
        "num_classes": data.num_classes,
        "train": _pool_stats(data.train),
        "splits": [
            {
                "name": split.name,
                "protocol": split.protocol,
                "direction": split.direction,
                "trial": split.trial,
                "query": _pool_stats(split.query),
                "gallery": _pool_stats(split.gallery),
            }
            for split in data.splits
        ],
        "extra": {k: v for k, v in data.extra.items() if k != "options"},
    }


def _row(label: str, pool: dict[str, Any]) -> list[str]:
    frames = pool.get("frames")
    frame_text = (
        f"{frames['min']}/{frames['mean']:.1f}/{frames['max']}" if frames else "-"
    )
    cams = " ".join(f"{cam}:{n}" for cam, n in pool["by_camera"].items())
    return [
        label,
        str(pool["identities"]),
        str(pool["count"]),
        str(pool["by_modality"]["visible"]),
        str(pool["by_modality"]["infrared"]),
        frame_text,
        cams,
    ]


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of :func:`dataset_stats` for the terminal.

    A query pool identical to the previous split's is printed once.
    """
    unit = stats["train"]["unit"]
    header = ["pool", "ids", unit, "visible", "infrared", "frames min/mean/max", "per camera"]
    rows = [_row("train", stats["train"])]
    previous_query = None
    for split in stats["splits"]:
        tag = f"{split['name']} ({split['direction']})" if split["direction"] not in split[
            "name"] else split["name"]
        if split["query"] != previous_query:
            rows.append(_row(f"{tag} query", split["query"]))
            previous_query = split["query"]
        rows.append(_row(f"{tag} gallery", split["gallery"]))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in
                 enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    out = [
        f"{stats.get('title', stats['name'])} ({stats['name']}) at {stats['root']}",
        f"training classes: {stats['num_classes']}",
        line(header),
        line(["-" * w for w in widths]),
    ]
    out += [line(r) for r in rows]
    notes = {k: v for k, v in stats.get("extra", {}).items() if v not in (None, [], {}, 0)}
    if notes:
        out.append("")
        out += [f"{k}: {v}" for k, v in notes.items()]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Decoding every image
# ---------------------------------------------------------------------------


def dataset_files(data: ReIDData) -> list[str]:
    """Every image file of the dataset (training and every split, frames of tracklets), once."""
    files: dict[str, None] = {}
    for samples in (data.train, *((*s.query, *s.gallery) for s in data.splits)):
        for sample in samples:
            files.update(dict.fromkeys(sample.frames))
    return list(files)


def check_images(paths: list[str], workers: int | None = None,
                 progress: bool = True) -> list[tuple[str, str]]:
    """Decodes every file as training does (threads; a tqdm bar on stderr when
    ``progress``); returns ``(path, reason)`` of those that fail, in input order."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from vireid.data.io import verify_image

    workers = workers or min(8, os.cpu_count() or 1)
    bad = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(verify_image, paths)
        bar = tqdm(results, total=len(paths), desc="decoding images", unit="img",
                   disable=not progress, leave=False)
        for path, reason in zip(paths, bar):
            if reason is not None:
                bad.append((path, reason))
    return bad


def format_bad_images(bad: list[tuple[str, str]], total: int, limit: int = 4 * MAX_LISTED) -> str:
    """``N of M image files cannot be used:`` then one line per file (the first ``limit``)."""
    lines = [f"{len(bad)} of {total} image file(s) cannot be used:"]
    lines += [f"  {reason}" for _, reason in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
