"""VLD: STH prompt exchange, STA, the code's losses and weights on hand-computed cases,
gradients, learning-rate groups and schedule, augmentation, configs, real-size model."""

from __future__ import annotations

import math
import time
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

from vireid.config import ConfigError, load_config
from vireid.data.transforms import Compose
from vireid.data.types import DataSpec, Modality
from vireid.engine.optim import build_optimizer
from vireid.engine.schedulers import lr_at
from vireid.losses import weighted_regularized_triplet_loss
from vireid.methods import build_method
from vireid.methods.vld import ClipFeatures, transpose_prompts
from vireid.runner import build

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "examples" / "vld_tiny.yaml"


@pytest.fixture(scope="module")
def vcm(tmp_path_factory):
    return synthetic_vcm(tmp_path_factory.mktemp("data"))


def _config(vcm, *extra):
    return tiny_video_config(EXAMPLE, vcm, *extra)


# --------------------------------------------------------------------------- STH / STA


def test_sth_exchange_transposes_each_clips_frame_by_slot_prompts():
    T, L, D = 3, 5, 1  # 2 visual tokens + 3 prompt slots per frame
    x = torch.zeros(2 * T, L, D)
    for b in range(2):
        for f in range(T):
            x[b * T + f, 0] = -1 - f  # class token
            x[b * T + f, 1] = 100 * b + f  # a patch
            for s in range(T):
                x[b * T + f, 2 + s] = 100 * b + 10 * f + s  # P[f, s] written as "fs"
    y = transpose_prompts(x, T)
    assert y[:, :2].equal(x[:, :2])  # class and patch tokens untouched
    assert y[0:3, 2:, 0].tolist() == [[0, 10, 20], [1, 11, 21], [2, 12, 22]]
    assert y[3:6, 2:, 0].tolist() == [[100, 110, 120], [101, 111, 121], [102, 112, 122]]
    assert transpose_prompts(y, T).equal(x)  # an involution


def test_trunk_appends_prompts_and_swaps_before_every_later_block(vcm):
    _, method = build(_config(vcm, "method.sth_start_block=0"))
    method.eval()
    visual, T = method.clip.visual, 3
    torch.manual_seed(0)
    clips = torch.randn(2, T, 3, *visual.image_size)
    with torch.no_grad():
        x = visual.embed(clips.flatten(0, 1))
        last, out = method._trunk(x, T)
        # written out for 2 blocks, start 0: append P[t], block 0, transpose, block 1
        prompts = method.prompt_tokens.repeat(2, 1, 1)
        y = visual.blocks[0](torch.cat([x, prompts], dim=1))
        y = transpose_prompts(y, T)
        assert last.equal(y)
        assert out.equal(visual.blocks[1](y))
        assert out.shape == (2 * T, 1 + visual.num_patches + T, visual.width)
        # frames exchange information only through the prompts
        moved = clips.clone()
        moved[0, 0] += 1.0
        out2 = method._trunk(visual.embed(moved.flatten(0, 1)), T)[1]
        assert not torch.allclose(out2[1, 0], out[1, 0])  # frame 1 of clip 0 sees frame 0
        assert out2[T:].equal(out[T:])  # the other clip does not
    _, plain = build(_config(vcm, "method.stp=false"))
    plain.eval()
    with torch.no_grad():
        base = plain._trunk(visual.embed(clips.flatten(0, 1)), T)[1]
        moved_out = plain._trunk(visual.embed(moved.flatten(0, 1)), T)[1]
    assert moved_out[1].equal(base[1]) and not hasattr(plain, "prompt_tokens")


