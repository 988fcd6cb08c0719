"""Image and clip augmentation on tensors, with explicit random sources.

Every transform is called as ``t(x, rng=None)``:

- ``x`` is one image ``(C, H, W)`` or one clip ``(T, C, H, W)`` (``uint8`` before
  :class:`Normalize`, ``float32`` after it). :class:`Resize` also accepts PIL images
  and lists of frames (of different sizes); the other transforms stack lists.
- ``rng`` is a ``random.Random``; ``None`` uses Python's global ``random`` module,
  which the DataLoader seeds in every worker. Passing an explicit generator makes a
  pipeline deterministic, which the tests rely on.

A clip gets the **same** random parameters on all of its frames (crop offset, flip,
erased rectangle, channel choice) unless :class:`Compose` is built with
``per_frame=True``, which reproduces the frame-independent torchvision pipelines of
the HITSZ-VCM reference loaders.

Geometry runs on ``uint8`` tensors; :class:`Normalize` converts to ``float32`` once;
erasing and channel operations come after it, in normalised space, in the order of the
reference pipelines (CAJ / CSDN: ``ToTensor, Normalize, ChannelRandomErasing,
ChannelExchange | ChannelAdapGray``; CLIP-ReID: ``ToTensor, Normalize, RandomErasing``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from vireid.data.io import check_image_tensor, to_rgb
from vireid.data.types import Modality

__all__ = [
    "NORMALIZATIONS",
    "RECIPES",
    "CAJ_ERASE_VALUES",
    "GRAY_WEIGHTS",
    "Transform",
    "Compose",
    "Resize",
    "PadCrop",
    "HorizontalFlip",
    "Normalize",
    "RandomErasing",
    "ChannelExchange",
    "ChannelAdapGray",
    "build_transforms",
    "to_uint8_tensor",
]

NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # open_clip.constants.OPENAI_DATASET_MEAN / OPENAI_DATASET_STD (the CLIP pre-processing).
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    # open_clip.constants.IMAGENET_MEAN / IMAGENET_STD; used by the CAJ and CSDN reference code.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # INPUT.PIXEL_MEAN / PIXEL_STD of the CLIP-ReID reference configs (configs/person/*.yml).
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
"""Named (mean, std) pairs for :class:`Normalize`, on the [0, 1] pixel scale."""

CAJ_ERASE_VALUES = (0.4914, 0.4822, 0.4465)
"""Fill values of ``ChannelRandomErasing`` in the CAJ reference code (``ChannelAug.py`` of
Ye et al., ICCV 2021; identical in CSDN's ``data_loader/processing.py`` and torchreid's
``RandomErasing``). They are written into the *normalised* tensor, as there."""

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
"""RGB weights of the grayscale image in CAJ's ``ChannelExchange`` / ``ChannelAdapGray``."""


def _rng(rng: random.Random | None) -> Any:
    return random if rng is None else rng


def _is_clip_input(x: Any) -> bool:
    if isinstance(x, (list, tuple)):
        return True
    return isinstance(x, torch.Tensor) and x.dim() == 4


def _frame_to_tensor(frame: Any) -> torch.Tensor:
    if isinstance(frame, Image.Image):
        array = np.array(to_rgb(frame), dtype=np.uint8, copy=True)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()
    if isinstance(frame, torch.Tensor):
        check_image_tensor(frame, "image tensor")
        return frame
    raise TypeError(f"expected a PIL image or a tensor, got {type(frame).__name__}")


def to_uint8_tensor(x: Any) -> torch.Tensor:
    """PIL image -> ``(3, H, W)`` uint8; list of frames -> stacked ``(T, C, H, W)``.

    Tensors pass through unchanged. Frames of different sizes raise a ``ValueError``
    (put a :class:`Resize` first).
    """
    if isinstance(x, torch.Tensor):
        if x.dim() not in (3, 4):
            raise ValueError(f"expected (C,H,W) or (T,C,H,W), got shape {tuple(x.shape)}")
        check_image_tensor(x, "image tensor")
        return x
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("empty clip: no frames to transform")
        frames = [_frame_to_tensor(f) for f in x]
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) > 1:
            raise ValueError(
                f"clip frames have different sizes {sorted(shapes)}; put a Resize first"
            )
        return torch.stack(frames)
    return _frame_to_tensor(x)


