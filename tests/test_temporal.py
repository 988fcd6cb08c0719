"""Temporal and cross-modal interaction pieces (models/temporal.py): hand-made values,
index rules, which inputs each output depends on, agreement with torch's attention."""

import pytest
import torch
from torch import nn

from vireid.models.temporal import (
    CrossAttentionBlock,
    CrossModalInteraction,
    LongTermInteraction,
    SelfAttentionBlock,
    ShortTermInteraction,
    cross_modal_partners,
    long_term_source_index,
    temporal_channel_shift,
)


def _clip(T=3, D=8):
    """x[0, t, 0, c] = 10 * t + c."""
    return (10 * torch.arange(T)[:, None] + torch.arange(D)[None, :]).float().view(1, T, 1, D)


def test_channel_shift_matches_a_hand_written_tensor_edges_included():
    x = _clip(T=3, D=8)  # fold = 2: channels 0-1 from t-1, 2-3 from t+1, 4-7 own
    before = x.clone()
    out = temporal_channel_shift(x, stride=1, fold_div=4)
    expected = torch.tensor([
        [0, 1, 12, 13, 4, 5, 6, 7],        # t=0: no t-1 -> own 0-1; 2-3 from t=1
        [0, 1, 22, 23, 14, 15, 16, 17],    # t=1: 0-1 from t=0, 2-3 from t=2
        [10, 11, 22, 23, 24, 25, 26, 27],  # t=2: 0-1 from t=1; no t+1 -> own 2-3
    ]).float().view(1, 3, 1, 8)
    assert torch.equal(out, expected)
    assert torch.equal(x, before)  # out of place


def test_channel_shift_with_stride_two():
    x = _clip(T=4, D=4)  # fold = 1: channel 0 from t-2, channel 1 from t+2
    out = temporal_channel_shift(x, stride=2, fold_div=4)[0, :, 0]
    expected = torch.tensor([
        [0, 21, 2, 3],
        [10, 31, 12, 13],
        [0, 21, 22, 23],
        [10, 31, 32, 33],
    ]).float()
    assert torch.equal(out, expected)


def test_long_term_source_frames_are_stride_apart():
    assert long_term_source_index(5, 2, "cyclic").tolist() == [3, 4, 0, 1, 2]
    assert long_term_source_index(5, 2, "self").tolist() == [0, 1, 0, 1, 2]
    assert long_term_source_index(2, 2, "cyclic").tolist() == [0, 1]
    with pytest.raises(ValueError):
        long_term_source_index(5, 2, "wrap")


def _changed_frames(fn, cls, patches, which, frame):
    base = fn(cls, patches)
    cls2, patches2 = cls.clone(), patches.clone()
    target = cls2 if which == "cls" else patches2
    target[:, frame] += torch.randn_like(target[:, frame])  # not a constant: LayerNorm removes it
    diff = (fn(cls2, patches2) - base).abs().amax(dim=(0, 2))
    return set(torch.nonzero(diff > 1e-6).flatten().tolist())


def test_lii_pairs_the_class_token_of_frame_t_minus_s_with_the_patches_of_frame_t():
    torch.manual_seed(0)
    lii = LongTermInteraction(16, heads=2, blocks=1, stride=2).eval()
    cls, patches = torch.randn(2, 5, 16), torch.randn(2, 5, 6, 16)
    with torch.no_grad():
        for j in range(5):
            # the class token of frame j feeds exactly output frame (j + 2) mod 5
            assert _changed_frames(lii, cls, patches, "cls", j) == {(j + 2) % 5}
            # the patches of frame j feed exactly output frame j
            assert _changed_frames(lii, cls, patches, "patches", j) == {j}


def test_sii_reads_the_neighbouring_frames_patches():
    torch.manual_seed(0)
    sii = ShortTermInteraction(16, heads=2, blocks=2, stride=1).eval()
    cls, patches = torch.randn(1, 4, 16), torch.randn(1, 4, 6, 16)
    with torch.no_grad():
        assert _changed_frames(sii, cls, patches, "cls", 1) == {1}
        assert _changed_frames(sii, cls, patches, "patches", 0) == {0, 1}
        assert _changed_frames(sii, cls, patches, "patches", 2) == {1, 2, 3}


def test_cross_attention_block_agrees_with_torch_multihead_attention():
    torch.manual_seed(0)
    D, h = 16, 4
    block = CrossAttentionBlock(D, h).eval()
    for m in block.modules():  # non-trivial norms
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    mha = nn.MultiheadAttention(D, h, bias=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([block.attn.q.weight, block.attn.kv.weight]))
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(block.attn.proj.weight)
        mha.out_proj.bias.copy_(block.attn.proj.bias)
    q, ctx = torch.randn(3, 1, D), torch.randn(3, 7, D)
    with torch.no_grad():
        kv = block.norm_context(ctx)
        x = q + mha(block.norm_query(q), kv, kv, need_weights=False)[0]
        expected = x + block.mlp(block.norm_mlp(x))
        assert torch.allclose(block(q, ctx), expected, atol=1e-5)
        assert torch.allclose(block(q[:, 0], ctx), expected[:, 0], atol=1e-5)


def test_self_attention_block_keep_equals_the_full_block_sliced():
    torch.manual_seed(0)
    block = SelfAttentionBlock(16, 2).eval()
    x = torch.randn(3, 9, 16)
    with torch.no_grad():
        assert torch.allclose(block(x, keep=1), block(x)[:, :1], atol=1e-6)


def test_partners_follow_the_cross_modal_sampler_layout():
    # P = 2 identities x K = 2 clips: [vis a, vis a, vis b, vis b, ir a, ir a, ir b, ir b]
    labels = torch.tensor([5, 5, 9, 9, 5, 5, 9, 9])
    mods = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    partner, valid = cross_modal_partners(labels, mods)
    assert partner.tolist() == [4, 5, 6, 7, 0, 1, 2, 3] and valid.all()
    # any order: partner has the same identity, the other modality
    perm = torch.tensor([3, 6, 0, 5, 1, 7, 2, 4])
    partner, valid = cross_modal_partners(labels[perm], mods[perm])
    assert valid.all()
    assert torch.equal(labels[perm][partner], labels[perm])
    assert (mods[perm][partner] != mods[perm]).all()
    # an identity seen in one modality only has no partner
    partner, valid = cross_modal_partners(torch.tensor([1, 2, 1]), torch.tensor([0, 0, 1]))
    assert valid.tolist() == [True, False, True] and partner.tolist() == [2, 1, 0]


def test_cii_reads_the_partner_clip_only():
    torch.manual_seed(0)
    cii = CrossModalInteraction(16, 2).eval()
    token, patches = torch.randn(4, 16), torch.randn(4, 3, 5, 16)
    partner = torch.tensor([2, 3, 0, 1])
    with torch.no_grad():
        base = cii(token, patches, partner)
        for clip in range(4):
            moved = patches.clone()
            moved[clip] += torch.randn_like(moved[clip])
            changed = (cii(token, moved, partner) - base).abs().amax(1) > 1e-6
            assert torch.nonzero(changed).flatten().tolist() == [int((partner == clip).nonzero())]
        # the output of clip i is the block run on [token_i ; patches of its partner]
        x = torch.cat([token[0].expand(3, 1, 16), patches[2]], dim=1)
        assert torch.allclose(base[0], cii.block(x)[:, 0].mean(0), atol=1e-5)
