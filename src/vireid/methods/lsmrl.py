"""LSMRL (Yang, Gao, Liu, Wei, Zhu, Feng, Qu, Niu; arXiv 2601.12062, 2026) for video
VI-ReID.

Only the paper's abstract is public: no code, no equations. This is the method
as the abstract defines it, with the design of methods.md section 3 for every
choice it leaves open. **Every item below is an assumption** unless marked
"abstract"; each has a switch in :class:`LSMRLConfig`.

* **STFL** (abstract: spatial-temporal feature learning inside CLIP's vision
  encoder with few or no new parameters). The ViT's own blocks in three parts
  (:class:`~vireid.models.temporal.SpatialTemporalLayout`): blocks 1-6 see each
  frame alone, blocks 7-9 see groups of ``group_size`` = 2 consecutive frames as
  one sequence, blocks 10-12 run with a quarter of the patch positions taken
  from frames t-1 / t+1 and put back after the block (temporal patch shift).
  No new weights. ``stfl: false`` = the plain frame encoder.
* **SD** (abstract: modality-shared learnable prompts diffused into visible and
  infrared features). One prompt set shared by both modalities, template "A X X
  X X person observed in both day and night conditions.", trained jointly with
  the image encoder (text encoder frozen). Each frame's final class token
  queries the bank of all training identities' text features (cross-attention,
  residual; no label needed, so it runs at test time), then ``ln_post``: frame
  features ``f_t`` (B, T, D). The output projection starts at zero, so SD starts
  as the identity (``sd_zero_init``).
* **CMI** (abstract: bidirectional cross-modal self-attention). One shared
  :class:`~vireid.models.temporal.CrossAttentionBlock`: in training the frame
  features of each clip attend to those of the same identity's clip in the
  other modality (visible -> infrared and back; the pairing of
  :func:`~vireid.models.temporal.cross_modal_partners`, a clip without partner
  attends to itself); at inference each clip attends to itself
  (``cmi_inference: self``) or the block is skipped (``skip``).
* **Features.** ``z = mean_t CMI(f)_t`` (D), ``v = z @ proj`` (d, CLIP space);
  inference ``[BN(z) ; BN(v)]`` (CLIP-ReID's, ``neck_feat``); dense clips averaged.
* **Losses.** Identity level (abstract: "identity-level losses"): ID
  cross-entropy on ``BN(z)`` and ``BN(v)`` (x0.25, smoothing 0.1, as CLIP-ReID),
  batch-hard triplet on ``z`` and ``v`` (margin 0.3), image->text
  cross-entropy ``v . text^T`` over all identities (raw dot products, as
  CLIP-ReID). Modality level (abstract: two losses, for discrimination and
  generalisation; ours in :mod:`vireid.losses.modality`): cross-modal centre
  alignment and centre-to-shared-text contrastive (temperature 0.07, CLIP's
  initial value), both on ℓ2-normalised ``v``, weight 1.
* **Recipe** (methods.md): 288x144, T = 6, 4 identities x 4 clips per modality,
  AdamW 2.5e-5, weight decay 1e-4, new modules x10, prompts x25 (as VLD, which
  LSMRL builds on), cosine with warm-up, AMP. 60 epochs and 5 warm-up epochs are
  our choice (the X-ReID budget).

Further choices: the text features of every identity are recomputed with
gradient at every step (``text_refresh: step``, exact); ``epoch`` recomputes the
bank without gradient at each epoch start and only the batch's identities with
gradient (cheaper with many identities). The bank used at test time is a buffer
recomputed from the prompts whenever the model enters eval mode after training
or loading. No camera embedding (``model.camera_embedding``, as our CLIP-ReID
ViT recipe).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vireid.config import Config
from vireid.config.methods.lsmrl import LSMRLConfig
from vireid.data.types import DataSpec, Sample
from vireid.losses import (
    batch_hard_triplet_loss,
    center_text_contrastive_loss,
    cross_modal_center_loss,
)
from vireid.methods import register_method
from vireid.methods.base import Method, ParamGroup, Stage
from vireid.models.heads import BNNeck, Classifier
from vireid.models.prompts import PromptLearner
from vireid.models.temporal import (
    CrossAttentionBlock,
    SpatialTemporalLayout,
    cross_modal_partners,
    default_heads,
    spatial_temporal_blocks,
)


class SemanticDiffusion(nn.Module):
    """``x + Attn(LN(x), text)``: tokens (M, D) query a text bank (C, d).

    Keys and values are read from the (un-normalised) text features through
    their own projections from d to D; no label is needed.
    """

    def __init__(self, dim: int, text_dim: int, heads: int, zero_init: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, kdim=text_dim, vdim=text_dim,
                                          batch_first=True)
        if zero_init:
            nn.init.zeros_(self.attn.out_proj.weight)
            nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or text.dim() != 2:
            raise ValueError(f"expected tokens (M, D) and text (C, d), got {tuple(tokens.shape)} "
                             f"and {tuple(text.shape)}")
        bank = text.to(tokens.dtype).unsqueeze(0)
        out, _ = self.attn(self.norm(tokens).unsqueeze(0), bank, bank, need_weights=False)
        return tokens + out.squeeze(0)


@register_method
class LSMRL(Method):
    """LSMRL on a CLIP ViT, for tracklets (HITSZ-VCM, BUPTCampus)."""

    Options = LSMRLConfig

    def __init__(self, cfg: Config, spec: DataSpec, rank: int = 0, world_size: int = 1):
        super().__init__(cfg, spec, rank, world_size)
        o: LSMRLConfig = cfg.method  # type: ignore[assignment]
        self.options = o
        self.fixed_frames_export = o.stfl  # frame groups and shifts depend on T
        self._require(video=True)
        self.clip = self._build_clip()
        self._require(vit=True)
        visual = self.clip.visual
        try:
            self.layout = SpatialTemporalLayout(o.basic_blocks, o.grouped_blocks, o.group_size,
                                                o.shift_share)
            self.layout.parts(len(visual.blocks))
        except ValueError as err:
            raise cfg.error("method.grouped_blocks", str(err)) from None
        D, d, C = visual.width, visual.embed_dim, spec.num_classes
        heads = o.heads or default_heads(D)
        if D % heads:
            raise cfg.error("method.heads", f"{heads} heads do not divide the width {D}")
        # Frozen by model.frozen (the text encoder is frozen by the stage: it is in no group).
        self._frozen = {id(p) for p in self.clip.parameters() if not p.requires_grad}

        self.prompts = PromptLearner(self.clip, C, template=o.template)
        self.sd = SemanticDiffusion(D, d, heads, o.sd_zero_init) if o.sd else None
        self.cmi = CrossAttentionBlock(D, heads, o.mlp_ratio) if o.cmi else None
        self.neck = BNNeck(D)
        self.neck_proj = BNNeck(d)
        self.classifier = Classifier(D, C)
        self.classifier_proj = Classifier(d, C)
        self.register_buffer("text_bank", torch.zeros(C, d))
        self._bank_stale = True  # the bank must follow the prompts before inference
        self.register_load_state_dict_post_hook(LSMRL._after_load)

    @staticmethod
    def _after_load(module: LSMRL, incompatible_keys) -> None:
        module._bank_stale = True  # recompute from the loaded prompts before inference

    # ------------------------------------------------------------------ text
    def text_features(self, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Text features (B, d) of ``labels`` (all identities when None), with the
        caller's gradient mode."""
        return self.prompts.text_features(self.clip.text, labels)

    @torch.no_grad()
    def refresh_text_bank(self) -> None:
        """Recompute the bank of every identity's text feature from the prompts."""
        self.text_bank.copy_(self.text_features().float())
        self._bank_stale = False

    def train(self, mode: bool = True) -> LSMRL:
        super().train(mode)
        if not mode and self._bank_stale:
            self.refresh_text_bank()
        return self

    def _training_bank(self, labels: torch.Tensor) -> torch.Tensor:
        """The bank of this step, with gradient (``text_refresh``); the buffer follows."""
        self._bank_stale = True  # the optimiser is about to move the prompts
        if self.options.text_refresh == "step":
            bank = self.text_features()
            self.text_bank.copy_(bank.detach().float())
            return bank
        batch = torch.unique(labels)
        fresh = self.text_features(batch)
        bank = self.text_bank.to(fresh.dtype).index_put((batch,), fresh)
        self.text_bank[batch] = fresh.detach().float()
        return bank

    # ------------------------------------------------------------------ encoding
    def encode_frames(self, clips: torch.Tensor, cameras: torch.Tensor | None = None,
                      text: torch.Tensor | None = None) -> torch.Tensor:
        """Clips (B, T, C, H, W) -> frame features ``f`` (B, T, D): STFL, SD on each
        frame's class token (bank ``text``, default the buffer), ``ln_post``."""
        if clips.dim() != 5:
            raise ValueError(f"expected clips (B, T, C, H, W), got shape {tuple(clips.shape)}")
        B, T = clips.shape[:2]
        visual = self.clip.visual
        if cameras is not None:
            cameras = cameras.repeat_interleave(T)
        x = visual.embed(clips.flatten(0, 1), cameras)
        if self.options.stfl:
            x = spatial_temporal_blocks(visual.blocks, x, T, self.layout)
        else:
            for block in visual.blocks:
                x = block(x)
        cls = x[:, 0]
        if self.sd is not None:
            cls = self.sd(cls, self.text_bank if text is None else text)
        return visual.ln_post(cls).view(B, T, -1)

    def interact(self, frames: torch.Tensor, partner: torch.Tensor | None = None) -> torch.Tensor:
        """CMI on frame features (B, T, D): each clip attends to clip ``partner[b]``
        (training) or to itself (None; ``cmi_inference: skip`` returns ``frames``)."""
        if self.cmi is None:
            return frames
        if partner is None:
            if self.options.cmi_inference == "skip":
                return frames
            return self.cmi(frames, frames)
        return self.cmi(frames, frames.index_select(0, partner))

    def sequence_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = mean_t`` (B, D) and ``v = z @ proj`` (B, d)."""
        z = frames.mean(1)
        return z, z @ self.clip.visual.proj

    # ------------------------------------------------------------------ data
    def test_loader(self, samples: Sequence[Sample], batch_size: int) -> Iterable[dict[str, Any]]:
        return self._tracklet_test_loader(samples, batch_size)

    def compile_modules(self) -> list[nn.Module]:
        return list(self.clip.visual.blocks)

    # ------------------------------------------------------------------ inference
    def _features_once(self, clips: torch.Tensor, cameras: torch.Tensor | None) -> torch.Tensor:
        z, v = self.sequence_features(self.interact(self.encode_frames(clips, cameras)))
        if self.options.neck_feat == "after":
            z, v = self.neck(z), self.neck_proj(v)
        return torch.cat([z, v], dim=1)

    # ------------------------------------------------------------------ training
    def training_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every loss term of one batch; ``loss`` is their weighted sum."""
        o = self.options
        clips, labels, modality = batch["image"], batch["label"], batch["modality"]
        text = self._training_bank(labels)
        frames = self.encode_frames(clips, self._cameras(batch), text if self.sd else None)
        partner = cross_modal_partners(labels, modality)[0] if self.cmi is not None else None
        z, v = self.sequence_features(self.interact(frames, partner))
        ce = dict(label_smoothing=o.label_smoothing)
        id_loss = (F.cross_entropy(self.classifier(self.neck(z)), labels, **ce)
                   + F.cross_entropy(self.classifier_proj(self.neck_proj(v)), labels, **ce))
        triplet = (batch_hard_triplet_loss(z, labels, o.triplet_margin)
                   + batch_hard_triplet_loss(v, labels, o.triplet_margin))
        i2t = F.cross_entropy(v.float() @ text.float().T, labels)
        out = {"id": id_loss, "triplet": triplet, "i2t": i2t}
        loss = o.id_weight * id_loss + o.triplet_weight * triplet + o.i2t_weight * i2t
        if o.center_weight:
            out["center"] = cross_modal_center_loss(v, labels, modality)
            loss = loss + o.center_weight * out["center"]
        if o.center_text_weight:
            out["center_text"] = center_text_contrastive_loss(
                v, labels, modality, text, o.center_text_temperature)
            loss = loss + o.center_text_weight * out["center_text"]
        return {"loss": loss, **{k: t.detach() for k, t in out.items()}}

    def _groups(self) -> list[ParamGroup]:
        def trainable(*modules: nn.Module | None) -> list[nn.Parameter]:
            return [p for m in modules if m is not None for p in m.parameters()
                    if id(p) not in self._frozen]

        return [
            ParamGroup("visual", trainable(self.clip.visual)),
            ParamGroup("prompts", [self.prompts.ctx]),
            ParamGroup("necks", trainable(self.neck, self.neck_proj)),
            ParamGroup("new_modules", trainable(self.sd, self.cmi, self.classifier,
                                                self.classifier_proj)),
        ]

    def stages(self) -> list[Stage]:
        sampler = self.cross_modal_sampler("main")
        dataset = self._tracklet_train_dataset()
        return [Stage(
            name="main",
            param_groups=self._groups,
            loader=self._loader(dataset, batch_sampler=sampler),
            sampler=sampler,
            step=self.training_losses,
            on_epoch_start=self._on_epoch_start,
            train_modules=lambda: [m for m in (self.clip.visual, self.prompts, self.sd, self.cmi,
                                               self.neck, self.neck_proj, self.classifier,
                                               self.classifier_proj) if m is not None],
        )]

    def _on_epoch_start(self, epoch: int) -> None:
        if self.options.text_refresh == "epoch":
            self.refresh_text_bank()
