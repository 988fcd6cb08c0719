"""VLD (Li, Leng, Kuang, Tan, Gao, "Video-Level Language-Driven Video-Based
Visible-Infrared Person Re-Identification", IEEE TIFS 2025; arXiv 2506.02439), as its
official code (github Visuang/VLD) computes it. docs/methods.md#vld-code-paper-and-our-defaults lists
every place where our default differs from the code or the paper, with its switch.

* **IMLP** (invariant-modality language prompts): one set of 4 learned tokens per
  identity, shared by both modalities, in "A X X X X person observed in both day and
  night conditions."; the CLIP text encoder is frozen (and in no optimiser group) but
  the prompts train through it, jointly with the whole image encoder, from the first
  step. The text features of every identity are recomputed, with gradient, at every
  step.
* **STP** (spatial-temporal prompting). STH: before block ``sth_start_block`` (9 of
  12) frame t of a clip gets T learned prompt tokens P[t, 0..T-1] (no positional
  embedding); before every later block the frame x slot matrix of the clip's prompt
  tokens is transposed, so slot s of frame t moves to frame s. STA: the T class tokens
  of the clip's final-block output (before ``ln_post``) query all T*T prompt tokens
  (multi-head attention, no residual), then the shared ``ln_post``.
* **Features** (frame means): ``last`` = class token entering the last block, ``cls``
  = final class token after ``ln_post`` (768), ``proj`` = ``cls @ proj`` (512), ``sta``
  = the STA output (768).
* **Losses**: CE of BN+linear heads on ``cls`` and ``proj`` (x1, no smoothing),
  0.08 * CE(``proj . text^T``) over all identities (raw dot products), 0.4 * CE of a
  head on ``sta``, and WRT on ``last``, ``cls``, ``proj`` and ``sta`` (x1 each).
* **Test feature**: ``[cls ; sta]`` (1536-d), before any BN.
* **Recipe** (configs/_base_/vld_vitb16.yaml): 288x144, T = 6, AdamW 2.5e-5, weight
  decay 1e-4, x25 for the prompts, the classifiers and every bias (group
  ``prompt_classifier_bias``), 24 epochs of 200 iterations, 3 warm-up epochs, cosine,
  AMP (fp16); per-frame augmentation with CAJ channel erasing, a channel-exchanged
  view for half of the visible clips and adaptive gray on infrared frames.

Not reproduced (dead in the code): the ``classifier_proj_STP`` head and the STA
image->text logits (computed, in no loss), an unused ``logit_scale`` and ``ln_post2``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vireid.config import Config
from vireid.config.methods.vld import VLDConfig
from vireid.data.loaders import TrackletDataset
from vireid.data.samplers import CrossModalIdentitySampler
from vireid.data.transforms import Transform, build_transforms
from vireid.data.types import DataSpec, Modality, Sample
from vireid.losses import weighted_regularized_triplet_loss
from vireid.methods import register_method
from vireid.methods.base import Method, ParamGroup, Stage
from vireid.models.heads import Classifier
from vireid.models.prompts import PromptLearner
from vireid.models.temporal import default_heads


@dataclass
class ClipFeatures:
    """Per-clip features (frame means): ``last`` (B, D) class token entering the last
    block; ``cls`` (B, D) after ``ln_post``; ``proj`` (B, d); ``sta`` (B, D) or None."""

    last: torch.Tensor
    cls: torch.Tensor
    proj: torch.Tensor
    sta: torch.Tensor | None


class BNClassifier(nn.Module):
    """VLD's ``Classifier``: BatchNorm1d (weight 1, bias 0, both trained) then a linear
    layer without bias (normal, std 0.001)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.fc = Classifier(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x))