class Transform:
    """Base class: ``__call__(x, rng=None)`` on an image ``(C,H,W)`` or clip ``(T,C,H,W)``."""

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply transforms in order with one random source.

    ``per_frame=False`` (default): a clip is transformed as a whole, so every frame gets
    the same random parameters. ``per_frame=True``: each frame of a clip goes through
    the pipeline on its own (independent parameters), as in the HITSZ-VCM reference
    loaders, which call a torchvision pipeline frame by frame.
    """

    def __init__(self, transforms: Sequence[Callable], per_frame: bool = False) -> None:
        self.transforms = list(transforms)
        self.per_frame = per_frame

    def _apply(self, x: Any, rng: random.Random | None) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x, rng)
        return to_uint8_tensor(x)

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        if self.per_frame and _is_clip_input(x):
            return torch.stack([self._apply(frame, rng) for frame in x])
        return self._apply(x, rng)

    def __repr__(self) -> str:
        body = "".join(f"\n  {t!r}," for t in self.transforms)
        return f"Compose(per_frame={self.per_frame},{body}\n)"


_TENSOR_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
_PIL_FILTERS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}


class Resize(Transform):
    """Resize to ``size`` = (height, width); a no-op when the input already has that size.

    ``bilinear`` / ``bicubic`` run on uint8 tensors with antialiasing
    (``torchvision.transforms.v2.functional.resize``, which matches PIL's filters and is
    ~3x faster than PIL here). ``lanczos`` goes through PIL (``Image.LANCZOS`` is the
    ``Image.ANTIALIAS`` filter with which the CAJ / CSDN reference code pre-resizes
    SYSU-MM01 and RegDB to 144x288). Accepts PIL images, tensors, and lists of frames of
    any sizes; returns a uint8 tensor.
    """

    def __init__(self, size: tuple[int, int] = (288, 144), interpolation: str = "bicubic") -> None:
        if interpolation not in _PIL_FILTERS:
            raise ValueError(
                f"unknown interpolation {interpolation!r}; expected one of {sorted(_PIL_FILTERS)}"
            )
        self.size = (int(size[0]), int(size[1]))
        self.interpolation = interpolation

    def _resize_frame(self, frame: Any) -> torch.Tensor:
        height, width = self.size
        if isinstance(frame, Image.Image):
            if (frame.height, frame.width) == self.size:
                return _frame_to_tensor(frame)
            if self.interpolation == "lanczos":
                resized = to_rgb(frame).resize((width, height), Image.LANCZOS)
                return _frame_to_tensor(resized)
            frame = _frame_to_tensor(frame)
        return self._resize_tensor(frame)

    def _resize_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        if self.interpolation == "lanczos":
            if x.dtype != torch.uint8:
                raise ValueError("lanczos resizing works on uint8 images; resize before Normalize")
            frames = x if x.dim() == 4 else x.unsqueeze(0)
            out = []
            for frame in frames:
                pil = Image.fromarray(frame.permute(1, 2, 0).numpy())
                out.append(_frame_to_tensor(pil.resize(self.size[::-1], Image.LANCZOS)))
            stacked = torch.stack(out)
            return stacked if x.dim() == 4 else stacked[0]
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        mode = InterpolationMode(self.interpolation)
        return tvf.resize(x, list(self.size), interpolation=mode, antialias=True)

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            if not x:
                raise ValueError("empty clip: no frames to resize")
            return torch.stack([self._resize_frame(f) for f in x])
        if isinstance(x, Image.Image):
            return self._resize_frame(x)
        return self._resize_tensor(to_uint8_tensor(x))


class PadCrop(Transform):
    """Zero-pad by ``padding`` on every side, then crop a random ``size`` window.

    Equivalent to torchvision ``Pad(padding)`` + ``RandomCrop(size)`` (crop offset uniform
    over all valid positions, both ends included) without building the padded image.
    """

    def __init__(self, size: tuple[int, int] = (288, 144), padding: int = 10, fill: int = 0) -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.size = (int(size[0]), int(size[1]))
        self.padding = int(padding)
        self.fill = fill

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        x = to_uint8_tensor(x)
        r = _rng(rng)
        in_h, in_w = x.shape[-2:]
        out_h, out_w = self.size
        pad = self.padding
        if in_h + 2 * pad < out_h or in_w + 2 * pad < out_w:
            raise ValueError(
                f"cannot crop {self.size} from a {(in_h, in_w)} image padded by {pad}; "
                "resize first"
            )
        top = r.randint(0, in_h + 2 * pad - out_h) - pad
        left = r.randint(0, in_w + 2 * pad - out_w) - pad
        src_y0, src_y1 = max(top, 0), min(top + out_h, in_h)
        src_x0, src_x1 = max(left, 0), min(left + out_w, in_w)
        if src_y0 == top and src_x0 == left and src_y1 - src_y0 == out_h and src_x1 - src_x0 == out_w:
            return x[..., src_y0:src_y1, src_x0:src_x1].clone()
        out = x.new_full((*x.shape[:-2], out_h, out_w), self.fill)
        dst_y0, dst_x0 = src_y0 - top, src_x0 - left
        if src_y1 > src_y0 and src_x1 > src_x0:
            out[..., dst_y0 : dst_y0 + src_y1 - src_y0, dst_x0 : dst_x0 + src_x1 - src_x0] = x[
                ..., src_y0:src_y1, src_x0:src_x1
            ]
        return out


class HorizontalFlip(Transform):
    """Mirror left-right with probability ``p`` (all frames of a clip together)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        x = to_uint8_tensor(x)
        if _rng(rng).random() < self.p:
            return x.flip(-1)
        return x


