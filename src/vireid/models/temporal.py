"""Temporal and cross-modal token interaction for video re-identification.

Pieces that work on the final-layer tokens of a ViT run frame by frame
(``cls`` (B, T, D), ``patches`` (B, T, N, D)):

* :func:`temporal_channel_shift`: out-of-place temporal shift of channels (TSM,
  Lin et al., ICCV 2019), the short-term step of X-ReID's SII;
* :class:`CrossAttentionBlock`: pre-LN block in which query tokens attend to
  context tokens, then an MLP;
* :class:`SelfAttentionBlock`: pre-LN self-attention block that can return only
  its first tokens (computing only their queries);
* :class:`ShortTermInteraction` (SII), :class:`LongTermInteraction` (LII) and
  :class:`CrossModalInteraction` (CII) of X-ReID (Yu et al., AAAI 2026;
  docs/methods.md#x-reid-xreid);
* :func:`long_term_source_index` and :func:`cross_modal_partners`, the index
  rules behind LII and CII;
* :class:`SpatialTemporalLayout` and :func:`spatial_temporal_blocks`, LSMRL's
  STFL (docs/methods.md#lsmrl-lsmrl): a CLIP ViT's own blocks run frame by frame,
  then on groups of consecutive frames (:func:`grouped_block`), then with
  patch tokens exchanged between neighbouring frames (:func:`shifted_block`,
  :func:`patch_shift_index`; temporal patch shift, Xiang et al., ECCV 2022).
  No new weights.

Block constants follow ViT-B/16 and the X-ReID code: 12 heads of width 64, MLP
ratio 4, no bias on the query/key/value projections, GELU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CrossAttentionBlock",
    "CrossModalInteraction",
    "LongTermInteraction",
    "SelfAttentionBlock",
    "ShortTermInteraction",
    "SpatialTemporalLayout",
    "cross_modal_partners",
    "default_heads",
    "grouped_block",
    "long_term_source_index",
    "patch_shift_index",
    "shifted_block",
    "spatial_temporal_blocks",
    "temporal_channel_shift",
]

HEAD_WIDTH = 64
"""Width of one attention head in CLIP's ViT-B/16 (768 / 12)."""


