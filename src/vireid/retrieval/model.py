"""A trained model for inference: :func:`load_model` and :class:`ReIDModel`.

A checkpoint written by ``vireid train`` carries the resolved config and the
method's weights, so loading needs nothing else: no dataset, no CLIP weight file.
The method is built from its config and the :class:`~vireid.data.types.DataSpec`
stored in its state (number of identities, camera numbers, tracklets or not).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vireid.config import Config, config_from_dict, load_config
from vireid.data.datasets.base import IMAGE_EXTENSIONS, list_images
from vireid.data.io import check_image_tensor, to_rgb
from vireid.data.types import DataSpec, Modality, Sample
from vireid.engine.checkpoint import CheckpointError, load_checkpoint
from vireid.files import sha256_file
from vireid.utils import resolve_device

__all__ = ["ReIDModel", "load_model", "resolve_checkpoint"]

CHECKPOINT_NAMES = ("last.pt",)
"""File looked for in ``<run>/checkpoints/`` (and ``<dir>/``) when a folder is given."""

_INFERENCE_KEYS = (("model",), ("method",), ("data", "name"), ("data", "image_size"),
                   ("data", "video"), ("data", "augment"), ("eval", "flip_test"),
                   ("eval", "flip_fusion"))
"""Config entries that can change a feature; they enter :attr:`ReIDModel.fingerprint`."""


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or the ``last.pt`` of a run folder (``<run>/checkpoints/last.pt``)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for folder in (p / "checkpoints", p):
            for name in CHECKPOINT_NAMES:
                if (folder / name).is_file():
                    return folder / name
        raise FileNotFoundError(
            f"no checkpoint in {p}: expected {p / 'checkpoints' / 'last.pt'} (a run folder of "
            "vireid train) or a checkpoint file"
        )
    raise FileNotFoundError(f"checkpoint or run folder not found: {p}")


def _inference_config(
    stored: dict[str, Any], source: str, config: str | os.PathLike[str] | Config | None,
    overrides: Sequence[str],
) -> Config:
    """The run config, with the weight source removed: every weight is in the checkpoint."""
    if isinstance(config, Config):
        data = config.to_dict()
    elif config is not None:
        data = load_config(config, overrides).to_dict()
        overrides = ()
    else:
        data = json.loads(json.dumps(stored))
    data.setdefault("model", {})
    data["model"]["weights"] = None
    data["model"]["pretrained"] = None
    return config_from_dict(data, source=source, overrides=overrides)


def _data_spec(state: dict[str, Any], cfg: Config, file: Path) -> DataSpec:
    """The data spec the checkpoint's method stored in its state (buffers
    ``data_num_classes`` and ``data_cameras``).

    A checkpoint written before methods stored it is read with the spec of its
    dataset, when that is reachable (``data.root`` in the config or an override).
    """
    classes, cameras = state.get("data_num_classes"), state.get("data_cameras")
    if torch.is_tensor(classes) and torch.is_tensor(cameras):
        return DataSpec(cfg.data.name, int(classes), tuple(int(c) for c in cameras.tolist()),
                        cfg.data.is_video)
    from vireid.data.datasets import load_data

    try:
        data = load_data(cfg)
    except (ValueError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {file} was written by an older vireid and does not say which data "
            "its model was built for (identities, cameras); make its dataset reachable "
            f"(overrides=['data.root=...']) so that they are read from it: {err}"
        ) from None
    spec = DataSpec.of(data)
    state["data_num_classes"] = torch.tensor(spec.num_classes)
    state["data_cameras"] = torch.tensor(spec.cameras, dtype=torch.long)
    return spec


def load_model(
    run_dir_or_checkpoint: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    config: str | os.PathLike[str] | Config | None = None,
    overrides: Sequence[str] = (),
    batch_size: int | None = None,
) -> ReIDModel:
    """A trained model, ready to :meth:`~ReIDModel.extract` features.

    ``run_dir_or_checkpoint``: a checkpoint file or a run folder (its
    ``checkpoints/last.pt``). The config stored in the checkpoint is used, unless
    ``config`` (a YAML file or a :class:`Config`) is given; ``overrides`` are dotted
    ``key=value`` changes (e.g. ``eval.flip_test=true``, ``data.workers=0``).
    The model is rebuilt from the checkpoint alone (its data spec: identities,
    cameras, tracklets). ``device``: where the
    model runs ("cpu", "cuda", "cuda:1", "auto").
    """
    file = resolve_checkpoint(run_dir_or_checkpoint)
    checkpoint = load_checkpoint(file)
    state = checkpoint.get("method")
    if not isinstance(state, dict) or not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"{file} holds no method weights or no config")
    cfg = _inference_config(checkpoint["config"], f"checkpoint {file}", config, overrides)
    if checkpoint.get("method_name") not in (None, cfg.method.name):
        raise CheckpointError(
            f"{file} holds a {checkpoint.get('method_name')!r} model but the config names "
            f"method {cfg.method.name!r}"
        )
    from vireid.methods import build_method

    spec = _data_spec(state, cfg, file)
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the RNG alone
        method = build_method(cfg, spec)
    try:
        method.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {file} (method {checkpoint.get('method_name')!r}) does not fit the model "
            f"built from its config: {exc}"
        ) from None
    method.to(resolve_device(device)).eval()
    return ReIDModel(method, cfg, file, batch_size=batch_size or cfg.eval.batch_size)


# --------------------------------------------------------------------------- inputs


def _image_paths(folder: Path) -> list[str]:
    names, _ = list_images(str(folder))
    if not names:
        raise ValueError(f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return [str(folder / n) for n in names]


class _Materialiser:
    """Turns inputs into image files: paths are used in place, in-memory images are
    written once as lossless PNGs into a temporary folder."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.count = 0

    def _save(self, image: Any, where: str) -> str:
        if isinstance(image, Image.Image):
            pil = to_rgb(image)
        elif isinstance(image, torch.Tensor):
            pil = _tensor_to_pil(image, where)
        else:
            raise TypeError(
                f"{where}: expected an image path, a PIL image or a (C, H, W) tensor, "
                f"got {type(image).__name__}"
            )
        path = self.folder / f"{self.count:08d}.png"
        self.count += 1
        pil.save(path)
        return str(path)

    def frame(self, item: Any, where: str) -> str:
        if isinstance(item, (str, os.PathLike)):
            p = Path(item)
            if not p.is_file():
                raise FileNotFoundError(f"{where}: image not found: {p}")
            return str(p)
        return self._save(item, where)

    def item(self, item: Any, where: str) -> tuple[list[str], bool]:
        """(frame files, is a tracklet) of one input."""
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            return _image_paths(Path(item)), True
        if isinstance(item, torch.Tensor) and item.ndim == 4:
            return [self._save(f, f"{where}, frame {t}") for t, f in enumerate(item)], True
        if isinstance(item, (list, tuple)):
            if not item:
                raise ValueError(f"{where}: empty tracklet (no frames)")
            return [self.frame(f, f"{where}, frame {t}") for t, f in enumerate(item)], True
        return [self.frame(item, where)], False


