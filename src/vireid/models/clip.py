"""CLIP backbones for re-identification, built from open_clip's own modules.

:func:`vireid.models.factory.build_clip` assembles a :class:`ClipModel` (an
image encoder and a text encoder) from an open_clip architecture config, with
the changes person re-identification needs (docs/architecture.md#models-and-losses,
docs/methods.md#notation-and-shared-settings):

* non-square input, 288x144 (HxW) by default: the ViT patch grid becomes 18x9
  and the ModifiedResNet attention-pool grid 18x9 (``last_stride=1``); the
  positional embeddings of pretrained weights are resized bilinearly to the
  new grid when they are loaded (:mod:`vireid.models.weights`);
* ``last_stride`` of the ResNet's last stage (1 is the ReID standard: layer4
  keeps the layer3 resolution);
* an optional per-camera embedding (SIE, TransReID / CLIP-ReID) for the ViT;
* access to the pieces (ViT: ``embed``, ``blocks``, ``head``; ResNet: ``stem``,
  ``layers``, ``attnpool``) so that methods can insert modules between blocks
  or duplicate the ResNet stem per modality;
* named frozen parts (:data:`FROZEN_PARTS`).

Nothing is downloaded here: weights come from a local file
(``weights=PATH``) or, only when asked with ``pretrained=TAG``, through
open_clip's download machinery (see :mod:`vireid.models.weights`).

State-dict names follow open_clip with its text tower under ``text.`` (as
open_clip's ``CustomTextCLIP``) and the ResNet stem convolutions under
``visual.stem.``; :func:`vireid.models.weights.to_model_keys` maps OpenAI /
open_clip checkpoints onto these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

__all__ = [
    "FROZEN_PARTS",
    "ClipModel",
    "ResNetEncoder",
    "TextEncoder",
    "VisualEncoder",
    "VisualOutput",
    "VitEncoder",
    "get_tokenizer",
]

DEFAULT_IMAGE_SIZE: tuple[int, int] = (288, 144)
"""Input size (H, W) used by every method (docs/methods.md#notation-and-shared-settings)."""

@lru_cache(maxsize=4)
def get_tokenizer(context_length: int = 77):
    """open_clip's BPE tokenizer (``SimpleTokenizer``); its vocabulary file ships
    with the package, so it works offline. Calling it on a list of strings gives
    a ``(N, context_length)`` long tensor (SOT ... EOT, zero padded)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


# --------------------------------------------------------------------------- helpers


def value_checks_enabled() -> bool:
    """Whether to check index ranges on tensors (skipped while ``torch.compile``
    traces, where reading a value would break the graph)."""
    compiler = getattr(torch, "compiler", None)
    is_compiling = getattr(compiler, "is_compiling", None)
    return not (is_compiling is not None and is_compiling())


# --------------------------------------------------------------------------- visual encoders


@dataclass
class VisualOutput:
    """What a visual encoder returns.

    ``cls`` (B, D): ViT class token after ``ln_post`` (before the projection);
    ResNet: global average of the final feature map (B, C).
    ``proj`` (B, d): ViT ``cls @ proj``; ResNet: attention-pool output.
    ``tokens``: ViT final-layer tokens after ``ln_post`` (B, 1+N, D); ResNet None.
    ``feature_map`` (B, C, h, w): ResNet final map; ViT patch tokens (after
    ``ln_post``) as a (B, D, gh, gw) map.
    ``layers``: the outputs asked for with ``return_layers`` (ViT: raw block
    outputs (B, 1+N, D), before ``ln_post``; ResNet: layer1..layer4 maps).
    """

    cls: torch.Tensor
    proj: torch.Tensor
    tokens: torch.Tensor | None
    feature_map: torch.Tensor
    layers: list[torch.Tensor] | None = None


def _layer_indices(return_layers: Sequence[int] | None, count: int) -> list[int]:
    if return_layers is None:
        return []
    indices = []
    for index in return_layers:
        resolved = index + count if index < 0 else index
        if not 0 <= resolved < count:
            raise ValueError(f"layer index {index} out of range for {count} layers")
        indices.append(resolved)
    return indices


class VisualEncoder(nn.Module):
    """Base of the image encoders: ``kind`` ("vit" or "resnet"), ``width`` (ViT D /
    ResNet feature-map channels C), ``embed_dim`` (projected d), ``image_size``
    (H, W) and ``grid_size`` (the final token grid / feature map (h, w))."""

    kind: str = ""
    num_cameras: int = 0
    width: int
    embed_dim: int
    image_size: tuple[int, int]
    grid_size: tuple[int, int]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != tuple(self.image_size):
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} differs from the model's image_size "
                f"{tuple(self.image_size)} (build the model with image_size={tuple(x.shape[-2:])})"
            )

    def grid_embedding_key(self) -> str:
        """State-dict key (inside ``visual.``) of the grid positional embedding."""
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        cameras: torch.Tensor | None = None,
        return_layers: Sequence[int] | None = None,
    ) -> VisualOutput:
        """Images (B, 3, H, W) -> :class:`VisualOutput`; ``cameras`` (B,) camera ids
        (ViT with a camera embedding only); ``return_layers``: indices of
        intermediate outputs to return (negative counts from the end)."""
        raise NotImplementedError


class VitEncoder(VisualEncoder):
    """CLIP ViT image tower (open_clip ``VisionTransformer`` modules, batch-first).

    Pieces for methods: :meth:`embed` (patch embedding + class token + positional
    and camera embedding + ``ln_pre``) -> ``blocks`` (each maps (B, L, D) to
    (B, L, D)) -> :meth:`head` (``ln_post``, class token, projection).
    """

    kind = "vit"

    def __init__(
        self,
        *,
        image_size: tuple[int, int],
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        embed_dim: int,
        act_layer: type[nn.Module],
        patch_stride: int | None = None,
        num_cameras: int = 0,
        camera_scale: float = 1.0,
        camera_tokens: str = "all",
    ) -> None:
        super().__init__()
        from open_clip.transformer import LayerNorm, VisionTransformer

        tower = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            width=width,
            layers=layers,
            heads=heads,
            mlp_ratio=mlp_ratio,
            output_dim=embed_dim,
            act_layer=act_layer,
            norm_layer=LayerNorm,
        )
        stride = patch_stride or patch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.patch_stride = stride
        self.grid_size = (
            (image_size[0] - patch_size) // stride + 1,
            (image_size[1] - patch_size) // stride + 1,
        )
        if min(self.grid_size) <= 0:
            raise ValueError(f"image_size {image_size} is smaller than the patch size {patch_size}")
        self.width = width
        self.embed_dim = embed_dim

        self.conv1 = tower.conv1
        if stride != patch_size:  # overlapping patches (TransReID); same weight shape
            self.conv1.stride = (stride, stride)
        self.class_embedding = tower.class_embedding
        self.positional_embedding = tower.positional_embedding
        tokens = self.grid_size[0] * self.grid_size[1] + 1
        if self.positional_embedding.shape[0] != tokens:
            self.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(tokens, width))
        self.ln_pre = tower.ln_pre
        self.transformer = tower.transformer
        self.ln_post = tower.ln_post
        self.proj = tower.proj

        if camera_tokens not in ("all", "cls"):
            raise ValueError(f"camera_tokens must be 'all' or 'cls', got {camera_tokens!r}")
        self.num_cameras = int(num_cameras)
        self.camera_scale = float(camera_scale)
        self.camera_tokens = camera_tokens
        if self.num_cameras > 0:
            # SIE: one learned vector per camera, truncated normal std 0.02 (TransReID, CLIP-ReID).
            self.camera_embedding = nn.Parameter(torch.zeros(self.num_cameras, width))
            nn.init.trunc_normal_(self.camera_embedding, std=0.02)
        else:
            self.camera_embedding = None

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (open_clip ``ResidualAttentionBlock``, batch-first)."""
        return self.transformer.resblocks

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def grid_embedding_key(self) -> str:
        return "positional_embedding"

    def embed(self, x: torch.Tensor, cameras: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, 1+N, D), the input of the first block."""
        self._check_input(x)
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if cameras is not None:
            x = x + self._camera_term(cameras, x)
        return self.ln_pre(x)

    def _camera_term(self, cameras: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.camera_embedding is None:
            raise ValueError(
                "cameras were given but the model has no camera embedding (num_cameras=0)"
            )
        cameras = torch.as_tensor(cameras, device=x.device).long().reshape(-1)
        if cameras.shape[0] != x.shape[0]:
            raise ValueError(f"got {cameras.shape[0]} camera ids for a batch of {x.shape[0]}")
        if (
            value_checks_enabled()
            and cameras.numel()
            and (int(cameras.min()) < 0 or int(cameras.max()) >= self.num_cameras)
        ):
            raise ValueError(
                f"camera ids must lie in [0, {self.num_cameras}), got {cameras.min()}..{cameras.max()}"
            )
        term = self.camera_scale * self.camera_embedding[cameras].to(x.dtype).unsqueeze(1)
        if self.camera_tokens == "cls":
            mask = torch.zeros(1, x.shape[1], 1, dtype=x.dtype, device=x.device)
            mask[:, 0] = 1
            term = term * mask
        return term

    def head(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-block tokens (B, 1+N, D) -> (cls (B, D) after ``ln_post``, proj (B, d))."""
        cls = self.ln_post(tokens[:, 0])
        return cls, cls @ self.proj

    def tokens_to_map(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) -> (B, D, gh, gw)."""
        batch = patch_tokens.shape[0]
        return patch_tokens.transpose(1, 2).reshape(batch, -1, *self.grid_size)

    def forward_trunk(
        self, tokens: torch.Tensor, return_layers: Sequence[int] | None = None
    ) -> VisualOutput:
        """Run the blocks and the head on embedded tokens (the output of :meth:`embed`)."""
        wanted = _layer_indices(return_layers, len(self.blocks))
        kept: dict[int, torch.Tensor] = {}
        x = tokens
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in wanted:
                kept[index] = x
        normed = self.ln_post(x)
        cls = normed[:, 0]
        return VisualOutput(
            cls=cls,
            proj=cls @ self.proj,
            tokens=normed,
            feature_map=self.tokens_to_map(normed[:, 1:]),
            layers=[kept[i] for i in wanted] if return_layers is not None else None,
        )

    def forward(
        self,
        x: torch.Tensor,
        cameras: torch.Tensor | None = None,
        return_layers: Sequence[int] | None = None,
    ) -> VisualOutput:
        return self.forward_trunk(self.embed(x, cameras), return_layers)


class ResNetStem(nn.Module):
    """The three-convolution stem of CLIP's ModifiedResNet (conv1..conv3 + BN + ReLU,
    then a 2x2 average pool); a module of its own so it can be duplicated per modality."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3"):
            setattr(self, name, getattr(tower, name))
        self.avgpool = tower.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.avgpool(x)


