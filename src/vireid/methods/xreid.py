"""X-ReID (Yu, Liu, Zhang, Lu, AAAI 2026; arXiv 2511.17964) for video VI-ReID.

The whole method of the paper (docs/methods.md#x-reid-xreid), on a CLIP ViT image encoder:

* **Backbone.** Every frame passes the ViT on its own, with a per-camera
  embedding (SIE, coefficient ``model.camera_embedding_scale``) and a frozen
  patch embedding (``model.frozen: [patch_embed]``). Per frame: class token
  ``z_t`` (D), projected class token ``v_t`` (d), final-layer tokens.
  Sequence feature ``b = [BN(mean_t z_t) ; BN(mean_t v_t)]``.
* **CPC.** Visible and infrared prototypes per identity
  (:class:`~vireid.losses.prototype.CrossModalPrototypes`, buffers), built from a
  no-grad pass over the training set (test-time frames, no augmentation) when the
  stage starts and, by default, at the start of every epoch; after each step the
  cross-modal hard sample of each identity moves its prototype (momentum ``mu``).
  CPCL: cross-entropy of ``cos(b, prototypes) / tau`` against both memories.
* **MII** on the final-layer tokens (:mod:`vireid.models.temporal`): SII (temporal
  channel shift, stride 1, then two cross-attention blocks, query = the frame's
  class token), LII (the class token of frame t-2 attends to the patches of frame
  t; the code's disabled LII uses frame t+1: ``lii_stride`` = T-1), ``O = mean_t (O_SII_t + O_LII_t)``; CII (training only): the pooled SII and
  LII outputs of a clip, each prepended as one token to the patches of the same
  identity's clip in the other modality, one self-attention block, first token
  averaged over frames; CMCL pulls each pooled output towards its cross-modal
  counterpart.
* **Loss** = ``cpcl_weight * CPCL + triplet_weight * triplet + id_weight * ID
  + cmcl_weight * CMCL`` (+ frame-level ID terms). ID: cross-entropy of a
  classifier on ``b`` and of one on ``BN(O)``; triplet (batch hard, margin 0.3):
  on ``mean_t z_t``, ``mean_t v_t`` and ``O``; frame-level ID: a classifier of
  its own on every frame's ``[BN(z_t); BN(v_t)]`` and the ``O`` classifier on
  ``BN(O_SII_t + O_LII_t)`` (frame BN-necks of their own), as the X-ReID code.
* **Inference** feature: ``[b ; BN(O)]`` (CII unused); dense clips are averaged.

Ablation switches (``method.*``): ``sii``, ``lii``, ``cii`` (each on/off; CII needs
SII or LII), ``cpc`` (off: no memories and no CPCL, the plain ID loss remains).

Deviations and assumptions (each a switch where it matters):

- ``detach_mii_input`` (default true): MII/CII read the backbone tokens without
  gradient, as the X-ReID code does (``image_features.clone().detach()``); the
  paper does not say.
- CPC hard sample from the other modality (``memory_update_source: other``,
  paper Eq. 2); the code draws from both modalities (``both``). ``mu`` 0.2
  (paper; the code uses 0.1). ``tau`` 0.05 (code; absent from the paper).
- The memory pass uses eval mode (BN running statistics; ``memory_bn_mode: train``
  = the code's first epoch), the camera embedding (``memory_camera_embedding``; the
  code has none), test-time frame sampling (``memory_sampling``; the code: ``rrs``;
  ``dense`` is replaced by ``first_of_chunk``) and ``train.amp``; under DDP each rank embeds a share of the training set and the
  sums are all-reduced. Identities missing in a modality get a zero prototype.
- Loss weights all 1 (paper); the code weighs ID by 0.25 and divides frame-level
  ID terms by T (``frame_id_weight: null`` = 1/T, as the code).
- LII: ``lii_blocks`` = 1 (the code's temporal block has one); frames t < S
  take the class token of frame (t - S) mod T (``lii_edge: cyclic``, the code's
  rotation) or their own (``self``).
- Cross-attention blocks normalise keys and values (the code normalises keys only);
  new blocks use GELU and truncated-normal (0.02) weights.
- CII: one block per branch (SII, LII); the partner of a clip is the same
  identity's clip at the same rank in the other modality (with the cross-modal
  sampler: positions i and P*K + i). CMCL: per-channel mean of the squared
  difference, averaged over clips (``cmcl_reduction: sum`` sums over channels).
- The sequence BN-neck is applied after temporal averaging (the code); in eval
  mode this equals averaging per-frame BN features.
- Camera embedding added to every token (``camera_tokens: all``, the paper); the
  code adds it to the class token only (``cls``).
- Learning rates: parameter groups ``visual``, ``necks``, ``classifiers``, ``mii``
  (SII/LII/CII blocks), ``mii_necks`` and ``mii_classifier``; the paper recipe puts
  the new modules (classifiers and MII) at x10, biases x2. The code: classifiers
  x10, every MII parameter x10, so its BN x10 and its classifier x100.
- SII shift: out of place (the paper). The code's shift is an overlapping in-place
  copy: on CPU the forward-shifted quarter of every frame becomes frame 0's.
- Code recipe switches: ``sample_with_replacement``, ``sampler_replay``,
  ``iterations_per_epoch``, ``erasing_per_frame`` (configs/vcm/xreid_vitb16_official.yaml).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vireid.comm import all_reduce_mean, get_world_size
from vireid.config import Config
from vireid.config.methods.xreid import XReIDConfig
from vireid.data.loaders import TrackletDataset
from vireid.data.transforms import Compose, RandomErasing
from vireid.data.types import DataSpec, Sample
from vireid.losses import (
    CrossModalPrototypes,
    batch_hard_triplet_loss,
    cross_modal_consistency_loss,
)
from vireid.losses.prototype import prototype_sums
from vireid.methods import register_method
from vireid.methods.base import Method, ParamGroup, Stage
from vireid.models.heads import BNNeck, Classifier
from vireid.models.temporal import (
    CrossModalInteraction,
    LongTermInteraction,
    ShortTermInteraction,
    cross_modal_partners,
    default_heads,
)


@register_method
class XReID(Method):
    """X-ReID on a CLIP ViT image encoder, for tracklets (HITSZ-VCM, BUPTCampus)."""

    Options = XReIDConfig

    def __init__(self, cfg: Config, spec: DataSpec, rank: int = 0, world_size: int = 1):
        super().__init__(cfg, spec, rank, world_size)
        o: XReIDConfig = cfg.method  # type: ignore[assignment]
        self.options = o
        self._require(video=True)
        if o.cii and not (o.sii or o.lii):
            raise cfg.error("method.cii", "CII interacts the SII / LII outputs; turn sii or "
                                          "lii on, or cii off")
        self.clip = self._build_clip(camera_tokens=o.camera_tokens)
        self.clip.text = None  # X-ReID uses the image encoder only
        visual = self.clip.visual
        self._require(vit=True)
        D, d, C = visual.width, visual.embed_dim, spec.num_classes
        heads = o.mii_heads or default_heads(D)
        if D % heads:
            raise cfg.error("method.mii_heads", f"{heads} heads do not divide the width {D}")
        self.width, self.embed_dim = D, d

        self.neck = BNNeck(D)
        self.neck_proj = BNNeck(d)
        self.classifier = Classifier(D + d, C)
        if o.frame_id_loss:
            self.neck_frame = BNNeck(D)
            self.neck_proj_frame = BNNeck(d)
            self.classifier_frame = Classifier(D + d, C)
        self.sii = (ShortTermInteraction(D, heads, o.sii_blocks, o.sii_stride, o.sii_fold_div,
                                         o.mlp_ratio) if o.sii else None)
        self.lii = (LongTermInteraction(D, heads, o.lii_blocks, o.lii_stride, o.lii_edge,
                                        o.mlp_ratio) if o.lii else None)
        if self.has_mii:
            self.neck_mii = BNNeck(D)
            self.classifier_mii = Classifier(D, C)
            if o.frame_id_loss:
                self.neck_mii_frame = BNNeck(D)
        self.cii = nn.ModuleDict()
        if o.cii:
            for branch in self._branches():
                self.cii[branch] = CrossModalInteraction(D, heads, o.mlp_ratio)
        self.prototypes = (CrossModalPrototypes(C, D + d, o.memory_momentum,
                                                o.memory_temperature, o.memory_update_source)
                           if o.cpc else None)
        # Parameters frozen by model.frozen (and the BN-neck shifts) never train.
        self._frozen = {id(p) for p in self.parameters() if not p.requires_grad}

    @property
    def has_mii(self) -> bool:
        return self.sii is not None or self.lii is not None

    def _branches(self) -> list[str]:
        o = self.options
        return [name for name, on in (("sii", o.sii), ("lii", o.lii)) if on]

    # ------------------------------------------------------------------ encoding
    def encode_frames(self, clips: torch.Tensor, cameras: torch.Tensor | None = None):
        """Clips (B, T, C, H, W) -> (cls (B, T, D), proj (B, T, d), tokens (B, T, 1+N, D))."""
        if clips.dim() != 5:
            raise ValueError(f"expected clips (B, T, C, H, W), got shape {tuple(clips.shape)}")
        B, T = clips.shape[:2]
        if cameras is not None:
            cameras = cameras.repeat_interleave(T)
        out = self.clip.visual(clips.flatten(0, 1), cameras)
        return (out.cls.view(B, T, -1), out.proj.view(B, T, -1),
                out.tokens.view(B, T, *out.tokens.shape[1:]))

    def sequence_feature(self, cls: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        """``b = [BN(mean_t cls) ; BN(mean_t proj)]`` (B, D + d)."""
        return torch.cat([self.neck(cls.mean(1)), self.neck_proj(proj.mean(1))], dim=1)

    def interact(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame SII / LII outputs (B, T, D) of final-layer tokens (B, T, 1+N, D)."""
        if self.options.detach_mii_input:
            tokens = tokens.detach()
        cls, patches = tokens[:, :, 0], tokens[:, :, 1:]
        out: dict[str, torch.Tensor] = {}
        if self.sii is not None:
            out["sii"] = self.sii(cls, patches)
        if self.lii is not None:
            out["lii"] = self.lii(cls, patches)
        return out

    # ------------------------------------------------------------------ data
    def test_loader(self, samples: Sequence[Sample], batch_size: int) -> Iterable[dict[str, Any]]:
        return self._tracklet_test_loader(samples, batch_size)

    def _memory_loader(self, epoch: int = 0) -> DataLoader:
        """This rank's share of the training set, test-time frames, no augmentation."""
        o, v = self.options, self.cfg.data.video
        sampling = o.memory_sampling or v.test_sampling
        if sampling == "dense":
            sampling = "first_of_chunk"
        frames = o.memory_num_frames or v.frames_at_test
        dataset = TrackletDataset(self.data.train[self.rank::self.world_size],
                                  self._video_test_transform(), seq_len=frames, frame_sampler=sampling,
                                  seed=self.cfg.seed, skip_bad=self.cfg.data.skip_bad_images)
        dataset.set_epoch(epoch)  # only random frame samplings (rrs) depend on it
        return self._loader(dataset, batch_size=self.cfg.eval.batch_size)

    def compile_modules(self) -> list[nn.Module]:
        return [self.clip.visual]

    # ------------------------------------------------------------------ inference
    def _features_once(self, clips, cameras):
        """``[b ; BN(O)]`` (or ``b`` alone without MII)."""
        cls, proj, tokens = self.encode_frames(clips, cameras)
        b = self.sequence_feature(cls, proj)
        if not self.has_mii:
            return b
        o = sum(self.interact(tokens).values()).mean(1)
        return torch.cat([b, self.neck_mii(o) if self.options.mii_neck else o], dim=1)

    # ------------------------------------------------------------------ prototypes
    @torch.no_grad()
    def build_prototypes(self, epoch: int = 0) -> None:
        """Prototypes from one pass over the training set (eval mode, no augmentation).

        Each rank embeds its share; the per-identity sums and counts are summed
        over ranks, so every rank ends with the same memories.
        """
        if self.prototypes is None:
            return
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        if self.options.memory_bn_mode == "train":  # the code's first-epoch pass
            self.neck.train()
            self.neck_proj.train()
        device = self._device()
        C, dim = self.spec.num_classes, self.width + self.embed_dim
        sums = torch.zeros(2, C, dim, device=device)
        counts = torch.zeros(2, C, device=device)
        amp = (torch.autocast(device.type, dtype=torch.bfloat16 if self.cfg.train.amp_dtype ==
                              "bf16" else torch.float16)
               if self.cfg.train.amp else nullcontext())
        try:
            for batch in self._memory_loader(epoch):
                clips = batch["image"].to(device, non_blocking=True)
                cameras = (self._cameras({**batch, "image": clips})
                           if self.options.memory_camera_embedding else None)
                with amp:
                    cls, proj, _ = self.encode_frames(clips, cameras)
                    b = self.sequence_feature(cls, proj)
                s, n = prototype_sums(b.float(), batch["label"].to(device),
                                      batch["modality"].to(device), C)
                sums += s
                counts += n
        finally:
            for module, training in modes:
                module.train(training)
        world = get_world_size()
        if world > 1:  # mean * world = sum over ranks
            sums = all_reduce_mean(sums) * world
            counts = all_reduce_mean(counts) * world
        self.prototypes.set_from_sums(sums, counts)

    # ------------------------------------------------------------------ training
    def training_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every loss term of one batch (and the memory update); ``loss`` is their sum."""
        o = self.options
        clips, labels, modality = batch["image"], batch["label"], batch["modality"]
        B, T = clips.shape[:2]
        cls, proj, tokens = self.encode_frames(clips, self._cameras(batch))
        cls_mean, proj_mean = cls.mean(1), proj.mean(1)
        b = self.sequence_feature(cls, proj)
        frame_labels = labels.repeat_interleave(T)
        frame_weight = 1.0 / T if o.frame_id_weight is None else o.frame_id_weight
        ce = dict(label_smoothing=o.label_smoothing)

        id_loss = F.cross_entropy(self.classifier(b), labels, **ce)
        triplet = (batch_hard_triplet_loss(cls_mean, labels, o.triplet_margin)
                   + batch_hard_triplet_loss(proj_mean, labels, o.triplet_margin))
        zero = b.new_zeros(())
        frame_id, cmcl, cpcl = zero, zero, zero
        if o.frame_id_loss:
            frames = torch.cat([self.neck_frame(cls.flatten(0, 1)),
                                self.neck_proj_frame(proj.flatten(0, 1))], dim=1)
            frame_id = F.cross_entropy(self.classifier_frame(frames), frame_labels, **ce)
        if self.has_mii:
            branches = self.interact(tokens)
            o_frames = sum(branches.values())
            o_seq = o_frames.mean(1)
            id_loss = id_loss + F.cross_entropy(self.classifier_mii(self.neck_mii(o_seq)),
                                                labels, **ce)
            triplet = triplet + batch_hard_triplet_loss(o_seq, labels, o.triplet_margin)
            if o.frame_id_loss:
                frame_logits = self.classifier_mii(self.neck_mii_frame(o_frames.flatten(0, 1)))
                frame_id = frame_id + F.cross_entropy(frame_logits, frame_labels, **ce)
            if len(self.cii):
                partner, valid = cross_modal_partners(labels, modality)
                patches = tokens[:, :, 1:]
                if o.detach_mii_input:
                    patches = patches.detach()
                for name, block in self.cii.items():
                    pooled = branches[name].mean(1)
                    crossed = block(pooled, patches, partner)
                    cmcl = cmcl + cross_modal_consistency_loss(
                        pooled[valid], crossed[valid], o.cmcl_reduction)
        if self.prototypes is not None:
            if not bool(self.prototypes.ready):
                raise RuntimeError("the prototype memories are empty; build_prototypes() runs "
                                   "when the training stage starts")
            cpcl = self.prototypes.loss(b, labels)
            self.prototypes.update(b.detach().float(), labels, modality)
        loss = (o.id_weight * id_loss + o.triplet_weight * triplet + frame_weight * frame_id
                + o.cmcl_weight * cmcl + o.cpcl_weight * cpcl)
        out = {"loss": loss, "id": id_loss.detach(), "triplet": triplet.detach()}
        if o.frame_id_loss:
            out["frame_id"] = frame_id.detach()
        if len(self.cii):
            out["cmcl"] = cmcl.detach()
        if self.prototypes is not None:
            out["cpcl"] = cpcl.detach()
        return out

    def _groups(self) -> list[ParamGroup]:
        def trainable(module: nn.Module | None) -> list[nn.Parameter]:
            if module is None:
                return []
            return [p for p in module.parameters() if id(p) not in self._frozen]

        def of(*names: str) -> list[nn.Parameter]:
            return [p for n in names for p in trainable(getattr(self, n, None))]

        return [
            ParamGroup("visual", trainable(self.clip.visual)),
            ParamGroup("necks", of("neck", "neck_proj", "neck_frame", "neck_proj_frame")),
            ParamGroup("classifiers", of("classifier", "classifier_frame")),
            ParamGroup("mii", of("sii", "lii", "cii")),
            ParamGroup("mii_necks", of("neck_mii", "neck_mii_frame")),
            ParamGroup("mii_classifier", of("classifier_mii")),
        ]

    def _train_sampler(self):
        """P x K clips per modality; the code's sampler with ``sample_with_replacement``,
        ``sampler_replay`` (one order, drawn once, of min(n_vis, n_ir) / (P K) batches)
        and ``iterations_per_epoch``."""
        o = self.options
        options: dict[str, Any] = {"always_replace": o.sample_with_replacement}
        if o.iterations_per_epoch is not None:
            options["num_batches"] = o.iterations_per_epoch * self.world_size
        if o.sampler_replay:
            P, K = self.cfg.batch_composition("main")
            n = min(sum(s.modality == m for s in self.data.train) for m in (0, 1))
            options["replay_length"] = max(1, n // (P * K))
        return self.cross_modal_sampler("main", **options)

    def _train_dataset(self) -> TrackletDataset:
        """Training clips; ``erasing_per_frame`` draws the random erasing per frame."""
        dataset = self._tracklet_train_dataset()
        erase_p = self.cfg.data.augment.random_erasing_prob
        if not self.options.erasing_per_frame or erase_p <= 0:
            return dataset
        for views in dataset._transforms.values():
            for view in views:
                steps = [t for t in view.transforms if not isinstance(t, RandomErasing)]
                erasing = [t for t in view.transforms if isinstance(t, RandomErasing)]
                view.transforms = steps + [Compose(erasing, per_frame=True)]
        return dataset

    def stages(self) -> list[Stage]:
        sampler = self._train_sampler()
        dataset = self._train_dataset()
        loader = self._loader(dataset, batch_sampler=sampler)
        o = self.options

        def on_epoch_start(epoch: int) -> None:
            if self.prototypes is None:
                return
            if o.memory_rebuild == "every_epoch" or not bool(self.prototypes.ready):
                self.build_prototypes(epoch)

        return [Stage(
            name="main",
            param_groups=self._groups,
            loader=loader,
            sampler=sampler,
            step=self.training_losses,
            on_epoch_start=on_epoch_start,
        )]
