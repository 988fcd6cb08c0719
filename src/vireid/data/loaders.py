"""torch Datasets over :class:`~vireid.data.types.Sample` lists, their collate function
and the DataLoader worker seeding.

Items are dicts::

    image     (C,H,W) image, (T,C,H,W) clip, or (n_clips,T,C,H,W) for dense sampling
    views     extra augmented views (only when the modality's transform is a sequence)
    label, pid, camera, modality, index    ints (index = position in ``samples``)
    num_bad   number of unreadable files replaced while building the item (skip_bad)

Transforms are chosen per sample modality: ``transform`` is one callable, or a mapping
``{Modality.VISIBLE: t_vis, Modality.INFRARED: t_ir}`` (keys may also be names such as
``"visible"``/``"ir"``); a value that is a sequence of callables produces several views
(CSDN: each visible image yields two views). Callables that are
:class:`~vireid.data.transforms.Transform` instances get the item's random source; any
other callable is called with the image alone.

Randomness: with ``seed=None`` the global ``random`` module is used, which the
DataLoader seeds in each worker (use :func:`seed_worker` as ``worker_init_fn`` to seed
numpy too). With an integer ``seed`` every item draws from its own
``random.Random`` keyed by ``(seed, epoch, index)`` -- augmentation and frame choice
are then independent of the number of workers and reproducible after a resume; call
:meth:`set_epoch` each epoch. An index that carries its draw (a
:class:`~vireid.data.samplers.Draw`, yielded by the identity samplers) keys the stream by
``(seed, epoch, draw)`` instead, so that an item drawn twice in one epoch (P x K sampling
with replacement) gets two independent augmentations.

Unreadable files raise :class:`~vireid.data.io.ImageReadError` naming the file; the
DataLoader re-raises it in the main process with the same type and the file in the
message. ``skip_bad=True`` replaces an unreadable image by another image of the same
identity and modality (tracklets: an unreadable frame by the nearest readable frame of
the same tracklet), with a warning, and counts it in ``num_bad`` -- never silently.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vireid.data.io import ImageReadError, describe_path, read_image_tensor
from vireid.data.sampling import FRAME_SAMPLERS, sample_frames
from vireid.data.transforms import Transform, to_uint8_tensor
from vireid.data.types import Modality, Sample

__all__ = ["ImageDataset", "TrackletDataset", "collate_samples", "seed_worker"]

TransformSpec = (
    Callable[..., Any]
    | Sequence[Callable[..., Any]]
    | Mapping[Modality | str | int, Callable[..., Any] | Sequence[Callable[..., Any]]]
    | None
)


def _as_views(value: Any) -> list[Callable[..., Any]]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _resolve_transforms(spec: TransformSpec) -> dict[Modality, list[Callable[..., Any]]]:
    if isinstance(spec, Mapping):
        table: dict[Modality, list[Callable[..., Any]]] = {}
        for key, value in spec.items():
            table[Modality.parse(key)] = _as_views(value)
        return table
    views = _as_views(spec)
    return {Modality.VISIBLE: views, Modality.INFRARED: views}


def _apply(transform: Callable[..., Any], x: Any, rng: random.Random | None) -> torch.Tensor:
    if isinstance(transform, Transform):
        return transform(x, rng)
    return transform(x)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: seed ``random`` and numpy from the worker's
    torch seed (PyTorch seeds ``random`` and torch per worker, but not numpy)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class _SampleDataset(Dataset):
    def __init__(
        self,
        samples: Sequence[Sample],
        transform: TransformSpec,
        seed: int | None,
        skip_bad: bool,
        draft_size: tuple[int, int] | None,
    ) -> None:
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.samples = list(samples)
        self.transform = transform
        self._transforms = _resolve_transforms(transform)
        self.seed = seed
        self.epoch = 0
        self.skip_bad = skip_bad
        self.draft_size = draft_size
        self.num_bad = 0
        """Unreadable files replaced in this process (the workers' counts arrive in items)."""

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the per-item random sources (used when ``seed`` is set)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> random.Random | None:
        if self.seed is None:
            return None
        draw = getattr(index, "draw", None)
        if draw is not None:  # keyed by the draw: repeated draws differ (tag bit 1 << 160)
            return random.Random((1 << 160) + (self.seed << 96) + (self.epoch << 64) + draw)
        return random.Random((self.seed << 64) + (self.epoch << 32) + index)

    def _views(self, sample: Sample) -> list[Callable[..., Any]]:
        modality = Modality.parse(sample.modality)
        try:
            return self._transforms[modality]
        except KeyError:
            raise KeyError(
                f"no transform for modality {modality.name.lower()!r}; "
                f"the transform mapping has {sorted(m.name.lower() for m in self._transforms)}"
            ) from None

    def _transformed(self, sample: Sample, x: Any, rng: random.Random | None) -> dict[str, Any]:
        views = self._views(sample)
        if not views:
            return {"image": to_uint8_tensor(x)}
        item: dict[str, Any] = {"image": _apply(views[0], x, rng)}
        if len(views) > 1:
            item["views"] = [_apply(v, x, rng) for v in views[1:]]
        return item

    def _read(self, path: str) -> torch.Tensor:
        return read_image_tensor(path, self.draft_size)

    def _metadata(self, sample: Sample, index: int, num_bad: int) -> dict[str, Any]:
        return {
            "label": sample.label,
            "pid": sample.pid,
            "camera": sample.camera,
            "modality": int(sample.modality),
            "index": int(index),
            "num_bad": num_bad,
        }

    def _warn_bad(self, error: Exception, what: str) -> None:
        self.num_bad += 1
        warnings.warn(f"{error}; {what} (skip_bad=True)", stacklevel=3)


class ImageDataset(_SampleDataset):
    """One image per item. ``draft_size`` ((H, W)) enables PIL's reduced-scale JPEG
    decoding for images at least twice that size (see :func:`~vireid.data.io.read_image_tensor`)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: TransformSpec = None,
        *,
        seed: int | None = None,
        skip_bad: bool = False,
        draft_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(samples, transform, seed, skip_bad, draft_size)
        for i, sample in enumerate(self.samples):
            if sample.is_tracklet:
                raise ValueError(
                    f"sample {i} ({describe_path(sample.path)}) is a tracklet; use TrackletDataset"
                )
        self._groups: dict[tuple[int, int], list[int]] | None = None

    def _alternatives(self, index: int) -> list[int]:
        if self._groups is None:
            groups: dict[tuple[int, int], list[int]] = {}
            for i, s in enumerate(self.samples):
                groups.setdefault((s.pid, int(s.modality)), []).append(i)
            self._groups = groups
        sample = self.samples[index]
        group = self._groups[(sample.pid, int(sample.modality))]
        at = group.index(index)
        return group[at + 1 :] + group[:at]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        num_bad = 0
        try:
            image = self._read(sample.path)
            used = sample
        except ImageReadError as error:
            if not self.skip_bad:
                raise
            num_bad += 1
            self._warn_bad(error, f"using another image of identity {sample.pid} instead")
            image, used = None, sample
            for alt in self._alternatives(index):
                try:
                    image = self._read(self.samples[alt].path)
                    used = self.samples[alt]
                    break
                except ImageReadError as alt_error:
                    num_bad += 1
                    self._warn_bad(alt_error, "trying the next image")
            if image is None:
                raise ImageReadError(
                    f"no readable image of identity {sample.pid} "
                    f"({Modality.parse(sample.modality).name.lower()}) left; "
                    f"first failure: {error}"
                ) from None
        item = self._transformed(sample, image, self._rng(index))
        item.update(self._metadata(used, index, num_bad))
        return item


class TrackletDataset(_SampleDataset):
    """One clip per item: ``seq_len`` frames chosen by ``frame_sampler``.

    ``frame_sampler``: a mode of :data:`~vireid.data.sampling.FRAME_SAMPLERS`
    (``"rrs"`` training, ``"first_of_chunk"`` / ``"evenly"`` / ``"dense"`` testing,
    ``"random_sorted"`` BUPTCampus training) or a callable ``(n, T, rng) -> indices``.
    Frames are decoded once each (repeated indices are shared), resized by the
    transform's :class:`~vireid.data.transforms.Resize` and transformed as one clip.
    ``"dense"`` items hold ``(n_clips, T, C, H, W)`` and ``num_clips``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: TransformSpec = None,
        seq_len: int = 6,
        frame_sampler: str | Callable[..., Sequence[int]] = "rrs",
        *,
        seed: int | None = None,
        skip_bad: bool = False,
        draft_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(samples, transform, seed, skip_bad, draft_size)
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if isinstance(frame_sampler, str) and frame_sampler not in FRAME_SAMPLERS:
            raise ValueError(
                f"unknown frame_sampler {frame_sampler!r}; expected one of {sorted(FRAME_SAMPLERS)}"
            )
        self.seq_len = seq_len
        self.frame_sampler = frame_sampler
        for i, sample in enumerate(self.samples):
            if not sample.frames:
                raise ValueError(f"sample {i} (identity {sample.pid}) has no frames")

    def _select(self, sample: Sample, rng: random.Random | None) -> list[int] | list[list[int]]:
        n = len(sample.frames)
        name = describe_path(sample.path)
        if isinstance(self.frame_sampler, str):
            return sample_frames(self.frame_sampler, n, self.seq_len, rng, name=name)
        return list(self.frame_sampler(n, self.seq_len, rng))

    def _read_frames(self, sample: Sample, wanted: list[int]) -> tuple[dict[int, torch.Tensor], int]:
        frames: dict[int, torch.Tensor] = {}
        bad: dict[int, ImageReadError] = {}
        for i in sorted(set(wanted)):
            try:
                frames[i] = self._read(sample.frames[i])
            except ImageReadError as error:
                if not self.skip_bad:
                    raise
                bad[i] = error
        num_bad = 0
        for i, error in bad.items():
            replacement = self._nearest_readable(sample, i, frames)
            if replacement is None:
                raise ImageReadError(
                    f"no readable frame in tracklet {describe_path(sample.path)}; "
                    f"first failure: {error}"
                )
            num_bad += 1
            self._warn_bad(error, f"using frame {replacement} of the same tracklet instead")
            frames[i] = frames[replacement]
        return frames, num_bad

    def _nearest_readable(
        self, sample: Sample, index: int, frames: dict[int, torch.Tensor]
    ) -> int | None:
        n = len(sample.frames)
        for distance in range(1, n):
            for j in (index - distance, index + distance):
                if 0 <= j < n:
                    if j in frames:
                        return j
                    try:
                        frames[j] = self._read(sample.frames[j])
                        return j
                    except ImageReadError:
                        continue
        return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        rng = self._rng(index)
        selection = self._select(sample, rng)
        if selection and isinstance(selection[0], list):  # dense: list of clips
            clips = [list(c) for c in selection]
            flat = sorted({i for clip in clips for i in clip})
            frames, num_bad = self._read_frames(sample, flat)
            position = {frame: k for k, frame in enumerate(flat)}
            item = self._transformed(sample, [frames[i] for i in flat], rng)
            gather = torch.tensor([[position[i] for i in clip] for clip in clips])
            item["image"] = item["image"][gather]
            if "views" in item:
                item["views"] = [v[gather] for v in item["views"]]
            item["num_clips"] = len(clips)
        else:
            chosen = [int(i) for i in selection]
            frames, num_bad = self._read_frames(sample, chosen)
            item = self._transformed(sample, [frames[i] for i in chosen], rng)
        item.update(self._metadata(sample, index, num_bad))
        return item


_META_KEYS = ("label", "pid", "camera", "modality", "index")


def collate_samples(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Collate items of :class:`ImageDataset` / :class:`TrackletDataset`.

    ``image`` stacks the items in order. Extra views are appended after them (all
    items' second views, then third views, ...) with their own metadata; ``view`` tells
    0 for the primary images and v for the v-th extra view. Dense tracklet items are
    concatenated clip by clip, with ``clip_owner`` giving each clip's row in the
    metadata tensors (average features with it). ``num_bad`` is the batch's total of replaced files.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    dense = "num_clips" in batch[0]
    images = [item["image"] for item in batch]
    out: dict[str, torch.Tensor] = {}
    meta = {key: [item[key] for item in batch] for key in _META_KEYS}
    view = [0] * len(batch)
    max_views = max(len(item.get("views", ())) for item in batch)
    for v in range(max_views):
        for item in batch:
            extra = item.get("views", ())
            if len(extra) > v:
                images.append(extra[v])
                for key in _META_KEYS:
                    meta[key].append(item[key])
                view.append(v + 1)
    if dense:
        counts = [int(image.shape[0]) for image in images]
        out["image"] = torch.cat(images)
        rows = torch.arange(len(images))
        out["clip_owner"] = torch.repeat_interleave(rows, torch.tensor(counts))
    else:
        out["image"] = torch.stack(images)
    for key in _META_KEYS:
        out[key] = torch.tensor(meta[key], dtype=torch.int64)
    out["view"] = torch.tensor(view, dtype=torch.int64)
    out["num_bad"] = torch.tensor(sum(int(item.get("num_bad", 0)) for item in batch))
    return out