def transpose_prompts(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """STH exchange: tokens (B*T, L, D) whose last T are prompt slots -> the same with
    the prompt tokens of each clip transposed (slot s of frame t moves to slot t of
    frame s)."""
    T = num_frames
    BT, L, D = x.shape
    x = x.view(BT // T, T, L, D)
    prompts = x[:, :, L - T:].transpose(1, 2)
    return torch.cat([x[:, :, :L - T], prompts], dim=2).view(BT, L, D)


class _OneOf(Transform):
    """``second`` with probability ``p``, else ``first``, drawn once per clip."""

    def __init__(self, first: Transform, second: Transform, p: float) -> None:
        self.first, self.second, self.p = first, second, p

    def __call__(self, x: Any, rng: random.Random | None = None) -> torch.Tensor:
        r = random if rng is None else rng
        return (self.second if r.random() < self.p else self.first)(x, rng)


@register_method
class VLD(Method):
    """VLD on a CLIP ViT, for tracklets (HITSZ-VCM, BUPTCampus)."""

    Options = VLDConfig
    fixed_frames_export = True  # the T x T prompt tokens fix the clip length

    def __init__(self, cfg: Config, spec: DataSpec, rank: int = 0, world_size: int = 1):
        super().__init__(cfg, spec, rank, world_size)
        o = cfg.method
        self.options = o
        self._require(video=True)
        self.clip = self._build_clip()
        self._require(vit=True)
        visual = self.clip.visual
        D, d, C = visual.width, visual.embed_dim, spec.num_classes
        T = cfg.data.video.num_frames
        self.num_frames = T
        if self._uses_stp():
            if cfg.data.video.frames_at_test != T:
                raise cfg.error("data.video.test_num_frames", f"VLD's {T} x {T} prompt tokens "
                                "need the training T at test time too")
            if o.sth_start_block > len(visual.blocks) - 2:
                raise cfg.error("method.sth_start_block", f"must be <= {len(visual.blocks) - 2} "
                                f"(the {len(visual.blocks)} blocks' last-but-one)")
            heads = o.sta_heads or default_heads(D)
            if D % heads:
                raise cfg.error("method.sta_heads", f"{heads} heads do not divide the width {D}")
            self.prompt_tokens = nn.Parameter(torch.randn(T, T, D) * o.prompt_init_std)
            self.sta = nn.MultiheadAttention(D, heads, batch_first=True)
            self.classifier_sta = BNClassifier(D, C)
        # Frozen by model.frozen; the text encoder and CLIP's logit scale are in no group.
        self._frozen = {id(p) for p in self.clip.parameters() if not p.requires_grad}
        self._frozen |= {id(p) for p in self.clip.text.parameters()} | {id(self.clip.logit_scale)}
        self.prompts = PromptLearner(self.clip, C, template=o.template)
        self.classifier = BNClassifier(D, C)
        self.classifier_proj = BNClassifier(d, C)

    def _uses_stp(self) -> bool:
        return bool(self.options.stp)

    # ------------------------------------------------------------------ text
    def text_features(self, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Text features (B, d) of ``labels`` (all identities when None)."""
        return self.prompts.text_features(self.clip.text, labels)

    # ------------------------------------------------------------------ encoding
    def _trunk(self, x: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded tokens (B*T, L, D) -> (input of the last block, its output), with
        STH when on (then both carry the T prompt slots at the end)."""
        blocks = self.clip.visual.blocks
        start = self.options.sth_start_block if self._uses_stp() else None
        for i, block in enumerate(blocks[:-1]):
            if start is not None and i == start:
                prompts = self.prompt_tokens.to(x.dtype)
                prompts = prompts.expand(x.shape[0] // num_frames, -1, -1, -1).flatten(0, 1)
                x = torch.cat([x, prompts], dim=1)
            elif start is not None and i > start:
                x = transpose_prompts(x, num_frames)
            x = block(x)
        if start is not None:
            x = transpose_prompts(x, num_frames)
        return x, blocks[-1](x)

    def _aggregate(self, out: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """STA: each frame's final class token (before ``ln_post``) attends to all T*T
        prompt tokens of its clip; ``ln_post``; frame mean (B, D)."""
        D = out.shape[-1]
        tokens = out.view(B, T, -1, D)
        query = tokens[:, :, 0]
        context = tokens[:, :, -T:].reshape(B, T * T, D)
        attended, _ = self.sta(query, context, context, need_weights=False)
        return self.clip.visual.ln_post(attended).mean(1)

    def _frame_features(self, cls: torch.Tensor, text: torch.Tensor | None,
                        partner: torch.Tensor | None) -> torch.Tensor:
        """Final class tokens (B, T, D) -> frame features (B, T, D): ``ln_post``."""
        return self.clip.visual.ln_post(cls)

    def encode(self, clips: torch.Tensor, cameras: torch.Tensor | None = None,
               text: torch.Tensor | None = None,
               partner: torch.Tensor | None = None) -> ClipFeatures:
        """Clips (B, T, C, H, W) -> :class:`ClipFeatures` (``text`` and ``partner``
        are for subclasses that use them, e.g. LSMRL)."""
        if clips.dim() != 5:
            raise ValueError(f"expected clips (B, T, C, H, W), got shape {tuple(clips.shape)}")
        B, T = clips.shape[:2]
        if self._uses_stp() and T != self.num_frames:
            raise ValueError(f"VLD's prompt tokens take clips of {self.num_frames} frames, got {T}")
        visual = self.clip.visual
        if cameras is not None:
            cameras = cameras.repeat_interleave(T)
        last, out = self._trunk(visual.embed(clips.flatten(0, 1), cameras), T)
        frames = self._frame_features(out[:, 0].view(B, T, -1), text, partner)
        cls = frames.mean(1)
        sta = self._aggregate(out, B, T) if self._uses_stp() else None
        return ClipFeatures(last=last[:, 0].view(B, T, -1).mean(1), cls=cls,
                            proj=cls @ visual.proj, sta=sta)

    # ------------------------------------------------------------------ losses
    def _wrt(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return weighted_regularized_triplet_loss(features, labels,
                                                 normalizer=self.options.wrt_normalizer)

    def vld_losses(self, f: ClipFeatures, labels: torch.Tensor,
                   text: torch.Tensor) -> dict[str, torch.Tensor]:
        """VLD's loss terms (undetached) and their weighted sum ``loss``."""
        o = self.options
        ce = dict(label_smoothing=o.label_smoothing)
        terms = {
            "id": (F.cross_entropy(self.classifier(f.cls), labels, **ce)
                   + F.cross_entropy(self.classifier_proj(f.proj), labels, **ce)),
            "i2t": F.cross_entropy(f.proj.float() @ text.float().T, labels),
            "triplet": self._wrt(f.last, labels) + self._wrt(f.cls, labels)
                       + self._wrt(f.proj, labels),
        }
        loss = (o.id_weight * terms["id"] + o.i2t_weight * terms["i2t"]
                + o.triplet_weight * terms["triplet"])
        if f.sta is not None:
            terms["sta_id"] = F.cross_entropy(self.classifier_sta(f.sta), labels, **ce)
            terms["sta_triplet"] = self._wrt(f.sta, labels)
            loss = loss + o.sta_id_weight * terms["sta_id"] + o.sta_triplet_weight * terms[
                "sta_triplet"]
        return {"loss": loss, **terms}

    def training_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every loss term of one batch; ``loss`` is their weighted sum."""
        clips, labels = batch["image"], batch["label"]
        text = self.text_features()  # every identity, with gradient, every step
        out = self.vld_losses(self.encode(clips, self._cameras(batch)), labels, text)
        return {k: (v if k == "loss" else v.detach()) for k, v in out.items()}

    # ------------------------------------------------------------------ inference
    def test_feature(self, f: ClipFeatures) -> torch.Tensor:
        """``[cls ; sta]`` (``cls`` alone without STP), before any BN."""
        return f.cls if f.sta is None else torch.cat([f.cls, f.sta], dim=1)

    def _features_once(self, clips: torch.Tensor, cameras: torch.Tensor | None) -> torch.Tensor:
        return self.test_feature(self.encode(clips, cameras))

    def compile_modules(self) -> list[nn.Module]:
        return list(self.clip.visual.blocks)

    # ------------------------------------------------------------------ data
    def _transform_options(self) -> dict[str, Any]:
        a = self.cfg.data.augment
        return dict(normalization=(tuple(a.mean), tuple(a.std)),
                    interpolation=self.options.interpolation)

    def test_loader(self, samples: Sequence[Sample], batch_size: int) -> Iterable[dict[str, Any]]:
        v = self.cfg.data.video
        transform = build_transforms(False, tuple(self.cfg.data.image_size), recipe="clipreid",
                                     **self._transform_options())
        dataset = TrackletDataset(samples, transform, seq_len=v.frames_at_test,
                                  frame_sampler=v.test_sampling,
                                  skip_bad=self.cfg.data.skip_bad_images)
        return self._loader(dataset, batch_size=batch_size)

    def train_transforms(self) -> dict[Modality, Transform]:
        """VLD's training pipelines: resize, pad + crop, flip, normalise, erasing (CAJ's
        with ``data.augment.channel_erasing``), per frame; visible clips get the
        channel-exchanged pipeline with ``channel_exchange_prob``, infrared frames
        adaptive gray (``data.augment.adaptive_gray_prob``)."""
        a, o = self.cfg.data.augment, self.options
        if a.channel_exchange:
            raise self.cfg.error("data.augment.channel_exchange", "VLD uses one visible view; "
                                 "set method.channel_exchange_prob instead")
        common = dict(self._transform_options(), padding=a.pad, flip_p=a.flip_prob,
                      erase_p=a.random_erasing_prob, per_frame=o.per_frame_augment,
                      erasing="caj" if a.channel_erasing else "timm")
        size = tuple(self.cfg.data.image_size)
        visible = build_transforms(True, size, recipe="clipreid", **common)
        if o.channel_exchange_prob > 0:
            exchanged = build_transforms(True, size, recipe="clipreid", channel="exchange", **common)
            visible = _OneOf(visible, exchanged, o.channel_exchange_prob)
        infrared = (build_transforms(True, size, recipe="clipreid", channel="adaptive_gray",
                                     adaptive_gray_p=a.adaptive_gray_prob, **common)
                    if a.adaptive_gray_prob > 0 else build_transforms(True, size, recipe="clipreid",
                                                                       **common))
        return {Modality.VISIBLE: visible, Modality.INFRARED: infrared}

    def _sampler(self) -> CrossModalIdentitySampler:
        d = self.cfg.data
        try:
            return CrossModalIdentitySampler.from_samples(
                self.data.train, d.identities_per_batch, d.instances_per_identity,
                seed=self.cfg.seed, rank=self.rank, world_size=self.world_size,
                num_batches=self.options.iterations_per_epoch,
            )
        except ValueError as err:
            raise self.cfg.error("data.identities_per_batch",
                                 f"impossible batch composition: {err}") from None

    # ------------------------------------------------------------------ training
    def _is_boosted(self, name: str) -> bool:
        """VLD's x25 rule by parameter name: biases, classifiers, prompt learner."""
        return "bias" in name or name.startswith("classifier") or name.startswith("prompts.")

    def _groups(self) -> list[ParamGroup]:
        base, boosted = [], []
        for name, p in self.named_parameters():
            if id(p) not in self._frozen:
                (boosted if self._is_boosted(name) else base).append(p)
        return [ParamGroup("base", base), ParamGroup("prompt_classifier_bias", boosted)]

    def stages(self) -> list[Stage]:
        d = self.cfg.data
        dataset = TrackletDataset(self.data.train, self.train_transforms(),
                                  seq_len=d.video.num_frames, frame_sampler=d.video.train_sampling,
                                  seed=self.cfg.seed, skip_bad=d.skip_bad_images)
        sampler = self._sampler()
        return [Stage(name="main", param_groups=self._groups,
                      loader=self._loader(dataset, batch_sampler=sampler), sampler=sampler,
                      step=self.training_losses)]