def resnet_grid(image_size: tuple[int, int], last_stride: int) -> tuple[int, int]:
    """Final feature-map size of ModifiedResNet: conv1 (k3, s2, p1), then 2x2 average
    pools (floor) after the stem and in layer2, layer3 and (stride 2) layer4."""

    def one(side: int) -> int:
        side = (side - 1) // 2 + 1
        side //= 2
        for _ in range(2):
            side //= 2
        return side // 2 if last_stride == 2 else side

    return one(image_size[0]), one(image_size[1])


class ResNetEncoder(VisualEncoder):
    """CLIP ModifiedResNet image tower (open_clip modules).

    Pieces: ``stem`` (a module), ``layers`` (layer1..layer4), ``attnpool``.
    ``last_stride=1`` removes the anti-aliasing average pools of layer4's first
    block (main path and downsample), so layer4 keeps layer3's resolution.
    """

    kind = "resnet"

    def __init__(
        self,
        *,
        image_size: tuple[int, int],
        layers: Sequence[int],
        width: int,
        heads: int,
        embed_dim: int,
        last_stride: int = 1,
    ) -> None:
        super().__init__()
        from open_clip.modified_resnet import ModifiedResNet

        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        tower = ModifiedResNet(
            layers=list(layers), output_dim=embed_dim, heads=heads, image_size=224, width=width
        )
        self.image_size = image_size
        self.last_stride = last_stride
        self.grid_size = resnet_grid(image_size, last_stride)
        if min(self.grid_size) <= 0:
            raise ValueError(f"image_size {image_size} is too small for a ResNet (stride 32)")
        self.width = width * 32
        self.embed_dim = embed_dim

        self.stem = ResNetStem(tower)
        self.layer1, self.layer2 = tower.layer1, tower.layer2
        self.layer3, self.layer4 = tower.layer3, tower.layer4
        if last_stride == 1:
            first = self.layer4[0]
            first.avgpool = nn.Identity()
            first.stride = 1
            if first.downsample is not None:
                setattr(first.downsample, "-1", nn.Identity())
        self.attnpool = tower.attnpool
        tokens = self.grid_size[0] * self.grid_size[1] + 1
        if self.attnpool.positional_embedding.shape[0] != tokens:
            self.attnpool.positional_embedding = nn.Parameter(
                torch.randn(tokens, self.width) / self.width**0.5
            )

    @property
    def layers(self) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
        """(layer1, layer2, layer3, layer4)."""
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def grid_embedding_key(self) -> str:
        return "attnpool.positional_embedding"

    def forward_trunk(
        self, x: torch.Tensor, return_layers: Sequence[int] | None = None
    ) -> VisualOutput:
        """Run layer1..layer4 and the pools on a stem output (B, C0, H/4, W/4)."""
        wanted = _layer_indices(return_layers, 4)
        kept: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in wanted:
                kept[index] = x
        return VisualOutput(
            cls=x.mean(dim=(2, 3)),
            proj=self.attnpool(x),
            tokens=None,
            feature_map=x,
            layers=[kept[i] for i in wanted] if return_layers is not None else None,
        )

    def forward(
        self,
        x: torch.Tensor,
        cameras: torch.Tensor | None = None,
        return_layers: Sequence[int] | None = None,
    ) -> VisualOutput:
        if cameras is not None:
            raise ValueError(
                "the camera embedding exists for ViT backbones only; pass cameras=None"
            )
        self._check_input(x)
        return self.forward_trunk(self.stem(x), return_layers)


