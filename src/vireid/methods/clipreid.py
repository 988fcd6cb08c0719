"""CLIP-ReID baseline (Li, Sun, Li, AAAI 2023) for images and video tracklets.

Two stages:

1. ``prompt``: image and text encoders frozen. Each identity owns ``n_ctx``
   learnable token embeddings in the template "A photo of a X X X X person.".
   Image features are computed once (test transform, no camera embedding, as the
   official stage-1 cache) and cached; the loss is the image->text plus text->image
   supervised contrastive loss over the batch (positives = same identity, raw dot
   products, temperature 1).
2. ``image``: the text features of all identities are computed once and frozen;
   the image encoder and the heads train with
   ``0.25 * ID-CE(label smoothing 0.1) on both BN-neck features``
   ``+ batch-hard triplet (margin 0.3) on both features``
   ``+ CE(projected feature . text features^T, label smoothing 0.1)`` (image->text;
   the official code uses the ID loss's smoothed cross-entropy, ``i2t_label_smoothing``).

Video: frames go through the image encoder independently and are averaged
over time. Inference feature: ``[BN(f) ; BN(f_proj)]`` (``neck_feat: after``),
or the same before the BN necks (``before``, CLIP-ReID's test default).

Camera embedding (SIE, ``model.camera_embedding``, off in our recipes as in the
official ViT recipe): added to the class token only (``camera_tokens: cls``, the
official code) or to every token (``all``).

Deviations and assumptions:

- Cross-modal batches: P identities x K visible + the same P identities x K
  infrared per batch (CLIP-ReID samples one modality-free pool); prompts are
  shared by both modalities.
- The triplet loss uses the final-layer class feature and the projected feature;
  CLIP-ReID's ViT code also adds one on the 11th layer's class token (not done).
- Image features for the prompt stage are cached on the device (N x d floats).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vireid.config import Config
from vireid.config.methods.clipreid import ClipReIDConfig
from vireid.data.loaders import ImageDataset, TrackletDataset
from vireid.data.samplers import ShuffledBatchSampler
from vireid.data.transforms import build_transforms, train_transforms_from_config
from vireid.data.types import DataSpec, Sample
from vireid.losses import batch_hard_triplet_loss, image_text_supcon
from vireid.methods import register_method
from vireid.methods.base import Method, ParamGroup, Stage
from vireid.models.heads import BNNeck, Classifier
from vireid.models.prompts import PromptLearner


@register_method
class ClipReID(Method):
    """CLIP-ReID on a CLIP image encoder (ViT or ResNet), images or tracklets."""

    Options = ClipReIDConfig

    def __init__(self, cfg: Config, spec: DataSpec, rank: int = 0, world_size: int = 1):
        super().__init__(cfg, spec, rank, world_size)
        self.options: ClipReIDConfig = cfg.method  # type: ignore[assignment]
        self.clip = self._build_clip(camera_tokens=self.options.camera_tokens)
        # Parts frozen by model.frozen never train, whatever the stage.
        self._frozen = {id(p) for p in self.clip.parameters() if not p.requires_grad}
        visual = self.clip.visual
        num_classes = spec.num_classes
        self.prompts = PromptLearner(self.clip, num_classes, template=self.options.template)
        self.neck = BNNeck(visual.width)
        self.neck_proj = BNNeck(visual.embed_dim)
        self.classifier = Classifier(visual.width, num_classes)
        self.classifier_proj = Classifier(visual.embed_dim, num_classes)
        self.register_buffer("text_features", torch.zeros(num_classes, visual.embed_dim))
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ encoding
    def encode(self, images: torch.Tensor, cameras: torch.Tensor | None = None):
        """(class feature (B, D), projected feature (B, d)); clips are averaged over time."""
        if images.ndim == 5:  # (B, T, C, H, W)
            b, t = images.shape[:2]
            if cameras is not None:
                cameras = cameras.repeat_interleave(t)
            out = self.clip.visual(images.flatten(0, 1), cameras)
            return out.cls.view(b, t, -1).mean(1), out.proj.view(b, t, -1).mean(1)
        out = self.clip.visual(images, cameras)
        return out.cls, out.proj

    # ------------------------------------------------------------------ data
    def _train_transform(self):
        d = self.cfg.data
        return train_transforms_from_config(d.augment, tuple(d.image_size), "clipreid",
                                            d.interpolation)

    def _test_transform(self):
        d = self.cfg.data
        return build_transforms(False, tuple(d.image_size), recipe="clipreid",
                                normalization=(tuple(d.augment.mean), tuple(d.augment.std)),
                                interpolation=d.interpolation)

    def _dataset(self, samples: Sequence[Sample], train: bool):
        d = self.cfg.data
        transform = self._train_transform() if train else self._test_transform()
        if self.is_video:
            frames = d.video.num_frames if train else d.video.frames_at_test
            sampling = d.video.train_sampling if train else d.video.test_sampling
            return TrackletDataset(samples, transform, seq_len=frames, frame_sampler=sampling,
                                   seed=self.cfg.seed if train else None,
                                   skip_bad=d.skip_bad_images)
        return ImageDataset(samples, transform, seed=self.cfg.seed if train else None,
                            skip_bad=d.skip_bad_images)

    def test_loader(self, samples: Sequence[Sample], batch_size: int) -> Iterable[dict[str, Any]]:
        return self._loader(self._dataset(samples, train=False), batch_size=batch_size)

    def compile_modules(self) -> list[nn.Module]:
        return [self.clip.visual]

    # ------------------------------------------------------------------ inference
    def _features_once(self, images, cameras):
        cls, proj = self.encode(images, cameras)
        if self.options.neck_feat == "after":
            cls, proj = self.neck(cls), self.neck_proj(proj)
        return torch.cat([cls, proj], dim=1)

    # ------------------------------------------------------------------ stage 1
    def stages(self) -> list[Stage]:
        return [self._prompt_stage(), self._image_stage()]

    @torch.no_grad()
    def cache_image_features(self) -> None:
        """Projected image feature of every training sample, once: test transform,
        eval mode, and no camera embedding (the official stage-1 cache calls the image
        encoder without it)."""
        self.eval()
        device = self._device()
        feats = [self.encode(batch["image"].to(device))[1].float()
                 for batch in self.test_loader(self.data.train, self.cfg.eval.batch_size)]
        labels = torch.tensor([s.label for s in self.data.train], device=device)
        self._cache = (torch.cat(feats), labels)

    def prompt_losses(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """``L_i2t + L_t2i``: supervised contrast of cached image features and the
        identities' prompt text features (raw dot products, temperature 1)."""
        assert self._cache is not None, "cache_image_features() runs when the stage starts"
        feats, labels = self._cache
        idx = torch.as_tensor(indices, device=feats.device)
        image, label = feats[idx], labels[idx]
        text = self.prompts.text_features(self.clip.text, label)
        return image_text_supcon(image, text, label)

    def _prompt_stage(self) -> Stage:
        stage_cfg = self.cfg.train.stages.get("prompt")
        batch_size = (stage_cfg.batch_size if stage_cfg and stage_cfg.batch_size else 64)
        sampler = ShuffledBatchSampler(
            len(self.data.train), batch_size, seed=self.cfg.seed,
            rank=self.rank, world_size=self.world_size,
        )
        return Stage(
            name="prompt",
            param_groups=lambda: [ParamGroup("prompts", list(self.prompts.parameters()))],
            loader=sampler,
            sampler=sampler,
            step=self.prompt_losses,
            setup=self.cache_image_features,
            train_modules=lambda: [self.prompts],
        )

    # ------------------------------------------------------------------ stage 2
    @torch.no_grad()
    def cache_text_features(self) -> None:
        """Text features of every identity, once; frozen for the stage."""
        self.eval()
        self.text_features.copy_(self.prompts.text_features(self.clip.text).float())

    def image_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``w_id (L_id(BN f) + L_id(BN f_proj)) + w_tri (L_tri(f) + L_tri(f_proj))
        + w_i2t L_i2tce(f_proj T^T)``; both cross-entropies label-smoothed."""
        o = self.options
        labels = batch["label"]
        cls, proj = self.encode(batch["image"], self._cameras(batch))
        id_loss = (
            F.cross_entropy(self.classifier(self.neck(cls)), labels,
                            label_smoothing=o.label_smoothing)
            + F.cross_entropy(self.classifier_proj(self.neck_proj(proj)), labels,
                              label_smoothing=o.label_smoothing)
        )
        triplet = (batch_hard_triplet_loss(cls, labels, o.triplet_margin)
                   + batch_hard_triplet_loss(proj, labels, o.triplet_margin))
        i2t = F.cross_entropy(proj.float() @ self.text_features.T, labels,
                              label_smoothing=o.i2t_label_smoothing)
        loss = o.id_loss_weight * id_loss + o.triplet_weight * triplet + o.i2t_weight * i2t
        return {"loss": loss, "id": id_loss.detach(), "triplet": triplet.detach(),
                "i2t": i2t.detach()}

    def _image_stage(self) -> Stage:
        sampler = self.cross_modal_sampler("image")
        dataset = self._dataset(self.data.train, train=True)
        loader = self._loader(dataset, batch_sampler=sampler)
        heads = [self.neck, self.neck_proj, self.classifier, self.classifier_proj]
        return Stage(
            name="image",
            param_groups=lambda: [
                ParamGroup("visual", [p for p in self.clip.visual.parameters()
                                      if id(p) not in self._frozen]),
                ParamGroup("heads", [p for h in heads for p in h.parameters()]),
            ],
            loader=loader,
            sampler=sampler,
            step=self.image_losses,
            setup=self.cache_text_features,
            train_modules=lambda: [self.clip.visual, *heads],
        )
