"""X-ReID: prototype memories (values, DDP), losses, gradients, switches, a short video run."""

from __future__ import annotations

import math
import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from _method_helpers import (
    assert_gradients_reach_exactly,
    prepare_first_stage,
    synthetic_vcm,
)

from vireid.cli import main
from vireid.config import ConfigError, load_config
from vireid.losses import (
    CrossModalPrototypes,
    cross_modal_consistency_loss,
    hard_sample_update,
    prototype_contrastive_loss,
)
from vireid.losses.prototype import prototype_sums
from vireid.runner import build

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "xreid_tiny.yaml"


# --------------------------------------------------------------------------- memories


def test_memory_update_moves_towards_the_least_similar_sample_and_renormalises():
    memory = torch.zeros(3, 2)
    memory[0] = torch.tensor([1.0, 0.0])
    memory[1] = torch.tensor([0.0, 1.0])
    memory[2] = torch.tensor([0.6, 0.8])
    untouched = memory[2].clone()
    feats = torch.tensor([[2.0, 0.0],    # label 0, cos 1
                          [0.0, 3.0],    # label 0, cos 0  <- hardest
                          [1.0, 1.0],    # label 0, cos 0.707
                          [1.0, 1.0]])   # label 1, the only one
    labels = torch.tensor([0, 0, 0, 1])
    hard_sample_update(memory, feats, labels, momentum=0.2)
    assert torch.allclose(memory[0], torch.tensor([0.2, 0.8]) / math.hypot(0.2, 0.8))
    moved = 0.2 * torch.tensor([0.0, 1.0]) + 0.8 * torch.tensor([1.0, 1.0]) / math.sqrt(2)
    assert torch.allclose(memory[1], moved / moved.norm())
    assert torch.equal(memory[2], untouched)
    assert torch.allclose(memory.norm(dim=1), torch.ones(3))


def test_memory_update_source_other_or_both():
    vis_sample, ir_sample = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    feats = torch.cat([vis_sample, ir_sample])
    labels, mods = torch.tensor([0, 0]), torch.tensor([0, 1])
    start = F.normalize(torch.tensor([[1.0, 0.2]]), dim=1)

    other = CrossModalPrototypes(1, 2, momentum=0.5, source="other")
    other.visible.copy_(start)
    other.infrared.copy_(start)
    other.update(feats, labels, mods)
    # visible memory from the infrared sample, infrared memory from the visible one
    assert torch.allclose(other.visible[0], F.normalize(0.5 * start[0] + 0.5 * ir_sample[0], dim=0))
    assert torch.allclose(other.infrared[0], F.normalize(0.5 * start[0] + 0.5 * vis_sample[0], dim=0))

    both = CrossModalPrototypes(1, 2, momentum=0.5, source="both")
    both.visible.copy_(start)
    both.infrared.copy_(start)
    both.update(feats, labels, mods)  # the hardest of both modalities: the infrared sample
    assert torch.allclose(both.visible[0], other.visible[0])
    assert torch.allclose(both.infrared[0], other.visible[0])


def test_cpcl_and_prototype_means_by_hand():
    torch.manual_seed(0)
    feats = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    mods = torch.tensor([0, 0, 0, 1, 1, 1])
    sums, counts = prototype_sums(feats, labels, mods, num_classes=4)
    memory = CrossModalPrototypes(4, 4, temperature=0.1)
    memory.set_from_sums(sums, counts)
    assert bool(memory.ready)
    for i in range(6):
        table = memory.visible if mods[i] == 0 else memory.infrared
        assert torch.allclose(table[labels[i]], F.normalize(feats[i], dim=0), atol=1e-6)
    assert torch.equal(memory.visible[3], torch.zeros(4))  # no sample: zero prototype
    loss = memory.loss(feats, labels)
    expected = 0.0
    for table in (memory.visible, memory.infrared):
        for i in range(6):
            logits = [float(F.cosine_similarity(feats[i], table[c], dim=0)) / 0.1
                      if table[c].norm() > 0 else 0.0 for c in range(4)]
            expected += (math.log(sum(math.exp(v) for v in logits)) - logits[labels[i]]) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert prototype_contrastive_loss(feats, labels, memory.visible, 0.1) < loss


