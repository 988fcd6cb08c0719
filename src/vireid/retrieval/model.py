"""A trained model for inference: :func:`load_model` and :class:`ReIDModel`.

A checkpoint written by ``vireid train`` carries the resolved config and the
method's weights, so loading needs nothing else: no dataset, no CLIP weight file.
The method is built from its config with a :class:`~vireid.data.types.ReIDData`
that holds no images, only what a method reads at construction: the number of
identities (read off the shapes of the checkpoint's weights, see
:func:`_num_classes`), whether samples are tracklets (``data.name``) and the
camera numbers (only needed, and then read from the dataset or given, when the
model has a camera embedding).
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
from vireid.data.types import Modality, ReIDData, Sample
from vireid.engine.checkpoint import CheckpointError, load_checkpoint

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
    from vireid.config import apply_overrides

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
    apply_overrides(data, {}, list(overrides))
    return config_from_dict(data, source=source)


def _skeleton(cfg: Config, num_classes: int, cameras: Sequence[int]) -> ReIDData:
    """Data with no images: one placeholder sample per (camera, modality)."""
    path: str | tuple[str, ...] = ("",) if cfg.data.is_video else ""
    train = [Sample(path, -1, int(c), m, 0) for c in cameras for m in Modality]
    return ReIDData(name=cfg.data.name, root="", train=train, splits=[], num_classes=num_classes)


def _build(cfg: Config, num_classes: int, cameras: Sequence[int]):
    from vireid.methods import build_method

    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the RNG alone
        return build_method(cfg, _skeleton(cfg, num_classes, cameras))


def _num_classes(probe: torch.nn.Module, state: dict[str, torch.Tensor], file: Path) -> int:
    """Identities the checkpoint was trained on, from the weights whose shape scales with it.

    ``probe`` was built for one identity: a tensor of shape ``(1, D)`` there and
    ``(C, D)`` in the checkpoint (classifiers, prompts, text features) gives ``C``.
    """
    found: set[int] = set()
    for key, tensor in probe.state_dict().items():
        if key not in state or tuple(state[key].shape) == tuple(tensor.shape):
            continue
        mine, theirs = tuple(tensor.shape), tuple(state[key].shape)
        if len(mine) != len(theirs):
            raise CheckpointError(f"checkpoint {file}: {key} has shape {theirs}, expected {mine}")
        for a, b in zip(mine, theirs):
            if a != b:
                if a == 0 or b % a:
                    raise CheckpointError(
                        f"checkpoint {file}: {key} has shape {theirs}, which does not fit the "
                        f"config it carries ({mine} for one identity)"
                    )
                found.add(b // a)
    if len(found) > 1:
        raise CheckpointError(
            f"checkpoint {file}: cannot tell the number of identities (shapes suggest {sorted(found)})"
        )
    return found.pop() if found else 1


def _cameras(cfg: Config, camera_ids: Sequence[int] | None) -> list[int]:
    if not cfg.model.camera_embedding:
        return [0]
    if camera_ids is not None:
        return sorted({int(c) for c in camera_ids})
    from vireid.runner import load_data

    try:
        data = load_data(cfg)
    except (ValueError, OSError) as err:
        raise ValueError(
            "this model has a camera embedding, whose rows follow the camera numbers of its "
            f"dataset; pass camera_ids=[...] (all camera numbers of the dataset) or make the "
            f"dataset reachable (data.root=...): {err}"
        ) from None
    return sorted({s.camera for s in data.train}
                  | {s.camera for sp in data.splits for s in (*sp.query, *sp.gallery)})


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    run_dir_or_checkpoint: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    config: str | os.PathLike[str] | Config | None = None,
    overrides: Sequence[str] = (),
    camera_ids: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> ReIDModel:
    """A trained model, ready to :meth:`~ReIDModel.extract` features.

    ``run_dir_or_checkpoint``: a checkpoint file or a run folder (its
    ``checkpoints/last.pt``). The config stored in the checkpoint is used, unless
    ``config`` (a YAML file or a :class:`Config`) is given; ``overrides`` are dotted
    ``key=value`` changes (e.g. ``eval.flip_test=true``, ``data.workers=0``).
    ``camera_ids``: the dataset's camera numbers, needed only by models with a
    camera embedding when their dataset is not reachable. ``device``: where the
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
    cameras = _cameras(cfg, camera_ids)
    probe = _build(cfg, 1, cameras)
    num_classes = _num_classes(probe, state, file)
    method = probe if num_classes == 1 else _build(cfg, num_classes, cameras)
    del probe
    try:
        method.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {file} (method {checkpoint.get('method_name')!r}) does not fit the model "
            f"built from its config: {exc}"
        ) from None
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    method.to(torch.device(device)).eval()
    return ReIDModel(method, cfg, file, num_classes=num_classes,
                     batch_size=batch_size or cfg.eval.batch_size)


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
            pil = image.convert("RGB")
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

    def __init__(self, method, config: Config, checkpoint: Path, num_classes: int,
                 batch_size: int = 64):
        self.method = method
        self.config = config
        self.checkpoint = Path(checkpoint)
        self.num_classes = num_classes
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
            digest = hashlib.sha256(_sha256_file(self.checkpoint).encode())
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