class Normalize(Transform):
    """uint8 ``[0, 255]`` (or float ``[0, 1]``) -> float32 ``(x - mean) / std``.

    ``normalization`` is a name in :data:`NORMALIZATIONS` or a ``(mean, std)`` pair on
    the [0, 1] scale. One float conversion and one fused scale/shift.
    """

    def __init__(self, normalization: str | tuple = "clip") -> None:
        if isinstance(normalization, str):
            if normalization not in NORMALIZATIONS:
                raise ValueError(
                    f"unknown normalization {normalization!r}; "
                    f"expected one of {sorted(NORMALIZATIONS)} or a (mean, std) pair"
                )
            mean, std = NORMALIZATIONS[normalization]
        else:
            mean, std = normalization
        if len(mean) != len(std):
            raise ValueError(f"mean {mean} and std {std} have different lengths")
        self.normalization = normalization
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        mean_t = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._scale_u8 = 1.0 / (255.0 * std_t)
        self._scale_f = 1.0 / std_t
        self._shift = mean_t / std_t

    def __repr__(self) -> str:
        return f"Normalize(normalization={self.normalization!r})"

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        x = to_uint8_tensor(x)
        if x.shape[-3] != self._shift.shape[0]:
            raise ValueError(
                f"image has {x.shape[-3]} channels but the normalisation has {self._shift.shape[0]}"
            )
        scale = self._scale_u8 if x.dtype == torch.uint8 else self._scale_f
        out = x.to(torch.float32, copy=True)
        return out.mul_(scale).sub_(self._shift)


_ERASING_PRESETS: dict[str, dict[str, Any]] = {
    # timm.data.random_erasing.RandomErasing defaults (min_area 0.02, max_area 1/3,
    # min_aspect 0.3, log-uniform aspect, 10 attempts) with mode='pixel' (per-pixel N(0,1)
    # noise), as CLIP-ReID calls it (datasets/make_dataloader_clipreid.py).
    "timm": dict(area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3), aspect_sampling="log",
                 fill="pixel", attempts=10),
    # Zhong et al. random erasing as in torchreid and CAJ's ChannelRandomErasing
    # (sl 0.02, sh 0.4, r1 0.3, uniform aspect in [r1, 1/r1], 100 attempts, CIFAR means).
    "caj": dict(area=(0.02, 0.4), aspect=(0.3, 1 / 0.3), aspect_sampling="uniform",
                fill=CAJ_ERASE_VALUES, attempts=100),
}


