"""Feature sets and their safetensors files.

A :class:`FeatureSet` is one set of L2-normalised features with, per row, the
identity (``-1`` unknown), the camera, the modality and the file path (a tuple of
frame paths for a tracklet). On disk (``save_feature_set``)::

    features (N, D) float32   ids (N,) int64   cams (N,) int64   modalities (N,) int64
    metadata: format=vireid-features, format_version, paths (JSON list), model (the
              fingerprint of the model that computed them), files (digest of the files)

A query/gallery file (``vireid extract`` of a dataset split) holds the same keys
prefixed ``query_`` and ``gallery_``; it is also a valid input of ``vireid evaluate``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vireid.data.datasets.base import IMAGE_EXTENSIONS
from vireid.data.types import Modality, Sample
from vireid.files import atomic_path

__all__ = [
    "FEATURES_FORMAT",
    "FeatureSet",
    "files_digest",
    "gallery_samples",
    "list_gallery_folder",
    "load_feature_file_sets",
    "load_feature_set",
    "save_feature_set",
    "save_query_gallery",
]

FEATURES_FORMAT = "vireid-features"
FEATURES_VERSION = 1

_CAMERA = re.compile(r"^cam(\d+)$", re.IGNORECASE)

SamplePath = str | tuple[str, ...]


@dataclass
class FeatureSet:
    """Features (N, D) with identity, camera, modality and path per row."""

    features: torch.Tensor
    ids: torch.Tensor
    cams: torch.Tensor
    modalities: torch.Tensor
    paths: list[SamplePath]
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {tuple(self.features.shape)}")
        for name in ("ids", "cams", "modalities"):
            value = torch.as_tensor(getattr(self, name), dtype=torch.int64).reshape(-1)
            if value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} entries for {n} features")
            setattr(self, name, value)
        if len(self.paths) != n:
            raise ValueError(f"{len(self.paths)} paths for {n} features")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def model(self) -> str | None:
        """Fingerprint of the model that computed the features, when known."""
        return self.metadata.get("model")

    @classmethod
    def from_samples(cls, features: torch.Tensor, samples: Sequence[Sample],
                     metadata: Mapping[str, str] | None = None) -> FeatureSet:
        return cls(
            features.float().cpu(),
            torch.tensor([s.pid for s in samples], dtype=torch.int64),
            torch.tensor([s.camera for s in samples], dtype=torch.int64),
            torch.tensor([int(s.modality) for s in samples], dtype=torch.int64),
            [s.path for s in samples],
            dict(metadata or {}),
        )

    def samples(self) -> list[Sample]:
        return [Sample(p, int(i), int(c), Modality(int(m)))
                for p, i, c, m in zip(self.paths, self.ids.tolist(), self.cams.tolist(),
                                      self.modalities.tolist())]

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {f"{prefix}features": self.features.float().contiguous(),
                f"{prefix}ids": self.ids, f"{prefix}cams": self.cams,
                f"{prefix}modalities": self.modalities}


# --------------------------------------------------------------------------- files


def _paths_json(paths: Sequence[SamplePath]) -> str:
    return json.dumps([list(p) if isinstance(p, tuple) else p for p in paths])


def _paths_from_json(text: str, where: str) -> list[SamplePath]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: the stored paths are not valid JSON: {err}") from None
    return [tuple(p) if isinstance(p, list) else p for p in raw]


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def save_feature_set(path: str | os.PathLike[str], features: FeatureSet) -> Path:
    """Write one feature set (atomically: temporary file + rename)."""
    meta = {k: str(v) for k, v in features.metadata.items()}
    meta.update(format=FEATURES_FORMAT, format_version=str(FEATURES_VERSION),
                paths=_paths_json(features.paths))
    return _atomic_save(features.tensors(), Path(path), meta)


def save_query_gallery(path: str | os.PathLike[str], query: FeatureSet, gallery: FeatureSet,
                       metadata: Mapping[str, str] | None = None) -> Path:
    """Write a query/gallery pair (readable by ``vireid evaluate``)."""
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    meta.update(format=FEATURES_FORMAT, format_version=str(FEATURES_VERSION),
                query_paths=_paths_json(query.paths), gallery_paths=_paths_json(gallery.paths))
    return _atomic_save({**query.tensors("query_"), **gallery.tensors("gallery_")}, Path(path),
                        meta)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    return tensors, meta


def _set_from(tensors: dict[str, torch.Tensor], meta: dict[str, str], prefix: str,
              path: Path) -> FeatureSet:
    key = f"{prefix}features"
    if key not in tensors:
        raise ValueError(f"{path} has no {key!r} tensor (keys: {', '.join(sorted(tensors))})")
    feats = tensors[key]
    n = feats.shape[0] if feats.ndim == 2 else -1
    if n < 0 or not torch.isfinite(feats.float()).all():
        raise ValueError(f"{path}: {key} must be a finite (N, D) matrix")
    cams = tensors.get(f"{prefix}cams", torch.zeros(n, dtype=torch.int64))
    ids = tensors.get(f"{prefix}ids", torch.full((n,), -1, dtype=torch.int64))
    mods = tensors.get(f"{prefix}modalities", torch.zeros(n, dtype=torch.int64))
    paths_text = meta.get(f"{prefix}paths")
    paths = (_paths_from_json(paths_text, str(path)) if paths_text is not None
             else [f"#{i}" for i in range(n)])
    extra = {k: v for k, v in meta.items() if not k.endswith("paths")}
    try:
        return FeatureSet(torch.nn.functional.normalize(feats.float(), dim=1), ids, cams, mods,
                          paths, extra)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_feature_set(path: str | os.PathLike[str], side: str = "gallery") -> FeatureSet:
    """One feature set from a file: the set of a single-set file, or the ``side``
    ("query" or "gallery") of a query/gallery file."""
    path = Path(path)
    tensors, meta = _read(path)
    if "features" in tensors:
        return _set_from(tensors, meta, "", path)
    return _set_from(tensors, meta, f"{side}_", path)


def load_feature_file_sets(path: str | os.PathLike[str]) -> dict[str, FeatureSet]:
    """Every set of a file: ``{"": set}`` or ``{"query": set, "gallery": set}``."""
    path = Path(path)
    tensors, meta = _read(path)
    if "features" in tensors:
        return {"": _set_from(tensors, meta, "", path)}
    return {side: _set_from(tensors, meta, f"{side}_", path) for side in ("query", "gallery")}


def files_digest(samples: Iterable[Sample]) -> str:
    """sha256 over each sample's files (path, size, modification time) and labels:
    changes when a file is added, removed, replaced or relabelled."""
    digest = hashlib.sha256()
    for s in samples:
        entry = [s.pid, s.camera, int(s.modality)]
        for frame in s.frames:
            try:
                st = os.stat(frame)
            except OSError as err:
                raise FileNotFoundError(f"gallery file not readable: {frame} ({err.strerror})") from None
            entry.append([os.path.abspath(frame), st.st_size, st.st_mtime_ns])
        digest.update(json.dumps(entry).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# --------------------------------------------------------------------------- folders


def _labels_from(parts: Sequence[str]) -> tuple[int, int]:
    """(identity, camera) read off folder names: the first integer folder is the
    identity, a ``camN`` folder the camera; -1 / 0 when absent."""
    pid, cam = -1, 0
    for part in parts:
        match = _CAMERA.match(part)
        if match and cam == 0:
            cam = int(match.group(1))
        elif part.isdigit() and pid < 0:
            pid = int(part)
    return pid, cam


def list_gallery_folder(folder: str | os.PathLike[str], tracklets: bool,
                        modality: str | int | Modality = Modality.VISIBLE) -> list[Sample]:
    """Samples of every image under ``folder`` (recursively, sorted), or with
    ``tracklets`` one tracklet per folder that directly holds images.

    Identity and camera come from folder names, the gallery folder's own name included,
    when they look like a dataset layout (``cam3/0012/x.jpg``: camera 3, identity 12);
    else -1 and 0.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {root}")
    mod = Modality.parse(modality)
    samples: list[Sample] = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        images = sorted(f for f in files
                        if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            continue
        rel = (root.resolve().name, *Path(here).relative_to(root).parts)  # gallery may be cam3/
        if tracklets:
            pid, cam = _labels_from(rel[:-1])
            samples.append(Sample(tuple(os.path.join(here, f) for f in images), pid, cam, mod))
        else:
            pid, cam = _labels_from(rel)
            samples.extend(Sample(os.path.join(here, f), pid, cam, mod) for f in images)
    if not samples:
        raise ValueError(f"gallery folder {root} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return samples


def gallery_samples(
    gallery: str | os.PathLike[str] | Sequence[Sample | str | os.PathLike[str] | Sequence[str]],
    tracklets: bool,
    modality: str | int | Modality = Modality.VISIBLE,
    ids: Sequence[int] | None = None,
    cameras: Sequence[int] | None = None,
) -> list[Sample]:
    """Samples of a gallery given as a folder, a list of samples, or a list of image
    paths / frame lists (then ``ids`` and ``cameras`` may label them)."""
    if isinstance(gallery, (str, os.PathLike)):
        samples = list_gallery_folder(gallery, tracklets, modality)
    else:
        mod = Modality.parse(modality)
        samples = []
        for k, item in enumerate(gallery):
            if isinstance(item, Sample):
                samples.append(item)
            elif isinstance(item, (str, os.PathLike)):
                samples.append(Sample(os.fspath(item), -1, 0, mod))
            elif isinstance(item, Sequence) and item:
                samples.append(Sample(tuple(os.fspath(f) for f in item), -1, 0, mod))
            else:
                raise TypeError(f"gallery item {k}: expected a path, a list of frame paths or "
                                f"a Sample, got {type(item).__name__}")
    if not samples:
        raise ValueError("the gallery is empty")
    for name, values in (("ids", ids), ("cameras", cameras)):
        if values is not None and len(values) != len(samples):
            raise ValueError(f"{name}: {len(values)} values for {len(samples)} gallery items")
    if ids is not None or cameras is not None:
        samples = [Sample(s.path, int(ids[k]) if ids is not None else s.pid,
                          int(cameras[k]) if cameras is not None else s.camera, s.modality)
                   for k, s in enumerate(samples)]
    return samples
