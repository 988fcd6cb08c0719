"""CSDN on tiny CLIPs and synthetic data: stages, gradients, stems, fusion, switches, a run."""

from pathlib import Path

import pytest
import torch

from vireid.cli import main
from vireid.config import ConfigError, load_config
from vireid.data.synthetic import synthesize
from vireid.data.types import Modality
from vireid.engine.checkpoint import load_checkpoint
from vireid.methods.csdn import SemanticFusion
from vireid.runner import build, train_trials

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "csdn_tiny.yaml"
REGDB = Path(__file__).resolve().parents[1] / "configs" / "regdb" / "csdn_rn50.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthesize("sysu", root / "SYSU-MM01", num_ids=12, seed=0, image_size=(64, 32),
               images_per_camera=2)
    synthesize("regdb", root / "RegDB", num_ids=6, seed=0, image_size=(64, 32),
               images_per_id=4)
    return root


SMALL = ["data.image_size=[64,32]", "data.identities_per_batch=4", "data.instances_per_identity=2",
         "data.workers=0", "train.log.progress=false", "eval.batch_size=64"]


def _config(datasets, *extra):
    return load_config(EXAMPLE, [f"data.root={datasets / 'SYSU-MM01'}", *SMALL, *extra])


def _set_trainable(method, stage) -> set[int]:
    """What the engine does when a stage starts: only the stage's parameters train."""
    trained = {id(p) for g in stage.param_groups() for p in g.params}
    for p in method.parameters():
        p.requires_grad_(id(p) in trained)
        p.grad = None
    return trained


def _assert_grads_exactly(method, trained: set[int]) -> None:
    for name, p in method.named_parameters():
        assert (p.grad is not None) == (id(p) in trained), name


@pytest.mark.parametrize("backbone", ["tiny-rn50", "tiny-vit"])
def test_each_stage_reaches_exactly_its_parameters(datasets, backbone):
    data, method = build(_config(datasets, f"model.backbone={backbone}"))
    prompt, sii, hse = method.stages()
    assert [s.name for s in (prompt, sii, hse)] == ["prompt", "sii", "hse"]
    method.train()

    trained = _set_trainable(method, prompt)
    assert trained == {id(method.prompts.ctx)}
    prompt.setup()
    feats, labels = method.cache_image_features()
    assert feats.shape == (len(data.train), method.clip.visual.embed_dim)
    prompt.step(next(iter(prompt.loader)))["loss"].backward()
    _assert_grads_exactly(method, trained)

    trained = _set_trainable(method, sii)
    assert trained == {id(p) for p in method.fusion.parameters()}
    sii.setup()
    sii.step(next(iter(sii.loader)))["loss"].backward()
    _assert_grads_exactly(method, trained)

    trained = _set_trainable(method, hse)
    hse.setup()
    batch = next(iter(hse.loader))
    P, K = 4, 2  # SMALL
    assert batch["image"].shape == (3 * P * K, 3, 64, 32)  # visible, infrared, visible view 2
    assert (batch["modality"] == int(Modality.VISIBLE)).sum() == 2 * P * K
    assert ((batch["view"] == 1) & (batch["modality"] == int(Modality.VISIBLE))).sum() == P * K
    out = hse.step(batch)
    assert {"id", "wrt", "msel", "i2t_v", "i2t_r"} <= set(out) and torch.isfinite(out["loss"])
    out["loss"].backward()
    _assert_grads_exactly(method, trained)
    # the text side is frozen in stage 3: no prompt, fusion or text-encoder parameter trains
    text_side = [*method.prompts.parameters(), *method.fusion.parameters(),
                 *method.clip.text.parameters()]
    assert not any(id(p) in trained for p in text_side)
    assert method.stem_ir is not None and all(p.grad is not None for p in method.stem_ir.parameters())

    method.eval()
    with torch.no_grad():
        feats = method.extract({**batch, "image": batch["image"][:3], "modality": batch["modality"][:3]})
    visual = method.clip.visual
    per_view = visual.width + visual.embed_dim  # [l2(BN(f)) ; l2(g)]
    assert feats.shape == (3, 2 * per_view)  # flip test, concatenated
    halves = feats.view(3, 2, per_view)
    for part in (halves[..., : visual.width], halves[..., visual.width :]):  # each unit length
        assert torch.allclose(part.norm(dim=-1), torch.ones(3, 2), atol=1e-5)


def test_stem_is_chosen_by_the_sample_modality(datasets):
    _, method = build(_config(datasets, "method.stem_relu=all"))
    method.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in method.stem_ir.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        images = torch.randn(5, 3, 64, 32)
        modality = torch.tensor([0, 1, 1, 0, 1])
        mixed = method.stem_forward(images, modality)
        visible = method.clip.visual.stem(images)
        infrared = method.stem_ir(images)
    assert torch.allclose(mixed[modality == 0], visible[modality == 0], atol=1e-6)
    assert torch.allclose(mixed[modality == 1], infrared[modality == 1], atol=1e-6)
    assert not torch.allclose(visible, infrared)