def test_cmcl_by_hand():
    a, b = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert cross_modal_consistency_loss(a, b).item() == pytest.approx((2.5 + 4.5) / 2)
    assert cross_modal_consistency_loss(a, b, "sum").item() == pytest.approx((5 + 9) / 2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_batch(rank: int):
    gen = torch.Generator().manual_seed(10 + rank)
    feats = torch.randn(6 + rank, 5, generator=gen)  # ranks of different sizes
    labels = torch.randint(0, 4, (6 + rank,), generator=gen)
    mods = torch.arange(6 + rank) % 2
    return feats, labels, mods


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=2)
        memory = CrossModalPrototypes(4, 5, momentum=0.3)
        memory.visible.copy_(F.normalize(torch.ones(4, 5), dim=1))
        memory.infrared.copy_(F.normalize(torch.arange(20.0).view(4, 5), dim=1))
        memory.update(*_ddp_batch(rank))
        torch.save({"visible": memory.visible, "infrared": memory.infrared},
                   Path(out) / f"rank{rank}.pt")
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - reported by the parent
        (Path(out) / f"error{rank}.txt").write_text(traceback.format_exc())


def test_memory_update_is_the_same_on_every_rank_and_equals_one_process(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    errors = list(tmp_path.glob("error*.txt"))
    assert not errors, errors[0].read_text()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = CrossModalPrototypes(4, 5, momentum=0.3)
    single.visible.copy_(F.normalize(torch.ones(4, 5), dim=1))
    single.infrared.copy_(F.normalize(torch.arange(20.0).view(4, 5), dim=1))
    union = [torch.cat(parts) for parts in zip(_ddp_batch(0), _ddp_batch(1))]
    single.update(*union)
    for state in ranks:
        assert torch.equal(state["visible"], ranks[0]["visible"])
        assert torch.allclose(state["visible"], single.visible)
        assert torch.allclose(state["infrared"], single.infrared)


# --------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def vcm(tmp_path_factory):
    return synthetic_vcm(tmp_path_factory.mktemp("data"))


def _config(vcm, *extra):
    return load_config(EXAMPLE, [f"data.root={vcm}", "data.identities_per_batch=2",
                                 "data.video.num_frames=3", "model.frozen=[patch_embed]",
                                 "eval.batch_size=8", *extra])


_prepare = prepare_first_stage


def test_gradients_reach_exactly_the_trained_parameters(vcm):
    data, method = build(_config(vcm))
    stage, groups, trained = _prepare(method)
    assert set(groups) == {"visual", "necks", "classifiers", "mii", "mii_necks",
                           "mii_classifier"}
    new = {id(p) for m in (method.sii, method.lii, method.cii) for p in m.parameters()}
    assert new == {id(p) for p in groups["mii"]}
    assert {id(p) for p in groups["mii_classifier"]} == {
        id(p) for p in method.classifier_mii.parameters()}
    batch = next(iter(stage.loader))
    B = len(batch["label"])
    assert batch["image"].shape[:2] == (B, 3) and B == 2 * 2 * 2
    before = (method.prototypes.visible.clone(), method.prototypes.infrared.clone())
    out = stage.step(batch)
    assert {"id", "triplet", "frame_id", "cmcl", "cpcl"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert_gradients_reach_exactly(method, trained)
    assert not any(id(p) in trained for p in method.clip.visual.conv1.parameters())
    # the memories moved after the step and stayed unit vectors
    assert not torch.equal(before[0], method.prototypes.visible)
    for table in (method.prototypes.visible, method.prototypes.infrared):
        seen = table.norm(dim=1) > 0
        assert torch.allclose(table[seen].norm(dim=1), torch.ones(int(seen.sum())), atol=1e-5)


def test_mii_input_gradient_switch(vcm):
    data, method = build(_config(vcm, "method.detach_mii_input=false", "method.cpc=false",
                                 "method.frame_id_loss=false", "method.id_weight=0",
                                 "method.triplet_weight=0"))
    stage, _, _ = _prepare(method)
    out = stage.step(next(iter(stage.loader)))
    out["loss"].backward()  # CMCL alone: reaches the backbone only without the detach
    assert method.clip.visual.transformer.resblocks[-1].mlp.c_fc.weight.grad is not None


def test_prototypes_are_identity_means_of_the_sequence_feature(vcm):
    data, method = build(_config(vcm))
    method.build_prototypes()
    method.eval()
    D = method.width + method.embed_dim
    feats = []
    with torch.no_grad():
        for batch in method.test_loader(data.train, 8):
            feats.append(method.extract(batch)[:, :D])
    feats = torch.cat(feats)
    labels = torch.tensor([s.label for s in data.train])
    mods = torch.tensor([int(s.modality) for s in data.train])
    for mod, table in ((0, method.prototypes.visible), (1, method.prototypes.infrared)):
        for label in labels.unique():
            rows = (labels == label) & (mods == mod)
            expected = F.normalize(feats[rows].mean(0), dim=0)
            assert torch.allclose(table[label], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("switches", "extra_dim", "modules"),
    [
        (["method.sii=false", "method.lii=false", "method.cii=false", "method.cpc=false"], 0,
         set()),
        (["method.lii=false"], 1, {"sii", "cii.sii", "prototypes"}),
        (["method.sii=false", "method.cii=false"], 1, {"lii", "prototypes"}),
    ],
)
def test_ablation_switches(vcm, switches, extra_dim, modules):
    data, method = build(_config(vcm, *switches))
    names = {n for n, _ in method.named_modules()}
    for module in ("sii", "lii", "cii.sii", "cii.lii", "prototypes"):
        assert (module in names) == (module in modules), module
    stage, _, _ = _prepare(method)
    batch = next(iter(stage.loader))
    out = stage.step(batch)
    assert ("cpcl" in out) == ("prototypes" in modules)
    assert ("cmcl" in out) == any(m.startswith("cii") for m in modules)
    method.eval()
    with torch.no_grad():
        feats = method.extract({k: v[:2] for k, v in batch.items() if k != "num_bad"})
    D, d = method.width, method.embed_dim
    assert feats.shape == (2, D + d + extra_dim * D)


def test_bad_switch_combinations_name_the_key(vcm):
    with pytest.raises(ConfigError, match="method.cii"):
        build(_config(vcm, "method.sii=false", "method.lii=false"))
    with pytest.raises(ConfigError, match="method.mii_heads"):
        build(_config(vcm, "method.mii_heads=3"))
    with pytest.raises(ConfigError, match="model.backbone"):
        build(_config(vcm, "model.backbone=tiny-rn50", "model.camera_embedding=false",
                      "model.frozen=[]"))


def test_short_video_run_then_eval_with_dense_clips(vcm, tmp_path, capsys):
    args = ["-c", str(EXAMPLE), f"data.root={vcm}", f"output_dir={tmp_path}", "name=run",
            "train.max_steps=2", "data.identities_per_batch=2", "data.video.num_frames=3"]
    assert main(["train", *args]) == 0
    printed = capsys.readouterr().out
    assert "ir->vis" in printed and "vis->ir" in printed
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["method"]
    assert bool(state["prototypes.ready"]) and state["prototypes.visible"].norm() > 0
    assert not any(k.startswith("clip.text.") for k in state)
    assert main(["eval", "--ckpt", str(ckpt), "data.video.test_sampling=dense"]) == 0
    assert "ir->vis" in capsys.readouterr().out


# --------------------------------------------------------------------------- code recipe


def test_code_learning_rates_classifiers_x10_tsm_x10_its_classifier_x100(vcm):
    """The official LR composition: biases x2, classifiers x10, every MII ("TSM") parameter
    x10, so the MII BN x10 and the MII classifier x100."""
    from vireid.engine.optim import build_optimizer

    cfg = _config(vcm, "train.stages.main.lr=5.0e-6", "train.stages.main.bias_lr_factor=2.0",
                  "train.stages.main.lr_multipliers={classifiers: 10.0, mii: 10.0, "
                  "mii_necks: 10.0, mii_classifier: 100.0}")
    _, method = build(cfg)
    optimizer = build_optimizer(method, method._groups(), cfg.stage("main"), "main")
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    expect = {
        method.clip.visual.ln_post.weight: 5e-6, method.clip.visual.ln_post.bias: 1e-5,
        method.neck.weight: 5e-6, method.classifier.weight: 5e-5,
        method.neck_mii.weight: 5e-5, method.classifier_mii.weight: 5e-4,
        method.sii.blocks[0].mlp[0].weight: 5e-5, method.sii.blocks[0].mlp[0].bias: 1e-4,
    }
    for p, value in expect.items():
        assert lr[id(p)] == pytest.approx(value)


def test_lii_stride_t_minus_one_is_the_code_rotation():
    """The code's (disabled) LII: position t holds the class token of frame (t + 1) mod T."""
    from vireid.models.temporal import long_term_source_index

    T = 10
    assert long_term_source_index(T, T - 1, "cyclic").tolist() == [(t + 1) % T for t in range(T)]


def test_memory_pass_without_camera_embedding_and_with_train_mode_bn(vcm):
    cfg = ("model.camera_embedding=true", "method.memory_camera_embedding=false",
           "method.memory_bn_mode=train")
    _, method = build(_config(vcm, *cfg))
    _, reference = build(_config(vcm, "model.camera_embedding=true"))
    reference.load_state_dict(method.state_dict())
    with torch.no_grad():
        method.clip.visual.camera_embedding.normal_(0, 5.0)
        reference.clip.visual.camera_embedding.zero_()
    before = method.neck.running_mean.clone()
    method.build_prototypes(0)
    assert not torch.equal(method.neck.running_mean, before)  # batch statistics, updated
    assert not method.neck.training or method.training  # modes restored
    # no camera embedding: the same as a model whose embedding is zero, BN in train mode
    reference.train()
    reference.neck.running_mean.copy_(before)
    for m in reference.modules():
        m.train(False)
    reference.neck.train()
    reference.neck_proj.train()
    sums = torch.zeros(2, reference.spec.num_classes, reference.width + reference.embed_dim)
    counts = torch.zeros(2, reference.spec.num_classes)
    with torch.no_grad():
        for batch in reference._memory_loader(0):
            cls, proj, _ = reference.encode_frames(batch["image"])
            s_, n_ = prototype_sums(reference.sequence_feature(cls, proj), batch["label"],
                                    batch["modality"], reference.spec.num_classes)
            sums += s_
            counts += n_
    expected = CrossModalPrototypes(reference.spec.num_classes, sums.shape[-1])
    expected.set_from_sums(sums, counts)
    assert torch.allclose(method.prototypes.visible, expected.visible, atol=1e-5)
    _, default = build(_config(vcm, "model.camera_embedding=true"))
    before = default.neck.running_mean.clone()
    default.build_prototypes(0)
    assert torch.equal(default.neck.running_mean, before)  # eval mode by default


def test_code_sampler_replays_one_order_with_replacement(vcm):
    _, one = build(_config(vcm, "method.sampler_replay=true", "method.iterations_per_epoch=2",
                           "method.sample_with_replacement=true"))
    _, two = build(_config(vcm, "method.sampler_replay=true", "method.iterations_per_epoch=4",
                           "method.sample_with_replacement=true"))
    a, b = one._train_sampler(), two._train_sampler()
    assert a.always_replace and len(a) == 2 and a.replay_length == b.replay_length
    L = a.replay_length
    stream = b.global_batches(0) + b.global_batches(1)
    assert a.global_batches(0) + a.global_batches(1) == stream[:4]
    assert a.global_batches(L) == a.global_batches(0)  # the order repeats after L batches x
    _, default = build(_config(vcm))
    s = default._train_sampler()
    assert s.replay_length is None and not s.always_replace
    assert s.global_batches(1) != s.global_batches(0)


def test_erasing_per_frame_draws_each_frame_on_its_own(vcm):
    """Erased rectangles: one per frame (code) or one for the whole clip (default)."""
    import random

    plain = ("data.augment.flip_prob=0", "data.augment.pad=0")
    clip = torch.full((4, 3, 64, 32), 128, dtype=torch.uint8)
    _, base = build(_config(vcm, "data.augment.random_erasing_prob=0", *plain))
    background = base._train_dataset()._transforms[0][0](clip, random.Random(0))

    def erased(*extra):
        _, method = build(_config(vcm, "data.augment.random_erasing_prob=1.0", *plain, *extra))
        out = method._train_dataset()._transforms[0][0](clip, random.Random(0))
        return [(out[t] != background[t]).any(0) for t in range(4)]

    per_frame = erased("method.erasing_per_frame=true")
    assert all(m.any() for m in per_frame)
    assert not all(torch.equal(per_frame[0], m) for m in per_frame[1:])
    per_clip = erased()
    assert per_clip[0].any() and all(torch.equal(per_clip[0], m) for m in per_clip[1:])