class RandomErasing(Transform):
    """Erase one random rectangle with probability ``p`` (Zhong et al., AAAI 2020).

    Per attempt: area fraction ~ U(``area``), aspect ratio h/w ~ U(``aspect``) or
    log-uniform (``aspect_sampling="log"``), ``h = round(sqrt(A*r))``, ``w = round(sqrt(A/r))``;
    accepted when ``h < H`` and ``w < W``; top-left uniform (both ends included). At most
    ``attempts`` tries, then the image is left unchanged. ``fill``: ``"pixel"`` (N(0, 1)
    noise per pixel), ``"zero"``, or per-channel values (a 1-channel image uses the first).
    Use ``RandomErasing.preset("timm" | "caj", p=...)`` for the two reference variants.
    A clip has the same rectangle on every frame. Works in place when ``inplace=True``.
    """

    def __init__(
        self,
        p: float = 0.5,
        area: tuple[float, float] = (0.02, 0.4),
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        aspect_sampling: str = "uniform",
        fill: str | Sequence[float] = CAJ_ERASE_VALUES,
        attempts: int = 100,
        inplace: bool = False,
    ) -> None:
        if aspect_sampling not in ("uniform", "log"):
            raise ValueError(f"aspect_sampling must be 'uniform' or 'log', got {aspect_sampling!r}")
        if isinstance(fill, str) and fill not in ("pixel", "zero"):
            raise ValueError(f"fill must be 'pixel', 'zero' or per-channel values, got {fill!r}")
        if not 0 < area[0] <= area[1]:
            raise ValueError(f"area range must satisfy 0 < min <= max, got {area}")
        self.p = p
        self.area = (float(area[0]), float(area[1]))
        self.aspect = (float(aspect[0]), float(aspect[1]))
        self.aspect_sampling = aspect_sampling
        self.fill = fill if isinstance(fill, str) else tuple(float(v) for v in fill)
        self.attempts = attempts
        self.inplace = inplace

    @classmethod
    def preset(cls, name: str, p: float = 0.5, inplace: bool = False) -> RandomErasing:
        if name not in _ERASING_PRESETS:
            raise ValueError(f"unknown erasing preset {name!r}; expected one of {sorted(_ERASING_PRESETS)}")
        return cls(p=p, inplace=inplace, **_ERASING_PRESETS[name])

    def sample_box(self, height: int, width: int, rng: random.Random | None = None):
        """Draw (top, left, h, w) or ``None`` (no erasing), consuming ``rng`` like ``__call__``."""
        r = _rng(rng)
        if r.random() > self.p:
            return None
        total = height * width
        for _ in range(self.attempts):
            target = r.uniform(*self.area) * total
            if self.aspect_sampling == "log":
                ratio = math.exp(r.uniform(math.log(self.aspect[0]), math.log(self.aspect[1])))
            else:
                ratio = r.uniform(*self.aspect)
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            if w < width and h < height:
                return r.randint(0, height - h), r.randint(0, width - w), h, w
        return None

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        x = to_uint8_tensor(x)
        r = _rng(rng)
        box = self.sample_box(x.shape[-2], x.shape[-1], r)
        if box is None:
            return x
        if not self.inplace:
            x = x.clone()
        top, left, h, w = box
        region = x[..., top : top + h, left : left + w]
        if self.fill == "pixel":
            generator = torch.Generator().manual_seed(r.getrandbits(63))
            noise = torch.randn(region.shape, generator=generator, dtype=torch.float32)
            region.copy_(noise.to(x.dtype) if x.is_floating_point() else noise.round().clamp(0, 255))
        elif self.fill == "zero":
            region.zero_()
        else:
            channels = x.shape[-3]
            values = self.fill if channels == len(self.fill) else self.fill[:1] * channels
            fill = torch.tensor(values, dtype=x.dtype).view(-1, 1, 1)
            region.copy_(fill.expand_as(region))
        return x


