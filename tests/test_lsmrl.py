"""LSMRL: STFL (off = plain encoder, grouped attention, patch shift), semantic
diffusion, cross-modal interaction, modality-level losses, gradients, a short run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _method_helpers import (
    assert_gradients_reach_exactly,
    prepare_first_stage,
    synthetic_vcm,
    tiny_video_config,
)
from torch import nn

from vireid.config import ConfigError, load_config
from vireid.losses import center_text_contrastive_loss, cross_modal_center_loss
from vireid.losses.modality import modality_centers
from vireid.models.factory import build_clip
from vireid.models.temporal import (
    SpatialTemporalLayout,
    grouped_block,
    patch_shift_index,
    shifted_block,
    spatial_temporal_blocks,
)
from vireid.runner import build

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "lsmrl_tiny.yaml"


# --------------------------------------------------------------------------- STFL


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_clip("tiny-vit", (64, 32), patch_stride=8).visual.eval()


def _frames(vit, B=2, T=5, seed=1):
    torch.manual_seed(seed)
    return torch.randn(B * T, 3, *vit.image_size)


@pytest.mark.parametrize("layout", [
    SpatialTemporalLayout(basic_blocks=2, grouped_blocks=0),               # all basic
    SpatialTemporalLayout(basic_blocks=0, grouped_blocks=2, group_size=1),  # groups of one
    SpatialTemporalLayout(basic_blocks=0, grouped_blocks=0, shift_share=0.0),  # empty shift
    SpatialTemporalLayout(basic_blocks=1, grouped_blocks=0, shift_share=0.0),
])
def test_stfl_switched_off_equals_the_plain_frame_encoder_exactly(vit, layout):
    frames = _frames(vit)
    with torch.no_grad():
        plain = vit(frames).tokens
        tokens = spatial_temporal_blocks(vit.blocks, vit.embed(frames), 5, layout)
        ours = vit.ln_post(tokens)
    assert torch.equal(ours, plain)


def test_stfl_on_differs_from_the_plain_encoder(vit):
    frames = _frames(vit)
    with torch.no_grad():
        plain = vit(frames).tokens
        for layout in (SpatialTemporalLayout(0, 1, 2, 0.0), SpatialTemporalLayout(1, 0, 2, 0.5)):
            out = vit.ln_post(spatial_temporal_blocks(vit.blocks, vit.embed(frames), 5, layout))
            assert not torch.allclose(out, plain, atol=1e-4)


def test_layout_checks_the_block_count():
    with pytest.raises(ValueError, match="exceeds the 2 blocks"):
        SpatialTemporalLayout(2, 1).parts(2)
    assert SpatialTemporalLayout(6, 3).parts(12) == (range(0, 6), range(6, 9), range(9, 12))
    with pytest.raises(ValueError, match="group_size"):
        SpatialTemporalLayout(group_size=0)


@pytest.mark.parametrize(("T", "G", "groups"), [
    (5, 2, [{0, 1}, {2, 3}, {4}]),
    (6, 3, [{0, 1, 2}, {3, 4, 5}]),
    (4, 2, [{0, 1}, {2, 3}]),
])
def test_grouped_attention_mixes_exactly_the_frames_of_a_group(vit, T, G, groups):
    block = vit.blocks[0]
    torch.manual_seed(2)
    x = torch.randn(2, T, 7, vit.width)
    with torch.no_grad():
        base = grouped_block(block, x, G)
        for j in range(T):
            moved = x.clone()
            moved[0, j] += 1.0
            out = grouped_block(block, moved, G)
            changed = {t for t in range(T) if not torch.equal(out[0, t], base[0, t])}
            assert changed == next(g for g in groups if j in g), (j, changed)
            assert torch.equal(out[1], base[1])  # the other clip is untouched


def test_patch_shift_is_a_permutation_of_neighbouring_frames():
    T, L = 4, 1 + 8  # class token + 8 patches
    index, inverse = patch_shift_index(T, L, share=0.5)
    assert torch.equal(index.sort().values, torch.arange(T * L))
    assert torch.equal(index[inverse], torch.arange(T * L))
    source = index.view(T, L)
    frame, position = source // L, source % L
    assert torch.equal(position, torch.arange(L).expand(T, L))  # same spatial position
    shifted = [p for p in range(L) if not torch.equal(frame[:, p], torch.arange(T))]
    assert 0 not in shifted and len(shifted) == 4  # class token stays; 0.5 * 8 positions
    back, ahead = shifted[0::2], shifted[1::2]
    for p in back:
        assert frame[:, p].tolist() == [3, 0, 1, 2]  # from t-1, cyclic
    for p in ahead:
        assert frame[:, p].tolist() == [1, 2, 3, 0]  # from t+1, cyclic
    none, _ = patch_shift_index(T, L, share=0.0)
    assert torch.equal(none, torch.arange(T * L))


def test_patch_shift_is_undone_after_the_block(vit):
    T, L = 4, 1 + vit.num_patches
    index, inverse = patch_shift_index(T, L, share=0.25)
    torch.manual_seed(3)
    x = torch.randn(2, T, L, vit.width)
    per_token = nn.Sequential(nn.LayerNorm(vit.width), nn.Linear(vit.width, vit.width))
    block = vit.blocks[1]
    with torch.no_grad():
        # a block acting token by token: shifting and unshifting changes nothing
        assert torch.equal(shifted_block(per_token, x, index, inverse), per_token(x))
        # a real block = TPS written out: shift the attention input, unshift its
        # output, residual sum in the token's own frame, then the MLP
        def shift(t):
            return t.reshape(2, T * L, -1).index_select(1, index).view(2 * T, L, -1)

        def unshift(t):
            return t.reshape(2, T * L, -1).index_select(1, inverse).view(2, T, L, -1)

        normed = shift(block.ln_1(x))
        attended = unshift(block.attn(normed, normed, normed, need_weights=False)[0])
        y = x + block.ls_1(attended)
        expected = y + block.ls_2(block.mlp(block.ln_2(y)))
        torch.testing.assert_close(shifted_block(block, x, index, inverse), expected,
                                   atol=1e-5, rtol=1e-5)
        # the attention input of frame t holds frame t-1's token at the positions
        # shifted backwards (and its own elsewhere)
        seen = {}
        handle = block.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
        shifted_block(block, x, index, inverse)
        handle.remove()
        inputs = seen["x"].view(2, T, L, -1)
        back = [p for p in range(L) if int(index.view(T, L)[1, p]) // L == 0]
        assert back and torch.equal(inputs[:, 1, back], x[:, 0, back])
        kept = [p for p in range(L) if int(index.view(T, L)[1, p]) // L == 1]
        assert 0 in kept and torch.equal(inputs[:, 1, kept], x[:, 1, kept])


# --------------------------------------------------------------------------- losses


def test_modality_centers_and_center_alignment_by_hand():
    feats = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    mods = torch.tensor([0, 1, 0, 1, 0])  # identity 2: visible only
    centers, center_labels, center_mods = modality_centers(feats, labels, mods)
    assert center_labels.tolist() == [0, 0, 1, 1, 2] and center_mods.tolist() == [0, 1, 0, 1, 0]
    assert torch.allclose(centers[0], torch.tensor([1.0, 0.0]))
    # identity 0: (1,0) vs (0,1) -> 2; identity 1: (0,1) vs (1,0) -> 2; identity 2 ignored
    assert torch.isclose(cross_modal_center_loss(feats, labels, mods), torch.tensor(2.0))
    # two samples per centre, normalised before averaging
    feats = torch.tensor([[1.0, 0.0], [0.0, 4.0], [1.0, 0.0], [1.0, 0.0]])
    labels, mods = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 1, 1])
    expected = torch.tensor([0.5, 0.5]) - torch.tensor([1.0, 0.0])
    assert torch.isclose(cross_modal_center_loss(feats, labels, mods), expected.pow(2).sum())
    # no identity in both modalities: zero, still differentiable
    alone = torch.randn(2, 3, requires_grad=True)
    loss = cross_modal_center_loss(alone, torch.tensor([0, 1]), torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0 and alone.grad is not None


def test_center_text_contrastive_by_hand():
    feats = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    labels, mods = torch.tensor([0, 0]), torch.tensor([0, 1])
    text = torch.tensor([[1.0, 1.0], [-2.0, 0.0]])  # identity 0, identity 1
    t = 0.5
    loss = center_text_contrastive_loss(feats, labels, mods, text, temperature=t)
    s = 1 / 2 ** 0.5
    # visible centre (1,0): cos with text0 = s, with text1 = -1; infrared (0,1): s, 0
    expected = (F.cross_entropy(torch.tensor([[s / t, -1 / t]]), torch.tensor([0]))
                + F.cross_entropy(torch.tensor([[s / t, 0.0]]), torch.tensor([0]))) / 2
    assert torch.isclose(loss, expected)
    with pytest.raises(ValueError, match="temperature"):
        center_text_contrastive_loss(feats, labels, mods, text, temperature=0)


# --------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def vcm(tmp_path_factory):
    return synthetic_vcm(tmp_path_factory.mktemp("data"))


def _config(vcm, *extra):
    return tiny_video_config(EXAMPLE, vcm, *extra)


_prepare = prepare_first_stage


@pytest.mark.parametrize("refresh", ["step", "epoch"])
def test_gradients_reach_exactly_the_trained_parameters(vcm, refresh):
    data, method = build(_config(vcm, f"method.text_refresh={refresh}",
                                 "method.sd_zero_init=false"))
    stage, groups, trained = _prepare(method)
    assert set(groups) == {"base", "prompt_classifier_bias"}  # VLD's x25 rule by name
    names = {id(p): n for n, p in method.named_parameters()}
    boosted = {names[id(p)] for p in groups["prompt_classifier_bias"]}
    assert {"prompts.ctx", "sd.attn.out_proj.bias", "classifier.bn.bias"} <= boosted
    assert {names[id(p)] for p in groups["base"]} >= {"sd.attn.out_proj.weight",
                                                      "cmi.attn.q.weight"}
    assert not any(id(p) in trained for p in method.clip.text.parameters())
    batch = next(iter(stage.loader))
    B = len(batch["label"])
    assert batch["image"].shape[:2] == (B, 3) and B == 2 * 2 * 2
    out = stage.step(batch)
    assert set(out) == {"loss", "id", "triplet", "i2t", "center", "center_text"}
    assert "sta_id" not in out and not hasattr(method, "prompt_tokens")  # STFL replaces STP
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert_gradients_reach_exactly(method, trained)
    rows = method.prompts.ctx.grad[0].abs().sum((1, 2)) > 0
    if refresh == "step":  # every identity's prompt is in the image->text softmax
        assert bool(rows.all())
    else:  # only the batch's identities carry gradient
        assert rows.nonzero().flatten().tolist() == sorted(set(batch["label"].tolist()))


def test_text_bank_follows_the_prompts_before_inference(vcm, tmp_path):
    data, method = build(_config(vcm))
    stage, _, _ = _prepare(method)
    out = stage.step(next(iter(stage.loader)))
    out["loss"].backward()
    with torch.no_grad():
        method.prompts.ctx.add_(0.5 * method.prompts.ctx.grad.sign())  # an optimiser step
    method.eval()
    with torch.no_grad():
        expected = method.text_features()
    torch.testing.assert_close(method.text_bank, expected)
    # a loaded model recomputes its bank from the loaded prompts
    state = {k: v.clone() for k, v in method.state_dict().items()}
    assert {"prompts.ctx", "text_bank", "sd.attn.out_proj.weight", "cmi.attn.q.weight"} <= set(state)
    state["text_bank"].zero_()
    _, other = build(_config(vcm))
    other.load_state_dict(state)
    other.eval()
    torch.testing.assert_close(other.text_bank, expected)


def test_semantic_diffusion_needs_no_label_and_reads_the_bank(vcm):
    data, method = build(_config(vcm, "method.sd_zero_init=false"))
    method.eval()
    batch = next(iter(method.test_loader(data.splits[0].query, 4)))
    clips = batch["image"]
    with torch.no_grad():
        feats = method._features_once(clips, None)  # images only: no label, no modality
        method.text_bank.mul_(-1.0)
        flipped_bank = method._features_once(clips, None)
    assert feats.shape == (len(clips), method.clip.visual.width)  # VLD's feature without STA
    assert not torch.allclose(feats, flipped_bank)
    # zero-initialised SD starts as the identity
    data, method = build(_config(vcm))
    tokens = torch.randn(5, method.clip.visual.width)
    with torch.no_grad():
        assert torch.equal(method.sd(tokens, torch.randn(7, method.clip.visual.embed_dim)), tokens)


def test_cmi_pairs_each_clip_with_its_identity_in_the_other_modality(vcm):
    data, method = build(_config(vcm, "data.identities_per_batch=2",
                                 "data.instances_per_identity=2"))
    stage, _, _ = _prepare(method)
    batch = next(iter(stage.loader))
    labels, mods = batch["label"], batch["modality"]
    half = len(labels) // 2  # visible clips, then infrared clips at the same positions
    assert mods[:half].eq(0).all() and mods[half:].eq(1).all()
    assert torch.equal(labels[:half], labels[half:])
    method.eval()
    torch.manual_seed(4)
    frames = torch.randn(len(labels), 3, method.clip.visual.width)
    from vireid.models.temporal import cross_modal_partners

    partner, valid = cross_modal_partners(labels, mods)
    assert valid.all() and torch.equal(partner, torch.cat([torch.arange(half) + half,
                                                           torch.arange(half)]))
    with torch.no_grad():
        base = method.interact(frames, partner)
        for j in range(len(labels)):
            moved = frames.clone()
            moved[j] += 1.0
            out = method.interact(moved, partner)
            changed = {i for i in range(len(labels)) if not torch.equal(out[i], base[i])}
            assert changed == {j, int(partner[j])}, (j, changed)
        # inference: each clip attends to itself, or the block is skipped
        alone = method.interact(frames)
        assert torch.allclose(alone[0], method.cmi(frames[:1], frames[:1])[0])
        method.options.cmi_inference = "skip"
        assert torch.equal(method.interact(frames), frames)


def test_switches_build_the_parts_they_name(vcm):
    data, method = build(_config(vcm, "method.sd=false", "method.cmi=false",
                                 "method.center_weight=0", "method.center_text_weight=0",
                                 "method.stfl=false"))
    names = {n for n, _ in method.named_modules()}
    assert "sd" not in names and "cmi" not in names
    stage, _, _ = _prepare(method)
    batch = next(iter(stage.loader))
    out = stage.step(batch)
    assert set(out) == {"loss", "id", "triplet", "i2t"}
    method.eval()
    clips = batch["image"][:2]
    with torch.no_grad():  # all off: the mean of the plain frame encoder's class tokens
        f = method.encode(clips).cls
        plain = method.clip.visual(clips.flatten(0, 1)).cls.view(2, 3, -1).mean(1)
    torch.testing.assert_close(f, plain)


def test_bad_options_name_the_key(vcm):
    with pytest.raises(ConfigError, match="method.grouped_blocks"):
        build(_config(vcm, "method.basic_blocks=2", "method.grouped_blocks=1"))
    with pytest.raises(ConfigError, match="method.heads"):
        build(_config(vcm, "method.heads=3"))
    with pytest.raises(ConfigError, match="model.backbone"):
        build(_config(vcm, "model.backbone=tiny-rn50"))
    with pytest.raises(ConfigError, match="shift_share"):
        _config(vcm, "method.shift_share=1.5")
    with pytest.raises(ConfigError, match="method.stp"):
        build(_config(vcm, "method.stp=true"))


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    for dataset, batch in (("vcm", (4, 4)), ("bupt", (8, 2))):
        cfg = load_config(root / dataset / "lsmrl_vitb16.yaml")
        vld = load_config(root / dataset / "vld_vitb16.yaml")
        assert cfg.method.name == "lsmrl" and cfg.data.video.num_frames == 6
        assert (cfg.data.identities_per_batch, cfg.data.instances_per_identity) == batch
        # everything but the method section is VLD's recipe
        assert cfg.data == vld.data and cfg.train == vld.train and cfg.seed == vld.seed
        shared = set(type(vld.method).model_fields) - {"name", "stp"}
        assert {k: getattr(cfg.method, k) for k in shared} == {k: getattr(vld.method, k)
                                                               for k in shared}
        assert cfg.method.stfl and cfg.method.sd and cfg.method.cmi and not cfg.method.stp


def test_switched_off_lsmrl_is_vld(vcm):
    """STFL, SD, CMI and the modality losses off, VLD's prompting on: LSMRL's features,
    losses and gradients equal VLD's on the same weights and batch."""
    from vireid.config import load_config as load

    vld_cfg = load(EXAMPLE.with_name("vld_tiny.yaml"),
                   [f"data.root={vcm}", "data.identities_per_batch=2", "data.video.num_frames=3"])
    _, vld = build(vld_cfg)
    _, lsmrl = build(_config(vcm, "method.stfl=false", "method.stp=true", "method.sd=false",
                             "method.cmi=false", "method.center_weight=0",
                             "method.center_text_weight=0", "method.sth_start_block=0"))
    missing, unexpected = lsmrl.load_state_dict(vld.state_dict(), strict=False)
    assert missing == ["text_bank"] and unexpected == []
    stage, groups, _ = _prepare(vld)
    other_groups = {g.name: [n for n, p in lsmrl.named_parameters() if any(p is q for q in g.params)]
                    for g in lsmrl.stages()[0].param_groups()}
    names = {id(p): n for n, p in vld.named_parameters()}
    assert other_groups == {k: [names[id(p)] for p in v] for k, v in groups.items()}
    _prepare(lsmrl)
    batch = next(iter(stage.loader))
    out_vld, out_lsmrl = vld.training_losses(batch), lsmrl.training_losses(batch)
    assert set(out_vld) == set(out_lsmrl) == {"loss", "id", "i2t", "triplet", "sta_id",
                                               "sta_triplet"}
    for key in out_vld:
        torch.testing.assert_close(out_lsmrl[key], out_vld[key], atol=0, rtol=0)
    out_vld["loss"].backward()
    out_lsmrl["loss"].backward()
    theirs = dict(vld.named_parameters())
    for name, p in lsmrl.named_parameters():
        assert (p.grad is None) == (theirs[name].grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, theirs[name].grad, atol=0, rtol=0)
    vld.eval()
    lsmrl.eval()
    clips = batch["image"][:2]
    with torch.no_grad():
        torch.testing.assert_close(lsmrl._features_once(clips, None), vld._features_once(clips, None),
                                   atol=0, rtol=0)