def default_heads(dim: int) -> int:
    """Heads of width 64 (ViT-B/16: 768 -> 12, as X-ReID's blocks), at least one."""
    return max(1, dim // HEAD_WIDTH)


def temporal_channel_shift(x: torch.Tensor, stride: int = 1, fold_div: int = 4) -> torch.Tensor:
    """Shift channels along time, out of place: ``x`` is (B, T, ..., D).

    For frame t, channels ``[0, D/fold_div)`` come from frame ``t - stride``,
    ``[D/fold_div, 2D/fold_div)`` from frame ``t + stride`` and the rest from
    frame t itself; a frame whose source lies outside the clip keeps its own
    channels. Every output is read from the unmodified input, so the result
    does not depend on the order of the copies (the in-place overlapping copy of
    the X-ReID code reads already shifted values).
    """
    if x.dim() < 3:
        raise ValueError(f"expected (B, T, ..., D), got shape {tuple(x.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if fold_div < 2:
        raise ValueError(f"fold_div must be >= 2, got {fold_div}")
    T, D = x.shape[1], x.shape[-1]
    fold = D // fold_div
    t = torch.arange(T, device=x.device)
    back = torch.where(t - stride >= 0, t - stride, t)
    ahead = torch.where(t + stride < T, t + stride, t)
    return torch.cat(
        [
            x[..., :fold].index_select(1, back),
            x[..., fold : 2 * fold].index_select(1, ahead),
            x[..., 2 * fold :],
        ],
        dim=-1,
    )


def long_term_source_index(
    num_frames: int, stride: int = 2, edge: Literal["cyclic", "self"] = "cyclic",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Frame whose class token queries frame t in LII: ``t - stride``.

    Frames with ``t < stride`` have no such frame: ``edge="cyclic"`` wraps around
    (``(t - stride) mod T``, the rotation of the X-ReID code), ``"self"`` uses
    frame t's own class token.
    """
    if num_frames < 1 or stride < 1:
        raise ValueError(f"need num_frames >= 1 and stride >= 1, got {num_frames}, {stride}")
    t = torch.arange(num_frames, device=device)
    if edge == "cyclic":
        return (t - stride) % num_frames
    if edge == "self":
        return torch.where(t - stride >= 0, t - stride, t)
    raise ValueError(f"edge must be 'cyclic' or 'self', got {edge!r}")


def cross_modal_partners(
    labels: Sequence[int] | torch.Tensor, modalities: Sequence[int] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each clip, a clip of the same identity in the other modality.

    The r-th clip of identity y in one modality (in batch order) is paired with
    the r-th clip of y in the other modality (cycling when the other modality
    has fewer). With the cross-modal identity sampler's layout (visible clips
    then infrared clips, identities at the same positions) clip i pairs with
    clip ``i + P*K`` and back. Returns ``(partner (B,), valid (B,))``; a clip
    whose identity has no clip of the other modality gets ``valid=False`` and
    itself as partner.
    """
    labels_list = [int(v) for v in (labels.tolist() if torch.is_tensor(labels) else labels)]
    mods = [int(v) for v in (modalities.tolist() if torch.is_tensor(modalities) else modalities)]
    if len(labels_list) != len(mods):
        raise ValueError(f"labels ({len(labels_list)}) and modalities ({len(mods)}) differ in length")
    groups: dict[tuple[int, int], list[int]] = {}
    rank: list[int] = []
    for i, key in enumerate(zip(labels_list, mods)):
        members = groups.setdefault(key, [])
        rank.append(len(members))
        members.append(i)
    partner, valid = [], []
    for i, (label, mod) in enumerate(zip(labels_list, mods)):
        others = [j for (lab, m), idx in groups.items() if lab == label and m != mod for j in idx]
        if others:
            partner.append(others[rank[i] % len(others)])
            valid.append(True)
        else:
            partner.append(i)
            valid.append(False)
    device = labels.device if torch.is_tensor(labels) else None
    return (torch.tensor(partner, dtype=torch.long, device=device),
            torch.tensor(valid, dtype=torch.bool, device=device))


class _Attention(nn.Module):
    """Multi-head attention of queries (M, Lq, D) over keys/values (M, L, D)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        M, Lq, D = query.shape
        L = context.shape[1]
        h = self.heads
        q = self.q(query).view(M, Lq, h, D // h).transpose(1, 2)
        k, v = self.kv(context).view(M, L, 2, h, D // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(M, Lq, D))


def _mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


def _init_weights(module: nn.Module) -> None:
    """Truncated normal (std 0.02) linear weights, zero biases (ViT / timm)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class CrossAttentionBlock(nn.Module):
    """``q = q + Attn(LN(q), LN'(ctx)); q = q + MLP(LN''(q))``.

    ``query`` (M, Lq, D) or (M, D); ``context`` (M, N, D). Keys and values are
    both read from the normalised context (the X-ReID code normalises the keys
    only).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False):
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, qkv_bias)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio)
        _init_weights(self)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        squeeze = query.dim() == 2
        x = query.unsqueeze(1) if squeeze else query
        x = x + self.attn(self.norm_query(x), self.norm_context(context))
        x = x + self.mlp(self.norm_mlp(x))
        return x.squeeze(1) if squeeze else x


class SelfAttentionBlock(nn.Module):
    """Pre-LN transformer block ``x = x + Attn(LN(x)); x = x + MLP(LN(x))``.

    ``keep``: return only the first ``keep`` tokens; only their queries are
    computed, which gives exactly the same values as the full block followed by
    slicing.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, qkv_bias)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio)
        _init_weights(self)

    def forward(self, x: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        normed = self.norm_attn(x)
        head = x if keep is None else x[:, :keep]
        queries = normed if keep is None else normed[:, :keep]
        y = head + self.attn(queries, normed)
        return y + self.mlp(self.norm_mlp(y))


def _check_tokens(cls: torch.Tensor, patches: torch.Tensor) -> None:
    if cls.dim() != 3 or patches.dim() != 4 or cls.shape[:2] != patches.shape[:2] \
            or cls.shape[-1] != patches.shape[-1]:
        raise ValueError(
            f"expected cls (B, T, D) and patches (B, T, N, D), got {tuple(cls.shape)} and "
            f"{tuple(patches.shape)}"
        )


class ShortTermInteraction(nn.Module):
    """SII: each frame's class token attends to its temporally shifted patches.

    Patches go through :func:`temporal_channel_shift` (stride S, a quarter of the
    channels from t-S and a quarter from t+S), then ``blocks`` stacked
    :class:`CrossAttentionBlock` s (query = the frame's class token). Output
    (B, T, D): one token per frame.
    """

    def __init__(self, dim: int, heads: int, blocks: int = 2, stride: int = 1,
                 fold_div: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.stride, self.fold_div = stride, fold_div
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(dim, heads, mlp_ratio) for _ in range(blocks)
        )

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        _check_tokens(cls, patches)
        B, T, N, D = patches.shape
        context = temporal_channel_shift(patches, self.stride, self.fold_div).reshape(B * T, N, D)
        x = cls.reshape(B * T, D)
        for block in self.blocks:
            x = block(x, context)
        return x.view(B, T, D)


class LongTermInteraction(nn.Module):
    """LII: the class token of frame t-S attends to the patches of frame t.

    ``blocks`` stacked :class:`CrossAttentionBlock` s; the source frame of each t
    is :func:`long_term_source_index` (``edge`` decides the first S frames).
    Output (B, T, D): one token per frame t.
    """

    def __init__(self, dim: int, heads: int, blocks: int = 1, stride: int = 2,
                 edge: Literal["cyclic", "self"] = "cyclic", mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.stride, self.edge = stride, edge
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(dim, heads, mlp_ratio) for _ in range(blocks)
        )

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        _check_tokens(cls, patches)
        B, T, N, D = patches.shape
        source = long_term_source_index(T, self.stride, self.edge, cls.device)
        x = cls.index_select(1, source).reshape(B * T, D)
        context = patches.reshape(B * T, N, D)
        for block in self.blocks:
            x = block(x, context)
        return x.view(B, T, D)


class CrossModalInteraction(nn.Module):
    """CII: a clip-level token joins the patches of its partner clip.

    ``token`` (B, D) (the temporally pooled SII or LII output of each clip) is
    prepended to the patch tokens of every frame of clip ``partner[b]`` (the
    same identity in the other modality); one :class:`SelfAttentionBlock` runs
    on the (1 + N) tokens of each frame; the first token is kept and averaged
    over the frames -> (B, D).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.block = SelfAttentionBlock(dim, heads, mlp_ratio)

    def forward(self, token: torch.Tensor, patches: torch.Tensor,
                partner: torch.Tensor) -> torch.Tensor:
        if token.dim() != 2 or patches.dim() != 4 or token.shape[0] != partner.shape[0]:
            raise ValueError(
                f"expected token (B, D), patches (B', T, N, D) and partner (B,), got "
                f"{tuple(token.shape)}, {tuple(patches.shape)}, {tuple(partner.shape)}"
            )
        other = patches.index_select(0, partner)
        B, T, N, D = other.shape
        first = token[:, None, None, :].expand(B, T, 1, D)
        x = torch.cat([first.to(other.dtype), other], dim=2).reshape(B * T, N + 1, D)
        return self.block(x, keep=1)[:, 0].view(B, T, D).mean(1)


# --------------------------------------------------------------------------- STFL


@dataclass(frozen=True)
class SpatialTemporalLayout:
    """How STFL splits a ViT's blocks (LSMRL; every number is an assumption of
    docs/methods.md#lsmrl-lsmrl, the paper gives none).

    The first ``basic_blocks`` blocks see each frame alone; the next
    ``grouped_blocks`` see groups of ``group_size`` consecutive frames as one
    sequence; the rest run with a ``shift_share`` of the patch positions taken
    from the neighbouring frames (half from t-1, half from t+1).
    """

    basic_blocks: int = 6
    grouped_blocks: int = 3
    group_size: int = 2
    shift_share: float = 0.25

    def __post_init__(self) -> None:
        if self.basic_blocks < 0 or self.grouped_blocks < 0:
            raise ValueError(f"block counts must be >= 0, got basic_blocks={self.basic_blocks}, "
                             f"grouped_blocks={self.grouped_blocks}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if not 0.0 <= self.shift_share <= 1.0:
            raise ValueError(f"shift_share must lie in [0, 1], got {self.shift_share}")

    def parts(self, num_blocks: int) -> tuple[range, range, range]:
        """Block indices of the basic, grouped and patch-shift parts."""
        split = self.basic_blocks + self.grouped_blocks
        if split > num_blocks:
            raise ValueError(
                f"basic_blocks + grouped_blocks = {split} exceeds the {num_blocks} blocks of "
                "the backbone"
            )
        return (range(self.basic_blocks), range(self.basic_blocks, split),
                range(split, num_blocks))


def grouped_block(block: nn.Module, x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Run ``block`` on groups of ``group_size`` consecutive frames: ``x`` (B, T, L, D).

    The L tokens of the G frames of a group form one sequence of G*L tokens, so
    attention mixes exactly the frames of a group; when G does not divide T
    the last T mod G frames form a smaller group.
    """
    B, T, L, D = x.shape
    G = min(group_size, T)
    whole = T - T % G
    outputs = [block(x[:, :whole].reshape(B * (whole // G), G * L, D)).view(B, whole, L, D)]
    if whole < T:
        rest = T - whole
        outputs.append(block(x[:, whole:].reshape(B, rest * L, D)).view(B, rest, L, D))
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def patch_shift_index(
    num_frames: int, num_tokens: int, share: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The temporal patch shift as a permutation of a clip's T*L tokens (frame-major).

    ``num_tokens`` L counts the class token first (never shifted). Of the L-1
    patch positions, ``round(share * (L-1))`` evenly spread ones are shifted;
    alternately (in position order) they take the token of frame t-1 and of
    frame t+1 at the same position, cyclically in time. Returns ``(index,
    inverse)``: ``shifted = tokens[index]``, ``tokens = shifted[inverse]``.
    """
    if num_frames < 1 or num_tokens < 1:
        raise ValueError(f"need num_frames >= 1 and num_tokens >= 1, got {num_frames}, "
                         f"{num_tokens}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    T, L = int(num_frames), int(num_tokens)  # (sizes are tensors while tracing for export)
    patches = L - 1
    count = round(share * patches)
    # evenly spread positions 1..L-1: the k-th of `count` sits at floor((k + 0.5) * N / count)
    picks = [1 + int((k + 0.5) * patches / count) for k in range(count)] if count else []
    index = torch.arange(T * L).view(T, L)
    frames = torch.arange(T)
    for order, position in enumerate(picks):
        source = (frames - 1) % T if order % 2 == 0 else (frames + 1) % T
        index[:, position] = source * L + position
    index = index.reshape(-1)
    return index.to(device), torch.argsort(index).to(device)


def shifted_block(block: nn.Module, x: torch.Tensor, index: torch.Tensor,
                  inverse: torch.Tensor) -> torch.Tensor:
    """Run ``block`` frame by frame on patch-shifted tokens and shift them back.

    ``x`` (B, T, L, D). Each frame's sequence holds some tokens of its
    neighbours during the block (attention mixes them); afterwards every token
    returns to its own frame. Since a transformer block's LayerNorms and MLP
    act token by token, this equals shifting the attention input and unshifting
    its output before the residual sum (the temporal patch shift).
    """
    B, T, L, D = x.shape
    y = x.reshape(B, T * L, D).index_select(1, index).view(B * T, L, D)
    return block(y).view(B, T * L, D).index_select(1, inverse).view(B, T, L, D)


def spatial_temporal_blocks(
    blocks: Sequence[nn.Module], tokens: torch.Tensor, num_frames: int,
    layout: SpatialTemporalLayout, return_last_input: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """STFL: embedded frame tokens (B*T, L, D), frames of a clip consecutive ->
    final-block tokens (B*T, L, D), through ``blocks`` split by ``layout``.
    ``return_last_input``: also return the input of the last block (B*T, L, D),
    first (VLD's losses read its class token)."""
    BT, L, D = tokens.shape
    if num_frames < 1 or BT % num_frames:
        raise ValueError(f"{BT} frames do not form clips of {num_frames}")
    basic, grouped, shifted = layout.parts(len(blocks))
    last = len(blocks) - 1
    x = tokens
    kept = x
    for i in basic:
        kept = x if i == last else kept
        x = blocks[i](x)
    x = x.view(BT // num_frames, num_frames, L, D)
    for i in grouped:
        kept = x.reshape(BT, L, D) if i == last else kept
        x = grouped_block(blocks[i], x, layout.group_size)
    if len(shifted):
        index, inverse = patch_shift_index(num_frames, L, layout.shift_share, x.device)
        for i in shifted:
            kept = x.reshape(BT, L, D) if i == last else kept
            x = shifted_block(blocks[i], x, index, inverse)
    if return_last_input:
        return kept, x.reshape(BT, L, D)
    return x.reshape(BT, L, D)
