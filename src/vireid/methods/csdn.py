"""CSDN for visible-infrared person re-identification (images).

Yu, Dong, Zhu, Peng, Tao, IEEE TMM 27 (2025) 4137-4150, as its official code
does it (docs/methods.md#csdn-csdn).

Model:

- CLIP RN50 image encoder (``model.backbone``; ViT-B-16 as an option), last stage
  stride 1, attention-pool positional embedding resized to the final map (18x9 at
  288x144). The stem is duplicated: one copy for visible, one for infrared images
  (chosen per sample from ``batch["modality"]``); layer1-layer4 and the attention
  pool are shared. For ViT the "stem" is the patch-embedding convolution; the class
  token, positional embedding, ``ln_pre``, the blocks and the head are shared.
- Heads: (a) GeM (learnable p, init 3) on the feature map -> f (2048) -> BN ->
  classifier; (b) attention pool -> g (1024) -> BN -> classifier. ViT: f is the
  class token after ``ln_post`` (768) and g its projection (512).
- Two prompt learners ("A photo of a X X X X person.", 4 tokens per identity), one
  per modality (``prompts: shared`` uses one for both), through the frozen text
  encoder: t^v, t^r.
- SII: ``t^f = t^v + W_c softmax(q k^T / sqrt(d)) v`` with ``q = tanh(W_q t^v)``,
  ``k = tanh(W_k t^r)``, ``v = tanh(W_v t^r)`` (dropout 0.1 after each tanh). Each
  text feature is a single token, so the softmax is identically 1 and
  ``t^f = t^v + W_c tanh(W_v t^r)``; this default behaviour is kept
  (``fusion: attention``). ``fusion: sum`` uses ``t^v + t^r`` and
  ``visible_only`` uses ``t^v`` (both parameter-free: stage ``sii`` then needs
  ``epochs: 0`` and ``warmup_epochs: 0``).

Stages (names used in ``train.stages``):

1. ``prompt``: both prompt learners. The attention-pooled feature g of every
   training image is computed once with the frozen weights (test transform, eval
   mode) and cached. A batch is B (visible, infrared) pairs of the same identity
   (``batch_size`` pairs); loss = SupCon image->text + text->image between
   ``[g^v; g^r]`` and ``[t^v; t^r]``, positives by identity (raw dot products,
   temperature 1).
2. ``sii``: only the fusion module; the same loss between g and t^f over batches
   of ``batch_size`` image features of both modalities: the stage-1 cache
   (``sii_features: cached``), or re-extracted as the official code does
   (``train_mode``: BatchNorm in train mode on single-modality batches).
3. ``hse``: text side frozen; T^f of every identity computed once (buffer
   ``text_features``). P identities x K images per modality; each visible image
   gives two views (the second with channel exchange), so 3PK images. Loss =
   ``CE(a) + CE(b) + MSEL(f) + MSEL(g) + 0.15 [WRT(f) + WRT(g)]
   + 0.05 CE(g^v T^f^T) + 0.10 CE(g^r T^f^T)``. ID and WRT terms use the whole
   batch; MSEL and the image->text terms use the first visible view and the
   infrared images.

Inference: ``[l2(BN(f)) ; l2(g)]``; with ``eval.flip_test`` the same for the
flipped image, combined by ``eval.flip_fusion`` (``concat`` in the official code).

Deviations and assumptions (also in docs/methods.md):

- ``stem_relu: last`` (default) runs the stem as the official code does:
  conv1-bn1-conv2-bn2-conv3-bn3-ReLU-avgpool, i.e. without the ReLUs after bn1 and
  bn2 that CLIP's own stem has (the official ``nn.Sequential`` omits them);
  ``stem_relu: all`` uses CLIP's stem unchanged.
- Stage-1 features: eval mode, as the official code (which never switched modes
  before). Stage-2 features: the official code extracts them again after stage 1 with
  every BatchNorm in train mode (batch statistics of 32-image single-modality
  batches, running averages updated); ``sii_features: cached`` (default) reuses the
  eval-mode stage-1 cache, ``train_mode`` does what the official code does. T^f
  (stage 3) is computed in eval mode; the official code has the fusion dropout active
  then.
- Stage-1 pairs: drawn once, as the official code does, from a cross-modal identity
  sampler (P identities x K images per modality, with replacement, seed
  ``seed``). The last, smaller batch of an epoch is kept.
- The fusion's softmax runs over the keys; the official code normalises over the
  queries (``Softmax(dim=1)``). Both are 1 for single tokens.
- MSEL matches identities by label instead of assuming both halves share one
  identity order, and averages all other same-identity distances of the anchor's
  modality (the official top-(K-1) is the same set when every identity has K
  samples per modality). WRT's softmax is exact (``wrt_normalizer: exact``); the
  official normaliser (``official``) adds 1e-6 and has no effective shift for the
  negatives, so the negative term collapses for far negatives.
- The official code evaluates every epoch on the test set and keeps the best
  Rank-1 (``train.keep_best``, reproduction only); the final model by default.
- BN layers of the heads train their shift (the official ``BatchNorm1d``), unlike
  CLIP-ReID's BN-neck.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vireid.config import Config
from vireid.config.methods.csdn import CSDNConfig
from vireid.data.loaders import ImageDataset
from vireid.data.samplers import CrossModalIdentitySampler, ShuffledBatchSampler
from vireid.data.transforms import build_transforms, train_transforms_from_config
from vireid.data.types import DataSpec, Modality, Sample
from vireid.losses import (
    image_text_supcon,
    modality_shared_enhancement_loss,
    weighted_regularized_triplet_loss,
)
from vireid.methods import register_method
from vireid.methods.base import Method, ParamGroup, Stage
from vireid.models.heads import Classifier, GeM
from vireid.models.prompts import PromptLearner

__all__ = ["CSDN", "CSDNConfig", "SemanticFusion"]

VISIBLE_SET, INFRARED_SET = 0, 1
"""Prompt-set indices of the two modalities (PromptLearner ``set_index``)."""

_TRAIN_RECIPE = "csdn"
"""Transform recipe: the plain CAJ pipeline (bicubic resize; pad, crop, flip, normalise,
CAJ channel erasing), so that the data.augment switches alone add the second visible view
with channel exchange and the infrared adaptive gray (the CSDN configs turn both on)."""




class SemanticFusion(nn.Module):
    """SII attention fusion of visible and infrared text features.

    ``forward(t_v, t_r)``: (B, d) or (B, L, d) queries from the visible side and
    (B, d) or (B, M, d) keys/values from the infrared side ->
    ``t_v + W_c softmax(q k^T / sqrt(d)) v`` with q, k, v = dropout(tanh(linear(.))).
    """

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim

        def branch() -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(dropout))

        self.query, self.key, self.value = branch(), branch(), branch()
        self.out = nn.Linear(dim, dim)

    def attention(self, visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, L, M)."""
        q = self.query(visible)
        k = self.key(infrared)
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.dim), dim=-1)

    def forward(self, visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        single = visible.dim() == 2
        v = visible.unsqueeze(1) if single else visible
        r = infrared.unsqueeze(1) if infrared.dim() == 2 else infrared
        fused = v + self.out(self.attention(v, r) @ self.value(r))
        return fused.squeeze(1) if single else fused


@register_method
class CSDN(Method):
    """CSDN on a CLIP image encoder (RN50 or ViT), images only."""

    Options = CSDNConfig

    def __init__(self, cfg: Config, spec: DataSpec, rank: int = 0, world_size: int = 1):
        super().__init__(cfg, spec, rank, world_size)
        self.options: CSDNConfig = cfg.method  # type: ignore[assignment]
        o = self.options
        self._require(video=False)
        m = cfg.model
        if m.camera_embedding:
            raise cfg.error("model.camera_embedding", "CSDN has no camera embedding; set it to false")
        sii = cfg.train.stages.get("sii")
        if o.fusion != "attention" and sii is not None and sii.epochs > 0:
            raise cfg.error(
                "train.stages.sii.epochs",
                f"method.fusion={o.fusion!r} has no parameters, so stage 'sii' has nothing to "
                "train; set train.stages.sii.epochs=0 (and warmup_epochs=0)",
            )
        self.clip = self._build_clip()  # no camera embedding (checked above)
        visual = self.clip.visual
        self.is_vit = visual.kind == "vit"
        # The infrared stem starts as a copy of the (loaded) visible one.
        visible_stem = visual.conv1 if self.is_vit else visual.stem
        self.stem_ir = copy.deepcopy(visible_stem) if o.stems == "modality_specific" else None
        # Parts frozen by model.frozen never train, whatever the stage.
        self._frozen = {id(p) for p in self.parameters() if not p.requires_grad}

        num_classes = spec.num_classes
        feature_dim, embed_dim = visual.width, visual.embed_dim
        self.gem = None if self.is_vit else GeM(o.gem_p)
        self.bn_f = nn.BatchNorm1d(feature_dim)
        self.bn_g = nn.BatchNorm1d(embed_dim)
        self.classifier_f = Classifier(feature_dim, num_classes)
        self.classifier_g = Classifier(embed_dim, num_classes)
        sets = 2 if o.prompts == "modality_specific" else 1
        self.prompts = PromptLearner(self.clip, num_classes, template=o.template, num_sets=sets)
        self.fusion = SemanticFusion(embed_dim, o.fusion_dropout) if o.fusion == "attention" else None
        self.register_buffer("text_features", torch.zeros(num_classes, embed_dim))
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pairs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._identity_text: tuple[torch.Tensor, torch.Tensor] | None = None
        self._sii_pool: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ parts
    @property
    def heads(self) -> list[nn.Module]:
        """GeM (ResNet), both BN layers and both classifiers."""
        parts: list[nn.Module] = [self.bn_f, self.bn_g, self.classifier_f, self.classifier_g]
        return ([self.gem] if self.gem is not None else []) + parts

    def _stem_modules(self) -> tuple[nn.Module, nn.Module]:
        visual = self.clip.visual
        visible = visual.conv1 if self.is_vit else visual.stem
        return visible, (self.stem_ir if self.stem_ir is not None else visible)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable image-encoder parameters: the shared trunk and both stems."""
        params = list(self.clip.visual.parameters())
        if self.stem_ir is not None:
            params += list(self.stem_ir.parameters())
        return [p for p in params if id(p) not in self._frozen]

    # ------------------------------------------------------------------ encoding
    def _run_stem(self, stem: nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.is_vit or self.options.stem_relu == "all":
            return stem(images)
        x = stem.bn1(stem.conv1(images))
        x = stem.bn2(stem.conv2(x))
        x = stem.act3(stem.bn3(stem.conv3(x)))
        return stem.avgpool(x)

    def stem_forward(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Each image through the stem of its modality; rows keep the input order."""
        self.clip.visual._check_input(images)
        modality = torch.as_tensor(modality, device=images.device).reshape(-1)
        if modality.shape[0] != images.shape[0]:
            raise ValueError(f"got {modality.shape[0]} modalities for {images.shape[0]} images")
        visible, infrared = self._stem_modules()
        if visible is infrared:
            return self._run_stem(visible, images)
        is_ir = modality == int(Modality.INFRARED)
        vis_rows = (~is_ir).nonzero().flatten()
        ir_rows = is_ir.nonzero().flatten()
        parts, rows = [], []
        if vis_rows.numel():
            parts.append(self._run_stem(visible, images[vis_rows]))
            rows.append(vis_rows)
        if ir_rows.numel():
            parts.append(self._run_stem(infrared, images[ir_rows]))
            rows.append(ir_rows)
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts)[torch.argsort(torch.cat(rows))]

    def encode(self, images: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, g): GeM-pooled map (ViT: class token) and attention-pooled (ViT: projected) feature."""
        x = self.stem_forward(images, modality)
        visual = self.clip.visual
        if self.is_vit:
            tokens = x.flatten(2).transpose(1, 2)
            cls = visual.class_embedding.to(tokens.dtype).view(1, 1, -1).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1) + visual.positional_embedding.to(tokens.dtype)
            out = visual.forward_trunk(visual.ln_pre(tokens))
            return out.cls, out.proj
        out = visual.forward_trunk(x)
        assert self.gem is not None
        return self.gem(out.feature_map), out.proj

    def text_features_of(self, labels: torch.Tensor, modality: Modality) -> torch.Tensor:
        """t^v or t^r of identity ``labels`` (the shared learner when ``prompts: shared``)."""
        index = VISIBLE_SET if modality == Modality.VISIBLE or self.prompts.num_sets == 1 else INFRARED_SET
        return self.prompts.text_features(self.clip.text, labels, index)

    def fuse(self, visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        """t^f from t^v and t^r (``method.fusion``)."""
        if self.fusion is not None:
            return self.fusion(visible, infrared)
        if self.options.fusion == "sum":
            return visible + infrared
        return visible

    # ------------------------------------------------------------------ data
    def _test_transform(self):
        d = self.cfg.data
        return build_transforms(False, tuple(d.image_size), recipe=_TRAIN_RECIPE,
                                normalization=(tuple(d.augment.mean), tuple(d.augment.std)),
                                interpolation=d.interpolation)

    def test_loader(self, samples: Sequence[Sample], batch_size: int) -> Iterable[dict[str, Any]]:
        dataset = ImageDataset(samples, self._test_transform(), skip_bad=self.cfg.data.skip_bad_images)
        return self._loader(dataset, batch_size=batch_size)

    def compile_modules(self) -> list[nn.Module]:
        visual = self.clip.visual
        if self.is_vit:
            return list(visual.blocks)
        return [*visual.layers, visual.attnpool]

    # ------------------------------------------------------------------ inference
    def _features_once(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        f, g = self.encode(images, modality)
        return torch.cat([F.normalize(self.bn_f(f).float(), dim=1), F.normalize(g.float(), dim=1)], 1)

    def extract(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._with_flip(batch["image"], batch["modality"])

    # ------------------------------------------------------------------ stages
    def stages(self) -> list[Stage]:
        return [self._prompt_stage(), self._sii_stage(), self._hse_stage()]

    def _composition(self) -> tuple[int, int, str]:
        """(P, K, key naming P) of the ``hse`` stage: its override, else the data section's."""
        d = self.cfg.data
        stage_cfg = self.cfg.train.stages.get("hse")
        if stage_cfg is not None and stage_cfg.identities_per_batch is not None:
            P, key = stage_cfg.identities_per_batch, "train.stages.hse.identities_per_batch"
        else:
            P, key = d.identities_per_batch, "data.identities_per_batch"
        K = (stage_cfg.instances_per_identity if stage_cfg and stage_cfg.instances_per_identity
             else d.instances_per_identity)
        return P, K, key

    def _identity_sampler(self, seed: int, replace: bool, **kwargs) -> CrossModalIdentitySampler:
        P, K, key = self._composition()
        try:
            return CrossModalIdentitySampler.from_samples(
                self.data.train, P, K, seed=seed, always_replace=replace, **kwargs
            )
        except ValueError as err:
            raise self.cfg.error(key, f"impossible batch composition: {err}") from None

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(visible rows, infrared rows) into ``data.train``: the stage-1 image pairs, the same
        identity at the same position, drawn once from a cross-modal identity sampler."""
        if self._pairs is None:
            sampler = self._identity_sampler(self.cfg.seed, replace=True)
            half = sampler.num_identities * sampler.num_instances
            batches = sampler.global_batches(0)
            visible = [i for batch in batches for i in batch[:half]]
            infrared = [i for batch in batches for i in batch[half:]]
            self._pairs = (torch.tensor(visible), torch.tensor(infrared))
        return self._pairs

    @torch.no_grad()
    def cache_image_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """g of every training image (frozen weights, test transform, eval mode) and labels."""
        if self._cache is None:
            was_training = self.training
            self.eval()
            device = self._device()
            feats = []
            for batch in self.test_loader(self.data.train, self.cfg.eval.batch_size):
                images = batch["image"].to(device)
                feats.append(self.encode(images, batch["modality"].to(device))[1].float())
            labels = torch.tensor([s.label for s in self.data.train], device=device)
            self._cache = (torch.cat(feats), labels)
            self.train(was_training)
        return self._cache

    @torch.no_grad()
    def identity_text_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(t^v, t^r) of every identity, (C, d) each, with the current prompts."""
        labels = torch.arange(self.spec.num_classes, device=self._device())
        visible = torch.cat([self.text_features_of(c, Modality.VISIBLE) for c in labels.split(256)])
        infrared = torch.cat([self.text_features_of(c, Modality.INFRARED) for c in labels.split(256)])
        return visible.float(), infrared.float()

    def _cached_stage_sampler(self, num_items: int, name: str, default: int) -> ShuffledBatchSampler:
        stage_cfg = self.cfg.train.stages.get(name)
        batch_size = stage_cfg.batch_size if stage_cfg and stage_cfg.batch_size else default
        return ShuffledBatchSampler(num_items, batch_size, seed=self.cfg.seed, rank=self.rank,
                                    world_size=self.world_size)

    # ------------------------------------------------------------------ stage 1
    def prompt_losses(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """SupCon image->text + text->image between ``[g^v; g^r]`` (cached) and
        ``[t^v; t^r]`` of the batch's (visible, infrared) pairs."""
        feats, labels = self.cache_image_features()
        idx = torch.as_tensor(indices)
        visible_rows, infrared_rows = self.pairs()
        vis = visible_rows[idx].to(feats.device)
        ir = infrared_rows[idx].to(feats.device)
        y_v, y_r = labels[vis], labels[ir]
        image = torch.cat([feats[vis], feats[ir]])
        text = torch.cat([self.text_features_of(y_v, Modality.VISIBLE),
                          self.text_features_of(y_r, Modality.INFRARED)])
        return image_text_supcon(image, text, torch.cat([y_v, y_r]))

    def _prompt_stage(self) -> Stage:
        visible_rows, _ = self.pairs()
        sampler = self._cached_stage_sampler(len(visible_rows), "prompt", 32)
        return Stage(
            name="prompt",
            param_groups=lambda: [ParamGroup("prompts", list(self.prompts.parameters()))],
            loader=sampler, sampler=sampler, step=self.prompt_losses,
            setup=self.cache_image_features,
            train_modules=lambda: [self.prompts],
        )

    # ------------------------------------------------------------------ stage 2 (SII)
    @torch.no_grad()
    def _train_mode_pair_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``sii_features: train_mode`` (the official stage-2 extraction): g of every
        stage-1 pair, image encoder in train mode, one forward per modality per batch of
        ``train.stages.prompt.batch_size`` pairs -- BatchNorm normalises with the
        statistics of that single-modality batch and updates its running averages.
        Rows: [visible of every pair; infrared of every pair]."""
        visible_rows, infrared_rows = self.pairs()
        stage_cfg = self.cfg.train.stages.get("prompt")
        size = stage_cfg.batch_size if stage_cfg and stage_cfg.batch_size else 32
        dataset = ImageDataset(self.data.train, self._test_transform(),
                               skip_bad=self.cfg.data.skip_bad_images)
        encoder = [self.clip.visual] + ([self.stem_ir] if self.stem_ir is not None else [])
        modes = [(m, m.training) for e in encoder for m in e.modules()]
        device = self._device()
        out = []
        try:
            for e in encoder:
                e.train()
            for rows in (visible_rows, infrared_rows):
                batches = [rows[i:i + size].tolist() for i in range(0, len(rows), size)]
                for batch in self._loader(dataset, batch_sampler=batches):
                    images = batch["image"].to(device)
                    out.append(self.encode(images, batch["modality"].to(device))[1].float())
        finally:
            for module, training in modes:
                module.train(training)
        _, labels = self.cache_image_features()
        rows = torch.cat([visible_rows, infrared_rows]).to(labels.device)
        return torch.cat(out), labels[rows]

    def setup_sii(self) -> None:
        """The image-feature pool of stage 2 (``sii_features``) and every identity's
        (t^v, t^r), frozen for the stage."""
        feats, labels = self.cache_image_features()
        if self.options.sii_features == "train_mode":
            self._sii_pool = self._train_mode_pair_features()
        else:  # the stage-1 cache (eval mode), at the rows of the stage-1 pairs
            visible_rows, infrared_rows = self.pairs()
            rows = torch.cat([visible_rows, infrared_rows]).to(feats.device)
            self._sii_pool = (feats[rows], labels[rows])
        self._identity_text = self.identity_text_features()

    def sii_losses(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """SupCon image->text + text->image between g and the fused ``t^f`` of its identity."""
        assert self._sii_pool is not None and self._identity_text is not None
        feats, labels = self._sii_pool
        idx = torch.as_tensor(indices, device=feats.device)
        image, y = feats[idx], labels[idx]
        text_v, text_r = self._identity_text
        return image_text_supcon(image, self.fuse(text_v[y], text_r[y]), y)

    def _sii_stage(self) -> Stage:
        visible_rows, _ = self.pairs()
        sampler = self._cached_stage_sampler(2 * len(visible_rows), "sii", 64)
        return Stage(
            name="sii",
            param_groups=lambda: [ParamGroup(
                "fusion", list(self.fusion.parameters()) if self.fusion is not None else [])],
            loader=sampler, sampler=sampler, step=self.sii_losses, setup=self.setup_sii,
            train_modules=lambda: [self.fusion] if self.fusion is not None else [],
        )

    # ------------------------------------------------------------------ stage 3 (HSE)
    @torch.no_grad()
    def cache_fused_text(self) -> None:
        """T^f of every identity, once (eval mode); frozen for the stage."""
        was_training = self.training
        self.eval()
        text_v, text_r = self.identity_text_features()
        self.text_features.copy_(self.fuse(text_v, text_r).float())
        self.train(was_training)

    def hse_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``CE(a) + CE(b) + MSEL(f) + MSEL(g) + 0.15 [WRT(f) + WRT(g)]
        + 0.05 CE(g^v T^f^T) + 0.10 CE(g^r T^f^T)`` (weights from ``method.*``)."""
        o = self.options
        labels, modality = batch["label"], batch["modality"]
        f, g = self.encode(batch["image"], modality)
        id_loss = (
            F.cross_entropy(self.classifier_f(self.bn_f(f)).float(), labels,
                            label_smoothing=o.label_smoothing)
            + F.cross_entropy(self.classifier_g(self.bn_g(g)).float(), labels,
                              label_smoothing=o.label_smoothing)
        )
        f, g = f.float(), g.float()
        wrt = (weighted_regularized_triplet_loss(f, labels, normalizer=o.wrt_normalizer)
               + weighted_regularized_triplet_loss(g, labels, normalizer=o.wrt_normalizer))
        first_visible = (modality == int(Modality.VISIBLE)) & (batch["view"] == 0)
        infrared = modality == int(Modality.INFRARED)
        y_v, y_r = labels[first_visible], labels[infrared]
        g_v, g_r = g[first_visible], g[infrared]
        i2t_v = F.cross_entropy(g_v @ self.text_features.T, y_v)
        i2t_r = F.cross_entropy(g_r @ self.text_features.T, y_r)
        loss = (o.id_loss_weight * id_loss + o.triplet_weight * wrt
                + o.i2t_visible_weight * i2t_v + o.i2t_infrared_weight * i2t_r)
        out = {"id": id_loss.detach(), "wrt": wrt.detach(), "i2t_v": i2t_v.detach(),
               "i2t_r": i2t_r.detach()}
        if o.msel:
            msel = (modality_shared_enhancement_loss(f[first_visible], f[infrared], y_v, y_r)
                    + modality_shared_enhancement_loss(g_v, g_r, y_v, y_r))
            loss = loss + o.msel_weight * msel
            out["msel"] = msel.detach()
        return {"loss": loss, **out}

    def _hse_stage(self) -> Stage:
        o = self.options
        sampler = self._identity_sampler(
            self.cfg.seed, replace=o.sample_with_replacement, rank=self.rank,
            world_size=self.world_size,
        )
        d = self.cfg.data
        transforms = train_transforms_from_config(d.augment, tuple(d.image_size), _TRAIN_RECIPE,
                                                  d.interpolation)
        dataset = ImageDataset(self.data.train, transforms, seed=self.cfg.seed,
                               skip_bad=d.skip_bad_images)
        loader = self._loader(dataset, batch_sampler=sampler)
        stem_ir = [self.stem_ir] if self.stem_ir is not None else []
        return Stage(
            name="hse",
            param_groups=lambda: [
                ParamGroup("backbone", self.backbone_parameters()),
                ParamGroup("heads", [p for h in self.heads for p in h.parameters()]),
            ],
            loader=loader, sampler=sampler, step=self.hse_losses, setup=self.cache_fused_text,
            train_modules=lambda: [self.clip.visual, *stem_ir, *self.heads],
        )