def _tensor_to_pil(x: torch.Tensor, where: str) -> Image.Image:
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        hint = " (channels last? use x.permute(2, 0, 1))" if x.ndim == 3 and x.shape[-1] in (1, 3) else ""
        raise ValueError(f"{where}: expected a (C, H, W) image tensor with C = 1 or 3, "
                         f"got shape {tuple(x.shape)}{hint}")
    check_image_tensor(x, where)
    x = x.detach().cpu()
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise ValueError(f"{where}: image tensors must be uint8 or float, got {x.dtype}")
        if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise ValueError(
                f"{where}: float image tensors must hold pixel values in [0, 1] (got "
                f"{float(x.min()):.3g}..{float(x.max()):.3g}); give raw images, not normalised ones"
            )
        x = (x.float() * 255).round().clamp(0, 255).to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return Image.fromarray(x.permute(1, 2, 0).contiguous().numpy())


def _as_items(inputs: Any) -> list[Any]:
    if isinstance(inputs, (str, os.PathLike, Image.Image)):
        return [inputs]
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim == 3:
            return [inputs]
        if inputs.ndim in (4, 5):  # a batch of images / of tracklets
            return list(inputs)
        raise ValueError(f"expected an image (C,H,W), images (N,C,H,W) or tracklets "
                         f"(N,T,C,H,W), got a tensor of shape {tuple(inputs.shape)}")
    if isinstance(inputs, Sequence):
        items = list(inputs)
        if not items:
            raise ValueError("nothing to extract: the input list is empty")
        return items
    raise TypeError(f"cannot extract features from a {type(inputs).__name__}")


def _per_item(value: Any, n: int, what: str, parse) -> list:
    if value is None or isinstance(value, (str, int, Modality)):
        return [parse(value)] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} values given for {n} inputs")
    return [parse(v) for v in values]


# --------------------------------------------------------------------------- model


