"""Image decoding with errors that name the file.

Two entry points:

- :func:`load_image` returns an RGB ``PIL.Image`` (the familiar form);
- :func:`read_image_tensor` returns a ``uint8`` tensor ``(3, H, W)``, the form the
  training pipeline works on. JPEG files are decoded with ``torchvision.io.decode_jpeg``
  (libjpeg-turbo straight into a tensor; about 1.5x faster than PIL plus a numpy
  conversion for 288x144 frames, measured by ``benchmarks/data_speed.py``); other
  formats (RegDB's BMP, PNG) go through PIL.

torchvision 0.29 marks its image codecs deprecated (in favour of TorchCodec) and warns
on every call; the call is made with that warning silenced, and if a future torchvision drops
``decode_jpeg`` the PIL path is used instead.

Every PIL mode becomes RGB correctly (:func:`to_rgb`): 16-bit images (``I;16*``, and
``I`` holding 0..65535) are scaled to 8 bits instead of saturating to white; 32-bit
float images (``F``), whose value range is unknown, are refused. Float tensors must be
finite (:func:`check_image_tensor`).

A missing, unreadable or corrupt file raises :class:`ImageReadError`, whose message
names the file. The class takes a single message argument so that PyTorch's
DataLoader can re-raise it in the main process with the same type and message.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "check_image_tensor",
    "describe_path",
    "error_summary",
    "is_jpeg",
    "load_image",
    "read_image_tensor",
    "to_rgb",
    "verify_image",
]

_JPEG_MAGIC = b"\xff\xd8"

try:
    from torchvision.io import ImageReadMode as _ImageReadMode
    from torchvision.io import decode_jpeg as _decode_jpeg
except ImportError:  # a torchvision without image codecs: PIL decodes everything
    _decode_jpeg = None
    _ImageReadMode = None


class ImageReadError(OSError):
    """An image file is missing, unreadable or corrupt. The message names the file."""


def is_jpeg(data: bytes) -> bool:
    """True when ``data`` starts with the JPEG start-of-image marker."""
    return data[:2] == _JPEG_MAGIC


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {os.fspath(path)!r}") from None
    except OSError as err:
        raise ImageReadError(f"cannot read image file {os.fspath(path)!r}: {err}") from None
    if not data:
        raise ImageReadError(f"image file is empty: {os.fspath(path)!r}")
    return data


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageModeError(ValueError):
    """A PIL image mode that cannot be turned into RGB without guessing its range."""


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. 16-bit grey (``I;16*``, or ``I`` with values in 0..65535)
    is scaled by 255/65535; ``F`` (32-bit float) and out-of-range ``I`` raise
    :class:`ImageModeError` (PIL's own ``convert`` would clip them to white or black)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageModeError(
                f"32-bit integer image (mode I) with values {values.min()}..{values.max()}, "
                "outside 0..65535; convert it to 8 or 16 bits"
            )
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    if image.mode == "F":
        raise ImageModeError(
            "32-bit float image (mode F): its value range is unknown; save it as an 8- or "
            "16-bit image"
        )
    return image.convert("RGB")


def check_image_tensor(x: torch.Tensor, where: str) -> None:
    """Raises ``ValueError`` naming ``where`` if a float image tensor holds NaN or
    infinite values (they would silently become black pixels)."""
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{where}: the image tensor holds {bad} NaN or infinite value(s)")


def _pil_decode(data: bytes, path: str | os.PathLike, draft_size: tuple[int, int] | None):
    """Decode with PIL into an RGB image; ``draft_size`` is (height, width)."""
    try:
        # PIL refuses truncated files by default (ImageFile.LOAD_TRUNCATED_IMAGES is
        # False), so a half-written image fails here instead of decoding half-grey.
        image = Image.open(io.BytesIO(data))
        if draft_size is not None and image.format == "JPEG":
            height, width = draft_size
            # JPEG DCT scaling: decodes at the smallest 1/2^k scale still >= the request.
            image.draft("RGB", (width, height))
        image.load()
        image = to_rgb(image)
    except UnidentifiedImageError:
        raise ImageReadError(
            f"cannot decode image {os.fspath(path)!r}: not in an image format PIL can read"
        ) from None
    except ImageModeError as err:
        raise ImageReadError(f"cannot use image {os.fspath(path)!r}: {err}") from None
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise ImageReadError(
            f"cannot decode image {os.fspath(path)!r}: {type(err).__name__}: {err}"
        ) from None
    return image


def verify_image(path: str | os.PathLike) -> str | None:
    """None if ``path`` decodes into an RGB image (every pixel, as training reads it),
    else the reason it does not (missing, empty, truncated, corrupt, not an image,
    unsupported mode)."""
    try:
        read_image_tensor(path)
    except ImageReadError as err:
        return str(err)
    return None


def load_image(
    path: str | os.PathLike, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Open ``path`` as an RGB PIL image.

    ``draft_size`` ((height, width)), when given, lets PIL decode a JPEG at a reduced
    scale (1/2, 1/4, 1/8) that is still at least that size -- much faster for large
    images that are resized down anyway. Raises :class:`ImageReadError` naming the file.
    """
    return _pil_decode(_read_bytes(path), path, draft_size)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the JPEG header via PIL's lazy open; None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        return height, width
    except Exception:
        return None


def read_image_tensor(
    path: str | os.PathLike, draft_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Decode ``path`` into a ``uint8`` tensor of shape ``(3, H, W)`` (RGB).

    JPEG: ``torchvision.io.decode_jpeg`` (grayscale JPEGs are replicated to RGB);
    if ``draft_size`` ((height, width)) is given and the image is at least twice that
    size on both sides, PIL's reduced-scale JPEG decoding is used instead. If the fast
    decoder fails, PIL is tried before giving up (it covers e.g. unusual JPEG variants).
    Raises :class:`ImageReadError` naming the file.
    """
    data = _read_bytes(path)
    if is_jpeg(data):
        use_draft = False
        if draft_size is not None:
            size = _jpeg_size(data)
            use_draft = size is not None and (
                size[0] >= 2 * draft_size[0] and size[1] >= 2 * draft_size[1]
            )
        if not use_draft and _decode_jpeg is not None:
            try:
                buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return _decode_jpeg(buffer, mode=_ImageReadMode.RGB)
            except (RuntimeError, ValueError):
                pass  # fall through to PIL, which raises a named error if it fails too
    image = _pil_decode(data, path, draft_size)
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def describe_path(path: str | os.PathLike | tuple) -> str:
    """Short printable form of a sample path (tracklets: first frame and count)."""
    if isinstance(path, tuple):
        if not path:
            return "<empty tracklet>"
        return f"{Path(path[0]).parent}/ ({len(path)} frames)"
    return os.fspath(path)


def error_summary(error: BaseException) -> str:
    """One line for the user: the last line of the message.

    An error re-raised by a DataLoader from a worker carries the worker's traceback in
    its message ("Caught ImageReadError in DataLoader worker process 0. Original
    Traceback ..."); its last line is the original ``module.Class: message``, returned
    here as ``Class: message``.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1].strip()
    head, sep, rest = last.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == type(error).__name__:
        return f"{type(error).__name__}: {rest}"
    return f"{type(error).__name__}: {last}"
