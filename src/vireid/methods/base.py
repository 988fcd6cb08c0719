"""The contract between a method and the training engine.

A method is an ``nn.Module`` that owns its model and declares its training
stages. The engine knows nothing method-specific: for each :class:`Stage` it
freezes every parameter but the stage's, builds the optimiser and scheduler
from ``cfg.train.stages[stage.name]``, and calls ``stage.step(batch)`` on the
batches of ``stage.loader``; the method computes its losses there. At test
time the evaluator calls :meth:`Method.extract` on batches built by
:meth:`Method.test_loader`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from vireid.config import Config
from vireid.data.loaders import TrackletDataset, collate_samples, seed_worker
from vireid.data.samplers import CrossModalIdentitySampler
from vireid.data.transforms import build_transforms, train_transforms_from_config
from vireid.data.types import DataSpec, ReIDData, Sample
from vireid.models.factory import build_clip


class ResumableSampler(Protocol):
    """What the engine needs from a stage's sampler to resume mid-epoch."""

    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self, batches_consumed: int | None = None) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class ParamGroup:
    """Parameters that share an optimiser setting.

    ``name`` selects a learning-rate multiplier in the stage config
    (``lr_multipliers: {name: factor}``); unnamed multipliers default to 1.
    """

    name: str
    params: list[nn.Parameter]
    weight_decay: float | None = None  # None: the stage's weight_decay


@dataclass
class Stage:
    """One training stage.

    ``param_groups`` are the only parameters that train in this stage (the
    engine sets ``requires_grad`` accordingly). ``loader`` yields batches
    (dicts of tensors and lists); ``sampler``, when given, is put to the epoch
    and saved in checkpoints. ``step`` returns a dict with a scalar ``loss``
    to minimise and any other scalars to log. ``setup`` runs once when the
    stage starts (and again on resume), e.g. to cache frozen features;
    ``on_epoch_start(epoch)`` before every epoch.
    """

    name: str
    param_groups: Callable[[], Sequence[ParamGroup]]
    loader: Iterable[dict[str, Any]]
    step: Callable[[dict[str, Any]], dict[str, torch.Tensor]]
    sampler: ResumableSampler | None = None
    setup: Callable[[], None] | None = None
    on_epoch_start: Callable[[int], None] | None = None
    train_modules: Callable[[], Iterable[nn.Module]] | None = None
    """Modules put in train mode during the stage (default: the whole method)."""