class ReIDModel:
    """A trained method in eval mode, with its test-time pipeline.

    ``method``: the :class:`~vireid.methods.base.Method`; ``config``: its resolved
    config; ``checkpoint``: the file it came from; ``is_video``: whether it embeds
    tracklets (clips) rather than single images.
    """

    def __init__(self, method, config: Config, checkpoint: Path, batch_size: int = 64):
        self.method = method
        self.config = config
        self.checkpoint = Path(checkpoint)
        self.num_classes = method.spec.num_classes
        self.batch_size = batch_size
        self.is_video = bool(config.data.is_video)
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return (f"ReIDModel({self.config.method.name}, {self.config.model.backbone}, "
                f"{'video' if self.is_video else 'image'}, checkpoint={str(self.checkpoint)!r}, "
                f"device={self.device})")

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config.data.image_size)  # type: ignore[return-value]

    @property
    def uses_cameras(self) -> bool:
        return bool(self.config.model.camera_embedding)

    @property
    def fingerprint(self) -> str:
        """sha256 of the checkpoint file and of the config entries that shape a feature."""
        if self._fingerprint is None:
            cfg = self.config.to_dict()
            parts = {}
            for path in _INFERENCE_KEYS:
                node: Any = cfg
                for key in path:
                    node = node.get(key) if isinstance(node, dict) else None
                parts[".".join(path)] = node
            digest = hashlib.sha256(sha256_file(self.checkpoint).encode())
            digest.update(json.dumps(parts, sort_keys=True).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def to(self, device: str | torch.device) -> ReIDModel:
        self.method.to(torch.device(device))
        return self

    def extract_samples(self, samples: Sequence[Sample], batch_size: int | None = None
                        ) -> torch.Tensor:
        """L2-normalised features (N, F), float32 on the CPU, of dataset samples.

        A video model embeds an image as a one-frame tracklet; an image model embeds
        each frame of a tracklet and averages them.
        """
        from vireid.evaluation.evaluator import extract_features

        samples = list(samples)
        if not samples:
            raise ValueError("nothing to extract: no samples")
        batch = batch_size or self.batch_size
        if self.is_video:
            clips = [s if s.is_tracklet else Sample((s.path,), s.pid, s.camera, s.modality, s.label)
                     for s in samples]
            feats = extract_features(self.method, clips, batch)
        elif any(s.is_tracklet for s in samples):
            frames, owner = [], []
            for k, s in enumerate(samples):
                for f in s.frames:
                    frames.append(Sample(f, s.pid, s.camera, s.modality, s.label))
                    owner.append(k)
            flat = extract_features(self.method, frames, batch)
            index = torch.tensor(owner)
            feats = torch.zeros(len(samples), flat.shape[1]).index_add_(0, index, flat)
            feats /= torch.bincount(index, minlength=len(samples))[:, None]
        else:
            feats = extract_features(self.method, samples, batch)
        return torch.nn.functional.normalize(feats.float(), dim=1)

    def extract(
        self,
        images_or_tracklets: Any,
        *,
        modality: str | int | Modality | Sequence[str | int | Modality],
        cameras: int | Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """L2-normalised features (N, F), float32 on the CPU, one row per input.

        Inputs: an image (file path, PIL image, ``(C, H, W)`` uint8 tensor or float
        tensor in [0, 1]), a tracklet (a list of frames, a folder of frames or a
        ``(T, C, H, W)`` tensor), or a list of them; ``(N, C, H, W)`` and
        ``(N, T, C, H, W)`` tensors are batches. The method's test transform
        (resize + normalisation) is applied. ``modality``: "visible"/"infrared"
        (or ``rgb``, ``ir``, ...) for all inputs or one per input; ``cameras``:
        dataset camera numbers (needed by models with a camera embedding).
        """
        if modality is None:
            raise ValueError("modality is required: 'visible' or 'infrared' (or one per input)")
        items = _as_items(images_or_tracklets)
        modalities = _per_item(modality, len(items), "modality", Modality.parse)
        if cameras is None and self.uses_cameras:
            raise ValueError("this model has a camera embedding: pass cameras=[...] "
                             "(the dataset's camera number of each input)")
        cams = _per_item(cameras, len(items), "cameras",
                         lambda c: 0 if c is None else int(c))
        with tempfile.TemporaryDirectory(prefix="vireid-extract-") as tmp:
            store = _Materialiser(tmp)
            samples = []
            for k, item in enumerate(items):
                frames, tracklet = store.item(item, f"input {k}")
                path: str | tuple[str, ...] = tuple(frames) if tracklet else frames[0]
                samples.append(Sample(path, -1, cams[k], modalities[k]))
            return self.extract_samples(samples, batch_size)