# --------------------------------------------------------------------------- text encoder


class TextEncoder(nn.Module):
    """CLIP text transformer (open_clip ``TextTransformer`` modules, batch-first).

    :meth:`encode` equals open_clip's ``CLIP.encode_text``; :meth:`encode_embeddings`
    runs the same computation from token embeddings (prompt learning, CoOp /
    CLIP-ReID), pooling at the given end-of-text positions.
    """

    def __init__(
        self,
        *,
        context_length: int,
        vocab_size: int,
        width: int,
        heads: int,
        layers: int,
        mlp_ratio: float,
        embed_dim: int,
        act_layer: type[nn.Module],
    ) -> None:
        super().__init__()
        from open_clip.transformer import LayerNorm, TextTransformer

        tower = TextTransformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            heads=heads,
            layers=layers,
            mlp_ratio=mlp_ratio,
            output_dim=embed_dim,
            act_layer=act_layer,
            norm_layer=LayerNorm,
        )
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.width = width
        self.embed_dim = embed_dim
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> text features (B, d); pooled at the EOT token (the
        largest id of each row, as CLIP)."""
        if tokens.dim() != 2:
            raise ValueError(f"expected token ids (B, L), got shape {tuple(tokens.shape)}")
        return self.encode_embeddings(self.token_embedding(tokens), tokens.argmax(dim=-1))

    forward = encode

    def encode_embeddings(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, L, D) and EOT positions (B,) -> text features (B, d)."""
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.width:
            raise ValueError(
                f"expected embeddings (B, L, {self.width}), got shape {tuple(embeddings.shape)}"
            )
        length = embeddings.shape[1]
        if length > self.context_length:
            raise ValueError(f"sequence length {length} exceeds the context {self.context_length}")
        x = embeddings + self.positional_embedding[:length].to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        pooled = x[rows, eot_index.to(x.device).long()]
        return pooled @ self.text_projection