class Method(nn.Module):
    """Base class of every method (one file per method under ``vireid.methods``).

    ``__init__`` keeps ``cfg`` (the resolved Config), ``spec`` (the
    :class:`~vireid.data.types.DataSpec`: number of identities, cameras, tracklets or
    not; its numbers are buffers of the state dict, ``data_num_classes`` and
    ``data_cameras``, the sorted camera numbers that index the camera-embedding rows),
    ``rank`` and ``world_size`` and whether the data are tracklets (``is_video``). The
    training data (``data``) are attached by
    :func:`~vireid.methods.build_method` for training only. Subclasses that embed
    cameras keep their CLIP model in ``self.clip``; a subclass is registered with
    ``@register_method`` and names its schema in ``Options``.
    """

    name: str = "method"
    """Set by ``@register_method`` from the schema's ``name``."""
    fixed_frames_export: bool = False
    """Video methods whose graph depends on the clip length T (e.g. LSMRL's frame
    groups) set this: their ONNX export takes clips of the test T only."""

    def __init__(self, cfg: Config, spec: DataSpec, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.cfg, self.spec, self.rank, self.world_size = cfg, spec, rank, world_size
        self._data: ReIDData | None = None
        self.is_video = spec.is_video
        # the spec in the state dict, so that every checkpoint can rebuild the model
        self.register_buffer("data_num_classes", torch.tensor(spec.num_classes))
        self.register_buffer("data_cameras", torch.tensor(spec.cameras, dtype=torch.long))

    def attach_data(self, data: ReIDData) -> None:
        """The training data of :meth:`stages` (a method built from a spec alone has none)."""
        spec = DataSpec.of(data)
        if spec != self.spec:
            raise ValueError(f"dataset {data.name!r} does not match the method's data spec "
                             f"({spec} vs {self.spec})")
        self._data = data

    @property
    def data(self) -> ReIDData:
        """The training data; an error for a model built for inference only."""
        if self._data is None:
            raise RuntimeError(f"{type(self).__name__} was built from a data spec alone (for "
                               "inference); build it with build_method(cfg, data) to train")
        return self._data

    def _build_clip(self, **options: Any):
        """The CLIP model of ``cfg.model`` at ``data.image_size`` (one camera-embedding
        row per camera of the spec when ``model.camera_embedding``)."""
        m = self.cfg.model
        return build_clip(
            m.backbone, tuple(self.cfg.data.image_size), weights=m.weights,
            pretrained=m.pretrained, last_stride=m.last_stride, patch_stride=m.patch_stride,
            num_cameras=len(self.spec.cameras) if m.camera_embedding else 0,
            camera_scale=m.camera_embedding_scale, frozen=m.frozen, **options,
        )

    def _require(self, video: bool | None = None, vit: bool = False) -> None:
        """Config errors for data or backbones the method cannot use."""
        label = type(self).__name__
        if video is True and not self.is_video:
            raise self.cfg.error("data.name", f"{label} is a video method; dataset "
                                              f"{self.spec.name!r} has no tracklets (use vcm or bupt)")
        if video is False and self.is_video:
            raise self.cfg.error("data.name", f"{label} is an image method; "
                                              f"{self.spec.name!r} holds tracklets")
        if vit and self.clip.visual.kind != "vit":
            raise self.cfg.error("model.backbone", f"{label} needs a ViT backbone (token-level "
                                                   f"interaction), got {self.cfg.model.backbone!r}")

    def _cameras(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Camera-embedding rows of a batch's dataset camera numbers (None when the model
        has no camera embedding); a camera unseen when the method was built gets row 0.
        Tensor operations only, so that an exported graph maps camera numbers itself."""
        if self.clip.visual.num_cameras == 0:
            return None
        camera = batch["camera"].to(self.data_cameras.device).long()
        match = camera[:, None] == self.data_cameras[None, :]  # (B, cameras): one True or none
        rows = torch.arange(len(self.data_cameras), device=camera.device)
        return (match.long() * rows).sum(1)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _loader(self, dataset, **kwargs) -> DataLoader:
        """A DataLoader over ``dataset`` with the config's workers and the project's collate."""
        d = self.cfg.data
        return DataLoader(
            dataset, collate_fn=collate_samples, num_workers=d.workers,
            worker_init_fn=seed_worker, persistent_workers=False,
            pin_memory=d.pin_memory and torch.cuda.is_available(), **kwargs,
        )

    def _video_test_transform(self):
        d = self.cfg.data
        return build_transforms(False, tuple(d.image_size), recipe="clipreid",
                                normalization=(tuple(d.augment.mean), tuple(d.augment.std)),
                                interpolation=d.interpolation)

    def _tracklet_test_loader(self, samples: Sequence[Sample], batch_size: int) -> DataLoader:
        """Test clips of tracklets (``data.video`` test T and sampling), no augmentation."""
        v = self.cfg.data.video
        dataset = TrackletDataset(samples, self._video_test_transform(),
                                  seq_len=v.frames_at_test, frame_sampler=v.test_sampling,
                                  skip_bad=self.cfg.data.skip_bad_images)
        return self._loader(dataset, batch_size=batch_size)

    def _tracklet_train_dataset(self) -> TrackletDataset:
        """Training clips: ``data.video`` T and sampling, the video augmentation recipe."""
        d = self.cfg.data
        return TrackletDataset(
            self.data.train,
            train_transforms_from_config(d.augment, tuple(d.image_size), "clipreid", d.interpolation),
            seq_len=d.video.num_frames, frame_sampler=d.video.train_sampling, seed=self.cfg.seed,
            skip_bad=d.skip_bad_images,
        )

    def cross_modal_sampler(self, stage: str, **options: Any) -> CrossModalIdentitySampler:
        """P identities x K samples per modality for ``stage`` (the stage's own P/K, else
        ``data.*``); an impossible composition is an error naming the config key.
        ``options`` go to :class:`CrossModalIdentitySampler` (e.g. ``always_replace``)."""
        d = self.cfg.data
        stage_cfg = self.cfg.train.stages.get(stage)
        per_stage = stage_cfg is not None and stage_cfg.identities_per_batch is not None
        P = stage_cfg.identities_per_batch if per_stage else d.identities_per_batch
        K = (stage_cfg.instances_per_identity if stage_cfg and stage_cfg.instances_per_identity
             else d.instances_per_identity)
        try:
            return CrossModalIdentitySampler.from_samples(
                self.data.train, P, K, seed=self.cfg.seed, rank=self.rank,
                world_size=self.world_size, **options,
            )
        except ValueError as err:
            key = (f"train.stages.{stage}.identities_per_batch" if per_stage
                   else "data.identities_per_batch")
            raise self.cfg.error(key, f"impossible batch composition: {err}") from None

    def stages(self) -> list[Stage]:
        """The training stages, in the order they run."""
        raise NotImplementedError

    def compile_modules(self) -> list[nn.Module]:
        """Modules ``torch.compile`` may compile in place when ``train.compile`` is on
        (default: none, and the engine compiles ``stage.step`` instead)."""
        return []

    def extract(self, batch: dict[str, Any]) -> torch.Tensor:
        """Inference features (B, F) of a batch built by :meth:`test_loader`.

        The default serves methods whose features depend on the images and the
        cameras only (:meth:`_features_once`): ``eval.flip_test`` adds the
        horizontally flipped input (``eval.flip_fusion``: concatenated or
        averaged), and dense clips (``clip_owner`` in the batch: (n_clips, T, C, H,
        W)) are averaged per tracklet.
        """
        images = batch["image"]
        cameras = self._cameras(batch)
        if "clip_owner" not in batch:
            return self._with_flip(images, cameras)
        owner = batch["clip_owner"]
        if cameras is not None:
            cameras = cameras[owner]
        feats = self._with_flip(images, cameras).float()
        out = torch.zeros(len(batch["label"]), feats.shape[1], device=feats.device)
        out.index_add_(0, owner, feats)
        return out / torch.bincount(owner, minlength=len(out)).clamp_min(1)[:, None]

    def _with_flip(self, images: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        feats = self._features_once(images, context)
        if not self.cfg.eval.flip_test:
            return feats
        flipped = self._features_once(images.flip(-1), context)
        if self.cfg.eval.flip_fusion == "concat":
            return torch.cat([feats, flipped], dim=1)
        return (feats + flipped) / 2

    def _features_once(self, images: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Features (B, F) of images or clips, without flipping (see :meth:`extract`);
        ``context``: the camera rows (:meth:`_cameras`), or what a method's own
        ``extract`` passes to :meth:`_with_flip`."""
        raise NotImplementedError

    def test_loader(self, samples: Sequence[Sample], batch_size: int) -> Iterable[dict[str, Any]]:
        """Batches of test samples, in order, each with the keys :meth:`extract` reads."""
        raise NotImplementedError