def _replicate_channel(x: torch.Tensor, channel: int) -> torch.Tensor:
    return x.narrow(-3, channel, 1).expand(x.shape).contiguous()


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    red, green, blue = x.unbind(-3)
    gray = GRAY_WEIGHTS[0] * red.float() + GRAY_WEIGHTS[1] * green.float() + GRAY_WEIGHTS[2] * blue.float()
    if not x.is_floating_point():
        gray = gray.round_().clamp_(0, 255)
    return gray.to(x.dtype).unsqueeze(-3).expand(x.shape).contiguous()


def _check_rgb(x: torch.Tensor, name: str) -> None:
    if x.shape[-3] != 3:
        raise ValueError(f"{name} needs 3-channel images, got {x.shape[-3]} channels")


class ChannelExchange(Transform):
    """Channel augmentation of Ye et al., ICCV 2021 (CAJ ``ChannelExchange``).

    ``k = randint(0, gray)`` (both ends included): ``k`` in 0..2 replaces the image by
    channel ``k`` copied into all three channels; ``k >= 3`` replaces it by the grayscale
    image (:data:`GRAY_WEIGHTS`). Note: the reference code (CAJ and CSDN) uses
    ``gray=2``, which never selects the grayscale branch; ``gray=3`` gives 1/4 gray.
    """

    def __init__(self, gray: int = 2) -> None:
        if gray < 0:
            raise ValueError(f"gray must be >= 0, got {gray}")
        self.gray = gray

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        x = to_uint8_tensor(x)
        _check_rgb(x, "ChannelExchange")
        k = _rng(rng).randint(0, self.gray)
        return _replicate_channel(x, k) if k < 3 else _to_gray(x)


class ChannelAdapGray(Transform):
    """CAJ ``ChannelAdapGray`` (Ye et al., ICCV 2021), used on infrared images by CSDN.

    ``k = randint(0, 3)``: ``k`` in 0..2 copies channel ``k`` into all three channels
    (probability 3/4 in total); ``k = 3``: grayscale with probability ``p``, otherwise
    unchanged. With the reference ``p = 0.5``: each single channel 1/4, gray 1/8,
    unchanged 1/8.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        x = to_uint8_tensor(x)
        _check_rgb(x, "ChannelAdapGray")
        r = _rng(rng)
        k = r.randint(0, 3)
        if k < 3:
            return _replicate_channel(x, k)
        if r.random() > self.p:
            return x
        return _to_gray(x)


RECIPES: dict[str, dict[str, Any]] = {
    # CLIP-ReID (Li et al., AAAI 2023): Resize(bicubic), flip, pad 10, crop, normalise,
    # timm random erasing in pixel mode (datasets/make_dataloader_clipreid.py). Flipping
    # after the crop instead of before gives the same distribution.
    # The video methods (X-ReID, VLD, LSMRL) use it too, applied consistently over a clip.
    "clipreid": dict(erasing="timm"),
    # CSDN / CAJ: pad 10, crop, flip, normalise, ChannelRandomErasing(0.5); its second
    # visible view adds ``channel="exchange"`` (ChannelExchange(gray=2)) and its infrared
    # view ``channel="adaptive_gray"`` (ChannelAdapGray(0.5)).
    "csdn": dict(erasing="caj"),
}
"""Training recipes for :func:`build_transforms`.

Deviations from the reference code, each an option:

- resizing: antialiased bicubic on tensors everywhere. The CAJ / CSDN code resizes
  SYSU-MM01 / RegDB once, offline, with PIL's ``Image.ANTIALIAS`` (Lanczos) filter;
  ``interpolation="lanczos"`` applies that filter (per epoch) but costs ~2 ms per
  480x240 image per epoch (PIL), which caps one worker near 350 images/s;
- normalisation: CLIP's constants by default; the CSDN / CAJ code uses ImageNet's and
  CLIP-ReID's configs 0.5 / 0.5 (``normalization="imagenet"`` or ``"half"``)."""