# --------------------------------------------------------------------------- the model

FROZEN_PARTS: dict[str, str] = {
    "text": "the whole text encoder (alias: text_encoder)",
    "visual": "the whole image encoder (alias: image_encoder)",
    "logit_scale": "CLIP's temperature",
    "patch_embed": "ViT: patch-embedding convolution (visual.conv1)",
    "class_embedding": "ViT: class token",
    "pos_embed": "ViT: positional embedding; ResNet: attention-pool positional embedding",
    "camera_embedding": "ViT: per-camera embedding (SIE)",
    "ln_pre": "ViT: LayerNorm before the blocks",
    "blocks": "ViT: all transformer blocks",
    "ln_post": "ViT: final LayerNorm",
    "stem": "ResNet: conv1..conv3 stem",
    "layer1": "ResNet: stage 1",
    "layer2": "ResNet: stage 2",
    "layer3": "ResNet: stage 3",
    "layer4": "ResNet: stage 4",
    "attnpool": "ResNet: attention pool (with its projection)",
}
"""Part names for ``frozen``. Any parameter name or dotted module prefix of
:class:`ClipModel` is accepted too (e.g. ``visual.proj``,
``visual.transformer.resblocks.0``, ``text.token_embedding``). Freezing sets
``requires_grad=False``; BatchNorm running statistics of a frozen ResNet part
still update in train mode unless the part is put in eval mode."""

