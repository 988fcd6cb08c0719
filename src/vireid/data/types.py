"""Core records shared by loaders, protocols, samplers and the evaluator."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Modality(IntEnum):
    """Modality codes used everywhere (labels, samplers, stems)."""

    VISIBLE = 0
    INFRARED = 1

    @classmethod
    def parse(cls, value: str | int | Modality) -> Modality:
        if isinstance(value, Modality):
            return value
        if isinstance(value, int):
            return cls(value)
        key = value.strip().lower()
        aliases = {
            "visible": cls.VISIBLE, "vis": cls.VISIBLE, "rgb": cls.VISIBLE, "v": cls.VISIBLE,
            "infrared": cls.INFRARED, "ir": cls.INFRARED, "nir": cls.INFRARED,
            "thermal": cls.INFRARED, "t": cls.INFRARED,
        }
        if key not in aliases:
            raise ValueError(f"unknown modality {value!r}; expected one of {sorted(aliases)}")
        return aliases[key]


@dataclass(frozen=True)
class Sample:
    """One image, or one tracklet (an ordered tuple of frame paths).

    ``pid`` is the identity as written in the dataset; ``label`` is the
    contiguous training label (``-1`` for test samples); ``camera`` is the
    dataset's camera number as used by its protocol (e.g. SYSU cam3 -> 3).
    """

    path: str | tuple[str, ...]
    pid: int
    camera: int
    modality: Modality
    label: int = -1

    @property
    def is_tracklet(self) -> bool:
        return isinstance(self.path, tuple)

    @property
    def frames(self) -> tuple[str, ...]:
        return self.path if isinstance(self.path, tuple) else (self.path,)


@dataclass(frozen=True)
class EvalSplit:
    """One query/gallery evaluation: a trial of one direction of one protocol.

    ``protocol`` names the rule set in :mod:`vireid.data.protocols`
    (keep rule, CMC variant).
    """

    protocol: str
    name: str
    query: tuple[Sample, ...]
    gallery: tuple[Sample, ...]
    trial: int = 0
    direction: str = ""


@dataclass
class ReIDData:
    """A loaded dataset: training samples plus every evaluation split of its protocol."""

    name: str
    root: str
    train: list[Sample]
    splits: list[EvalSplit]
    num_classes: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """What a method is built from besides its config: the dataset's name, number of
    training identities, camera numbers (rows of a camera embedding) and whether its
    samples are tracklets. Methods keep its numbers in their state dict, so every
    checkpoint holds them and a model is rebuilt from a checkpoint alone."""

    name: str
    num_classes: int
    cameras: tuple[int, ...]
    is_video: bool

    @classmethod
    def of(cls, data: ReIDData) -> DataSpec:
        """The spec of a loaded dataset: cameras of its training and test samples, sorted."""
        cameras = {s.camera for s in data.train} | {
            s.camera for split in data.splits for s in (*split.query, *split.gallery)}
        return cls(data.name, int(data.num_classes), tuple(sorted(int(c) for c in cameras)),
                   any(s.is_tracklet for s in data.train[:1]))