def test_sta_attends_from_class_tokens_to_the_clips_prompt_tokens(vcm):
    _, method = build(_config(vcm))
    method.eval()
    T, D = 3, method.clip.visual.width
    torch.manual_seed(1)
    out = torch.randn(2 * T, 4 + T, D)
    mha, ln = method.sta, method.clip.visual.ln_post
    with torch.no_grad():
        got = method._aggregate(out, 2, T)
        for b in range(2):
            frames = out[b * T:(b + 1) * T]
            q = frames[:, 0] @ mha.in_proj_weight[:D].T + mha.in_proj_bias[:D]
            kv = frames[:, -T:].reshape(T * T, D)
            k = kv @ mha.in_proj_weight[D:2 * D].T + mha.in_proj_bias[D:2 * D]
            v = kv @ mha.in_proj_weight[2 * D:].T + mha.in_proj_bias[2 * D:]
            h = mha.num_heads
            q, k, v = (t.view(-1, h, D // h).transpose(0, 1) for t in (q, k, v))
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D // h), -1) @ v
            att = att.transpose(0, 1).reshape(T, D) @ mha.out_proj.weight.T + mha.out_proj.bias
            torch.testing.assert_close(got[b], ln(att).mean(0), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- losses


def test_official_wrt_normaliser_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    near = torch.tensor([[0.0], [1.0], [12.0], [13.0]])
    far = torch.tensor([[0.0], [1.0], [30.0], [31.0]])
    # computed from our reading of the code's TripletLoss_WRT (+1e-6, no negative shift)
    assert weighted_regularized_triplet_loss(near, labels, normalizer="official").item() == \
        pytest.approx(3.924037e-05, rel=1e-4)
    assert weighted_regularized_triplet_loss(far, labels, normalizer="official").item() == \
        pytest.approx(1.1240405, rel=1e-5)
    assert weighted_regularized_triplet_loss(near, labels).item() == pytest.approx(1.813296e-05,
                                                                                   rel=1e-4)
    # by hand for [0, 1, 12, 13], anchor by anchor (self-distance sqrt(1e-12) = 1e-6)
    xs, ys = [0.0, 1.0, 12.0, 13.0], [0, 0, 1, 1]
    total = 0.0
    for i in range(4):
        d = [max(abs(xs[i] - xs[j]), 1e-6) for j in range(4)]
        pos = [d[j] for j in range(4) if ys[j] == ys[i]]
        neg = [d[j] for j in range(4) if ys[j] != ys[i]]
        top = max(pos)
        w_pos = [math.exp(v - top) for v in pos]
        w_neg = [math.exp(-v) for v in neg]  # no shift: the row maximum of -d * mask is 0
        fp = sum(v * w for v, w in zip(pos, w_pos)) / (sum(w_pos) + 1e-6)
        cn = sum(v * w for v, w in zip(neg, w_neg)) / (sum(w_neg) + 1e-6)
        total += math.log1p(math.exp(fp - cn)) / 4
    got = weighted_regularized_triplet_loss(near, labels, normalizer="official").item()
    assert got == pytest.approx(total, rel=1e-3)


def test_vld_losses_are_the_codes_weighted_sum(vcm):
    _, method = build(_config(vcm))
    method.train()
    torch.manual_seed(2)
    B, D, d, C = 4, method.clip.visual.width, method.clip.visual.embed_dim, method.spec.num_classes
    f = ClipFeatures(last=torch.randn(B, D), cls=torch.randn(B, D), proj=torch.randn(B, d),
                     sta=torch.randn(B, D))
    labels = torch.tensor([0, 1, 0, 1])
    text = torch.randn(C, d)
    out = method.vld_losses(f, labels, text)

    def wrt(x):
        return weighted_regularized_triplet_loss(x, labels, normalizer="official")

    with torch.no_grad():
        cls_logits = method.classifier.fc(F.batch_norm(f.cls, None, None, method.classifier.bn.weight,
                                                       method.classifier.bn.bias, training=True))
        proj_logits = method.classifier_proj.fc(F.batch_norm(
            f.proj, None, None, method.classifier_proj.bn.weight, method.classifier_proj.bn.bias,
            training=True))
        sta_logits = method.classifier_sta.fc(F.batch_norm(
            f.sta, None, None, method.classifier_sta.bn.weight, method.classifier_sta.bn.bias,
            training=True))
    expected = (F.cross_entropy(cls_logits, labels) + F.cross_entropy(proj_logits, labels)
                + 0.08 * F.cross_entropy(f.proj @ text.T, labels)
                + 0.4 * F.cross_entropy(sta_logits, labels)
                + wrt(f.last) + wrt(f.cls) + wrt(f.proj) + wrt(f.sta))
    torch.testing.assert_close(out["loss"].detach(), expected, atol=1e-5, rtol=1e-5)
    assert set(out) == {"loss", "id", "i2t", "triplet", "sta_id", "sta_triplet"}


def test_image_to_text_logits_are_raw_dot_products(vcm):
    _, method = build(_config(vcm, "method.stp=false"))
    d = method.clip.visual.embed_dim
    proj = torch.zeros(1, d)
    proj[0, 0] = 1.0
    text = torch.zeros(method.spec.num_classes, d)
    text[0, 0], text[1, 1] = 2.0, 1.0  # logits: 2 for identity 0, 0 for all others
    f = ClipFeatures(last=torch.zeros(2, 1), cls=torch.zeros(2, 1), proj=proj, sta=None)
    C = method.spec.num_classes
    i2t = F.cross_entropy(f.proj @ text.T, torch.tensor([0]))
    assert i2t.item() == pytest.approx(math.log(math.exp(2) + C - 1) - 2, rel=1e-6)


# --------------------------------------------------------------------------- the method


def test_gradients_reach_exactly_the_trained_parameters(vcm):
    _, method = build(_config(vcm))
    stage, groups, trained = prepare_first_stage(method)
    assert set(groups) == {"base", "prompt_classifier_bias"}
    names = {id(p): n for n, p in method.named_parameters()}
    boosted = {names[id(p)] for p in groups["prompt_classifier_bias"]}
    base = {names[id(p)] for p in groups["base"]}
    assert "prompts.ctx" in boosted and "prompt_tokens" in base
    assert {"sta.in_proj_bias", "sta.out_proj.bias", "classifier.bn.bias", "classifier.fc.weight",
            "classifier_sta.bn.weight", "clip.visual.ln_post.bias"} <= boosted
    assert {"sta.in_proj_weight", "clip.visual.proj", "clip.visual.conv1.weight",
            "clip.visual.positional_embedding", "clip.visual.ln_post.weight"} <= base
    assert all("bias" not in n for n in base)
    assert not any(id(p) in trained for p in method.clip.text.parameters())
    assert id(method.clip.logit_scale) not in trained
    batch = next(iter(stage.loader))
    assert batch["image"].shape[:2] == (8, 3)
    out = stage.step(batch)
    assert set(out) == {"loss", "id", "i2t", "triplet", "sta_id", "sta_triplet"}
    out["loss"].backward()
    assert_gradients_reach_exactly(method, trained)
    # every identity's prompt is in the image->text softmax at every step
    assert bool((method.prompts.ctx.grad[0].abs().sum((1, 2)) > 0).all())


def test_one_prompt_bank_serves_both_modalities(vcm):
    _, method = build(_config(vcm))
    assert method.prompts.num_sets == 1 and method.prompts.ctx.shape[:2] == (1, method.spec.num_classes)
    assert method.prompts.templates == ["A X X X X person observed in both day and night "
                                        "conditions."]
    stage, _, _ = prepare_first_stage(method)
    batch = next(iter(stage.loader))
    labels, mods = batch["label"], batch["modality"]
    y = int(labels[0])
    grads = []
    for m in (0, 1):  # the image->text loss of one modality's clips only
        method.zero_grad()
        keep = (mods == m) & (labels == y)
        f = method.encode(batch["image"][keep])
        F.cross_entropy(f.proj @ method.text_features().T, labels[keep]).backward()
        grads.append(method.prompts.ctx.grad[0, y].clone())
    assert all(g.abs().sum() > 0 for g in grads)  # the same tokens learn from both


def test_test_feature_is_class_token_and_sta_before_bn(vcm):
    data, method = build(_config(vcm))
    method.eval()
    batch = next(iter(method.test_loader(data.splits[0].query, 4)))
    with torch.no_grad():
        feats = method.extract(batch)
        f = method.encode(batch["image"])
    assert feats.shape == (len(batch["label"]), 2 * method.clip.visual.width)
    torch.testing.assert_close(feats, torch.cat([f.cls, f.sta], dim=1))
    _, plain = build(_config(vcm, "method.stp=false"))
    plain.eval()
    with torch.no_grad():
        assert plain.extract(batch).shape == (len(batch["label"]), plain.clip.visual.width)


def test_augmentation_follows_the_code(vcm):
    _, method = build(_config(vcm, "method.channel_exchange_prob=1.0"))
    transforms = method.train_transforms()
    clip = torch.randint(0, 256, (3, 3, 64, 32), dtype=torch.uint8)
    import random
    out = transforms[Modality.VISIBLE](clip, random.Random(0))
    assert out.shape == (3, 3, 64, 32)
    assert all(out[t, 0].equal(out[t, 1]) and out[t, 1].equal(out[t, 2]) for t in range(3))
    assert transforms[Modality.VISIBLE].second.per_frame
    infrared = transforms[Modality.INFRARED]
    assert isinstance(infrared, Compose) and infrared.per_frame
    assert any(type(s).__name__ == "ChannelAdapGray" for s in infrared.transforms)
    with pytest.raises(ConfigError, match="data.augment.channel_exchange"):
        build(_config(vcm, "data.augment.channel_exchange=true"))[1].train_transforms()


def test_bad_options_name_the_key(vcm):
    with pytest.raises(ConfigError, match="method.sth_start_block"):
        build(_config(vcm, "method.sth_start_block=1"))  # tiny-vit: 2 blocks
    with pytest.raises(ConfigError, match="data.video.test_num_frames"):
        build(_config(vcm, "data.video.test_num_frames=4"))
    with pytest.raises(ConfigError, match="method.sta_heads"):
        build(_config(vcm, "method.sta_heads=3"))


def test_shipped_configs_hold_the_codes_recipe():
    for dataset, (P, K) in (("vcm", (4, 4)), ("bupt", (8, 2))):
        cfg = load_config(ROOT / "configs" / dataset / "vld_vitb16.yaml")
        assert cfg.method.name == "vld" and cfg.data.video.num_frames == 6
        assert tuple(cfg.data.image_size) == (288, 144)
        assert (cfg.data.identities_per_batch, cfg.data.instances_per_identity) == (P, K)
        assert cfg.method.iterations_per_epoch == 200 and cfg.train.amp
        assert cfg.train.amp_dtype == "fp16"
        s = cfg.train.stages["main"]
        assert (s.optimizer, s.lr, s.weight_decay, s.epochs) == ("adamw", 2.5e-5, 1e-4, 24)
        assert s.lr_multipliers == {"prompt_classifier_bias": 25.0}
        # the code's schedule (timm cosine, t_initial 24, warm-up 3 from 2.5e-7, stepped
        # per epoch at its start), base group, values computed from our reading
        for epoch, value in ((0, 2.5e-7), (1, 8.5e-6), (2, 1.675e-5), (3, 2.4058e-5),
                             (12, 1.2625e-5), (23, 3.5587e-7)):
            assert lr_at(s, epoch) == pytest.approx(value, rel=1e-4)


def test_optimizer_groups_get_the_x25_rule(vcm):
    cfg = _config(vcm, "train.stages.main.lr_multipliers={prompt_classifier_bias: 25.0}")
    _, method = build(cfg)
    optimizer = build_optimizer(method, method._groups(), cfg.stage("main"), "main")
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"base": 1e-3, "prompt_classifier_bias": 25e-3}
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)


def test_real_size_model_builds_with_the_codes_shapes():
    """ViT-B/16 at 288x144, T = 6, HITSZ-VCM's 500 identities (random weights)."""
    start = time.perf_counter()
    cfg = load_config(ROOT / "configs" / "vcm" / "vld_vitb16.yaml", ["data.root=/none"])
    method = build_method(cfg, DataSpec("vcm", 500, (1, 2), True))
    visual = method.clip.visual
    assert visual.grid_size == (18, 9) and visual.positional_embedding.shape == (163, 768)
    assert method.prompt_tokens.shape == (6, 6, 768)
    assert method.prompts.ctx.shape == (1, 500, 4, 512) and method.prompts.n_ctx == 4
    assert method.options.sth_start_block == 9 and len(visual.blocks) == 12
    assert method.sta.num_heads == 12
    groups = {g.name: sum(p.numel() for p in g.params) for g in method._groups()}
    assert groups == {"base": 88_450_560, "prompt_classifier_bias": 2_158_080}
    assert sum(p.numel() for p in method.clip.text.parameters()) == 63_428_096  # frozen
    assert time.perf_counter() - start < 20