def test_official_stem_skips_the_first_two_relus(datasets):
    _, method = build(_config(datasets))  # stem_relu: last
    stem = method.clip.visual.stem
    stem.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        y = stem.bn1(stem.conv1(x))
        y = stem.bn2(stem.conv2(y))
        expected = stem.avgpool(torch.relu(stem.bn3(stem.conv3(y))))
        got = method.stem_forward(x, torch.zeros(2, dtype=torch.long))
        clip_stem = stem(x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, clip_stem)


def test_fusion_with_single_tokens_is_visible_plus_projected_value():
    torch.manual_seed(0)
    fusion = SemanticFusion(8, dropout=0.1).eval()
    t_v, t_r = torch.randn(4, 8), torch.randn(4, 8)
    with torch.no_grad():
        weights = fusion.attention(t_v.unsqueeze(1), t_r.unsqueeze(1))
        fused = fusion(t_v, t_r)
        expected = t_v + fusion.out(torch.tanh(fusion.value[0](t_r)))
    assert torch.equal(weights, torch.ones(4, 1, 1))
    assert torch.allclose(fused, expected, atol=1e-6)
    # the query and key do not matter with one token: changing them leaves t^f unchanged
    with torch.no_grad():
        fusion.query[0].weight.normal_()
        fusion.key[0].weight.normal_()
        assert torch.allclose(fusion(t_v, t_r), fused, atol=1e-6)
        # several keys: a proper softmax over them
        many = fusion.attention(t_v.unsqueeze(1), torch.randn(4, 3, 8))
    assert torch.allclose(many.sum(-1), torch.ones(4, 1), atol=1e-6) and not torch.equal(
        many, torch.full_like(many, 1 / 3))
    fusion.train()  # dropout on q, k, v in training
    assert not torch.allclose(fusion(t_v, t_r), fused)


def test_switches(datasets):
    _, method = build(_config(datasets, "method.prompts=shared", "method.stems=shared",
                              "method.fusion=visible_only", "method.msel=false",
                              "train.stages.sii.epochs=0",
                              "train.stages.sii.warmup_epochs=0"))
    assert method.prompts.num_sets == 1 and method.stem_ir is None and method.fusion is None
    hse = method.stages()[2]
    trained = _set_trainable(method, hse)
    hse.setup()
    # t^f = t^v with visible_only, and t^v = t^r with shared prompts
    t_v, t_r = method.identity_text_features()
    assert torch.allclose(method.text_features, t_v) and torch.allclose(t_v, t_r)
    method.train()
    out = hse.step(next(iter(hse.loader)))
    assert "msel" not in out
    out["loss"].backward()
    _assert_grads_exactly(method, trained)

    with pytest.raises(ConfigError, match=r"train\.stages\.sii\.epochs"):
        build(_config(datasets, "method.fusion=sum"))
    with pytest.raises(ConfigError, match="method.fusion"):
        _config(datasets, "method.fusion=concat")


def test_three_stages_train_only_their_parts(datasets, tmp_path, capsys):
    cfg = _config(datasets, f"output_dir={tmp_path}", "name=run", "train.max_steps=2")
    _, initial = build(cfg)
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    args = [f"data.root={datasets / 'SYSU-MM01'}", f"output_dir={tmp_path}", "name=run",
            "train.max_steps=2", *SMALL]
    assert main(["train", "-c", str(EXAMPLE), *args]) == 0
    assert "all-search ir->vis" in capsys.readouterr().out
    ckpts = tmp_path / "run" / "checkpoints"
    states = {s: load_checkpoint(ckpts / f"{s}.pt")["method"] for s in ("prompt", "sii", "hse")}

    def changed(a, b):
        return {k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])}

    assert changed(before, states["prompt"]) == {"prompts.ctx"}
    assert changed(states["prompt"], states["sii"]) == {
        k for k in before if k.startswith("fusion.")}
    after_hse = changed(states["sii"], states["hse"])
    assert not any(k.startswith(("prompts.", "fusion.", "clip.text.")) for k in after_hse)
    assert "text_features" in after_hse and any(k.startswith("stem_ir.") for k in after_hse)
    assert any(k.startswith("clip.visual.layer4.") for k in after_hse)
    # T^f is the fusion of the final prompts' text features, computed in eval mode
    _, method = build(cfg)
    method.load_state_dict(states["sii"])
    method.eval()
    t_v, t_r = method.identity_text_features()
    with torch.no_grad():
        assert torch.allclose(states["hse"]["text_features"], method.fuse(t_v, t_r), atol=1e-5)


def test_regdb_trials_are_trained_and_averaged(datasets, tmp_path):
    cfg = load_config(REGDB, [
        f"data.root={datasets / 'RegDB'}", f"output_dir={tmp_path}", "model.backbone=tiny-rn50",
        "data.image_size=[64,32]", "data.identities_per_batch=2", "data.instances_per_identity=2",
        "data.workers=0", "train.device=cpu", "train.max_steps=1", "train.log.progress=false",
        "train.checkpoint_every=0",
    ])
    summary = train_trials(cfg, [1, 2])
    assert (tmp_path / "csdn_rn50_trial1").is_dir() and (tmp_path / "csdn_rn50_trial2").is_dir()
    for direction in ("vis->ir", "ir->vis"):
        group = summary[direction]
        assert [row["trial"] for row in group["trials"]] == [1, 2]
        mean_r1 = sum(row["R1"] for row in group["trials"]) / 2
        assert group["mean"]["R1"] == pytest.approx(mean_r1)
    with pytest.raises(ConfigError, match="data.name"):
        train_trials(_config(datasets), [1])