_PART_PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "any": {
        "text": ("text",),
        "text_encoder": ("text",),
        "visual": ("visual",),
        "image_encoder": ("visual",),
        "logit_scale": ("logit_scale",),
    },
    "vit": {
        "patch_embed": ("visual.conv1",),
        "class_embedding": ("visual.class_embedding",),
        "pos_embed": ("visual.positional_embedding",),
        "camera_embedding": ("visual.camera_embedding",),
        "ln_pre": ("visual.ln_pre",),
        "blocks": ("visual.transformer.resblocks",),
        "ln_post": ("visual.ln_post",),
    },
    "resnet": {
        "stem": ("visual.stem",),
        "layer1": ("visual.layer1",),
        "layer2": ("visual.layer2",),
        "layer3": ("visual.layer3",),
        "layer4": ("visual.layer4",),
        "attnpool": ("visual.attnpool",),
        "pos_embed": ("visual.attnpool.positional_embedding",),
    },
}


class ClipModel(nn.Module):
    """A CLIP model: ``visual`` (:class:`VisualEncoder`) and ``text`` (:class:`TextEncoder`).

    Float32, on the CPU until moved; ``tokenizer`` is open_clip's BPE tokenizer.
    """

    def __init__(
        self, visual: VisualEncoder, text: TextEncoder, *, backbone: str = "", logit_scale: float
    ) -> None:
        super().__init__()
        self.visual = visual
        self.text = text
        self.backbone = backbone
        self.embed_dim = visual.embed_dim
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.frozen_parts: tuple[str, ...] = ()
        self.weights_report: Any = None

    @property
    def tokenizer(self):
        """open_clip's BPE tokenizer for this model's context length (works offline)."""
        return get_tokenizer(self.text.context_length)

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Strings -> token ids (N, context_length) on the model's device."""
        ids = self.tokenizer([texts] if isinstance(texts, str) else list(texts))
        return ids.to(self.logit_scale.device)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text.encode(tokens)

    def encode_image(
        self, images: torch.Tensor, cameras: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Projected image features (B, d)."""
        return self.visual(images, cameras).proj

    def part_parameter_names(self, part: str) -> list[str]:
        """Names of the parameters of a named part (see :data:`FROZEN_PARTS`)."""
        names = [name for name, _ in self.named_parameters()]
        prefixes = _PART_PREFIXES["any"].get(part) or _PART_PREFIXES[self.visual.kind].get(part)
        if prefixes is None:
            prefixes = (part,)
        selected = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
        if not selected:
            known = sorted(set(_PART_PREFIXES["any"]) | set(_PART_PREFIXES[self.visual.kind]))
            raise ValueError(
                f"no part named {part!r} in a {self.visual.kind} backbone ({self.backbone}); "
                f"known parts: {', '.join(known)}, or a parameter name / module prefix "
                "such as 'visual.transformer.resblocks.0'"
            )
        return selected

    def freeze(self, parts: Sequence[str]) -> None:
        """Set ``requires_grad=False`` on the named parts (adds to ``frozen_parts``)."""
        if isinstance(parts, str):
            parts = [parts]
        selected = {name for part in parts for name in self.part_parameter_names(part)}
        for name, param in self.named_parameters():
            if name in selected:
                param.requires_grad_(False)
        self.frozen_parts = tuple(dict.fromkeys([*self.frozen_parts, *parts]))

    def frozen_parameter_names(self) -> set[str]:
        """Names of the parameters in ``frozen_parts`` (for building optimiser groups)."""
        return {name for part in self.frozen_parts for name in self.part_parameter_names(part)}