_OPTION_DEFAULTS: dict[str, Any] = dict(
    interpolation="bicubic",
    channel=None,
    normalization="clip",
    padding=10,
    flip_p=0.5,
    erase_p=0.5,
    per_frame=False,
    channel_exchange_gray=2,
    adaptive_gray_p=0.5,
)


def build_transforms(
    train: bool,
    size: tuple[int, int] = (288, 144),
    recipe: str = "clipreid",
    **options: Any,
) -> Compose:
    """The training or test pipeline of a method recipe (see :data:`RECIPES`).

    Test pipeline: resize (the recipe's interpolation) + normalise.
    Options (all optional): ``normalization`` (name or (mean, std)), ``interpolation``,
    ``padding`` (10), ``flip_p`` (0.5), ``erase_p`` (0.5), ``erasing`` ("timm", "caj" or
    None), ``channel`` (None, "exchange", "adaptive_gray"), ``channel_exchange_gray`` (2),
    ``adaptive_gray_p`` (0.5), ``per_frame`` (False). An unknown option raises ``ValueError``.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown transform recipe {recipe!r}; expected one of {sorted(RECIPES)}")
    settings = {**_OPTION_DEFAULTS, **RECIPES[recipe]}
    unknown = sorted(set(options) - set(settings))
    if unknown:
        raise ValueError(f"unknown transform option(s) {unknown}; expected some of {sorted(settings)}")
    settings.update(options)
    size = (int(size[0]), int(size[1]))
    steps: list[Transform] = [Resize(size, settings["interpolation"])]
    if not train:
        steps.append(Normalize(settings["normalization"]))
        return Compose(steps, per_frame=False)
    steps += [
        PadCrop(size, settings["padding"]),
        HorizontalFlip(settings["flip_p"]),
        Normalize(settings["normalization"]),
    ]
    if settings["erasing"] is not None and settings["erase_p"] > 0:
        steps.append(RandomErasing.preset(settings["erasing"], p=settings["erase_p"], inplace=True))
    channel = settings["channel"]
    if channel == "exchange":
        steps.append(ChannelExchange(settings["channel_exchange_gray"]))
    elif channel == "adaptive_gray":
        steps.append(ChannelAdapGray(settings["adaptive_gray_p"]))
    elif channel is not None:
        raise ValueError(f"unknown channel option {channel!r}; expected None, 'exchange' or 'adaptive_gray'")
    return Compose(steps, per_frame=settings["per_frame"])


def train_transforms_from_config(augment: Any, size: tuple[int, int], recipe: str = "clipreid",
                                 interpolation: str | None = None):
    """Per-modality training transforms for :class:`~vireid.data.loaders.ImageDataset` /
    ``TrackletDataset`` from a config's ``data.augment`` section.

    ``pad``, ``flip_prob``, ``random_erasing_prob``, ``mean``/``std`` set the shared
    steps; ``channel_erasing`` switches to CAJ's per-channel erasing values;
    ``adaptive_gray_prob`` > 0 adds CAJ's adaptive gray to infrared images;
    ``channel_exchange`` adds a second visible view with one random channel (CAJ
    ``ChannelExchange``), appended to the batch by the collate function.
    ``interpolation`` (``data.interpolation``) replaces the recipe's resize filter.
    """
    common: dict[str, Any] = dict(
        padding=augment.pad, flip_p=augment.flip_prob, erase_p=augment.random_erasing_prob,
        normalization=(tuple(augment.mean), tuple(augment.std)),
    )
    if interpolation is not None:
        common["interpolation"] = interpolation
    if augment.channel_erasing:
        common["erasing"] = "caj"
    visible = build_transforms(True, size, recipe, **common)
    infrared_options = dict(common)
    if augment.adaptive_gray_prob > 0:
        infrared_options.update(channel="adaptive_gray", adaptive_gray_p=augment.adaptive_gray_prob)
    infrared = build_transforms(True, size, recipe, **infrared_options)
    if augment.channel_exchange:
        exchanged = build_transforms(True, size, recipe, channel="exchange", **common)
        return {Modality.VISIBLE: [visible, exchanged], Modality.INFRARED: infrared}
    return {Modality.VISIBLE: visible, Modality.INFRARED: infrared}