def test_wrt_normalizer_reaches_the_hse_losses(datasets):
    from vireid.losses import weighted_regularized_triplet_loss as wrt

    for normalizer in ("exact", "official"):
        _, method = build(_config(datasets, f"method.wrt_normalizer={normalizer}"))
        stage = method.stages()[2]
        stage.setup()
        method.train()
        batch = next(iter(stage.loader))
        with torch.no_grad():
            out = method.hse_losses(batch)
            f, g = method.encode(batch["image"], batch["modality"])
        labels = batch["label"]
        expected = (wrt(f.float(), labels, normalizer=normalizer)
                    + wrt(g.float(), labels, normalizer=normalizer))
        assert out["wrt"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_sii_features_train_mode_reextracts_with_batch_statistics(datasets):
    """Official stage 2: g of every stage-1 pair with BatchNorm in train mode, one forward
    per modality per batch of stage-1 size, running statistics updated."""
    batch_size = 8
    _, method = build(_config(datasets, "method.sii_features=train_mode",
                              f"train.stages.prompt.batch_size={batch_size}"))
    method.stages()[0].setup()  # the stage-1 cache, eval mode
    cache, labels = method._cache
    bn = method.clip.visual.stem.bn1
    method.eval()
    before = bn.running_mean.clone()
    method.stages()[1].setup()
    pool, pool_labels = method._sii_pool
    visible_rows, infrared_rows = method.pairs()
    assert pool.shape[0] == 2 * len(visible_rows)
    assert torch.equal(pool_labels, labels[torch.cat([visible_rows, infrared_rows])])
    assert not torch.equal(bn.running_mean, before)  # running averages were updated
    assert not bn.training  # modes restored
    # hand-built: the first visible batch, through the encoder in train mode
    rows = visible_rows[:batch_size]
    images = torch.stack([method.test_loader([method.data.train[int(i)]], 1).dataset[0]["image"]
                          for i in rows])
    method.clip.visual.train()
    with torch.no_grad():
        expected = method.encode(images, torch.zeros(len(rows), dtype=torch.long))[1]
    method.eval()
    assert torch.allclose(pool[:batch_size], expected, atol=1e-5)
    assert not torch.allclose(pool[:batch_size], cache[rows], atol=1e-3)  # not the eval cache
    # default: the stage-1 cache at the pairs' rows
    _, cached = build(_config(datasets, f"train.stages.prompt.batch_size={batch_size}"))
    cached.stages()[1].setup()
    feats, _ = cached._cache
    assert torch.equal(cached._sii_pool[0],
                       feats[torch.cat(list(cached.pairs()))])


def test_interpolation_key_reaches_the_transforms(datasets):
    _, method = build(_config(datasets, "data.interpolation=lanczos"))
    assert method._test_transform().transforms[0].interpolation == "lanczos"
    hse = method.stages()[2].loader.dataset
    views = hse._transforms[Modality.VISIBLE] + hse._transforms[Modality.INFRARED]
    assert all(v.transforms[0].interpolation == "lanczos" for v in views)
    _, default = build(_config(datasets))
    assert default._test_transform().transforms[0].interpolation == "bicubic"


def test_keep_best_copies_the_best_rank1_checkpoint_and_says_it_is_test_selection(
        datasets, tmp_path, capsys):
    """train.keep_best (reproduction of the official selection): best.pt is the checkpoint
    of the best Rank-1 so far (ties count), logged and printed as test-set selection."""
    import json

    args = [f"data.root={datasets / 'SYSU-MM01'}", f"output_dir={tmp_path}", "name=best",
            *SMALL, "train.keep_best=true", "train.eval_every=1", "eval.splits=[all-search]",
            "train.stages.prompt.epochs=1", "train.stages.prompt.warmup_epochs=0",
            "train.stages.sii.epochs=1", "train.stages.sii.warmup_epochs=0",
            "train.stages.hse.epochs=3", "train.stages.hse.warmup_epochs=0",
            "train.stages.hse.milestones=[2]"]
    with pytest.warns(UserWarning, match="TEST SET"):
        assert main(["train", "-c", str(EXAMPLE), *args]) == 0
    assert "SELECTED ON THE TEST SET" in capsys.readouterr().err
    run = tmp_path / "best"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    scores = [r["metrics"]["all-search ir->vis"]["mean"]["R1"] for r in evals]
    assert len(evals) >= 3  # every hse epoch (the final one counts once)
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["score"] == pytest.approx(max(scores))
    last_best = max(i for i, s in enumerate(scores) if s == max(scores))
    assert best["step"] == evals[last_best]["step"]
    assert all(r["selected_on"].startswith("test set") for r in records if r["kind"] == "best")
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["progress"]["global_step"] == best["step"]
