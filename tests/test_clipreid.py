"""CLIP-ReID on tiny CLIPs and synthetic datasets: shapes, gradients, commands, bad input."""

from pathlib import Path

import pytest
import torch

from vireid.cli import main
from vireid.config import load_config
from vireid.data.synthetic import synthesize
from vireid.runner import build

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "tiny_synthetic.yaml"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthesize("sysu", root / "SYSU-MM01", num_ids=12, seed=0, image_size=(64, 32),
               images_per_camera=2)
    synthesize("vcm", root / "HITSZ-VCM", num_ids=12, seed=0, image_size=(64, 32),
               frames_per_tracklet=15)
    return root


def _config(datasets, name, backbone, *extra):
    overrides = [f"model.backbone={backbone}", "data.workers=0", "data.image_size=[64,32]",
                 "data.identities_per_batch=2", "data.instances_per_identity=2",
                 "train.device=cpu", *extra]
    if name == "vcm":
        overrides += ["data.name=vcm", f"data.root={datasets / 'HITSZ-VCM'}",
                      "data.video.num_frames=3", "data.video.test_sampling=first_of_chunk",
                      "data.video.train_sampling=rrs"]
    else:
        overrides.append(f"data.root={datasets / 'SYSU-MM01'}")
    return load_config(EXAMPLE, overrides)


@pytest.mark.parametrize("backbone", ["tiny-vit", "tiny-rn50"])
@pytest.mark.parametrize("layout", ["sysu", "vcm"])
def test_forward_backward_reaches_exactly_the_stage_parameters(datasets, backbone, layout):
    data, method = build(_config(datasets, layout, backbone))
    prompt_stage, image_stage = method.stages()
    groups = {g.name: g.params for g in prompt_stage.param_groups()}
    assert set(groups) == {"prompts"}
    assert {id(p) for p in groups["prompts"]} == {id(p) for p in method.prompts.parameters()}

    image_params = {id(p) for g in image_stage.param_groups() for p in g.params}
    for p in method.parameters():  # what the engine does at a stage start
        p.requires_grad_(id(p) in image_params)
    image_stage.setup()
    method.train()
    batch = next(iter(image_stage.loader))
    images = batch["image"]
    expected_ndim = 5 if layout == "vcm" else 4  # (B,T,C,H,W) or (B,C,H,W)
    assert images.ndim == expected_ndim and images.shape[-2:] == (64, 32)
    out = image_stage.step(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in method.named_parameters():
        trained = id(p) in image_params
        assert (p.grad is not None) == trained or (trained and name.startswith("clip.visual.")
                                                  and p.grad is None and "camera" in name), name
    assert all(p.grad is None for p in method.clip.text.parameters())
    assert all(p.grad is None for p in method.prompts.parameters())

    feats = method.extract({**batch, "image": images[:3]})
    width = method.clip.visual.width + method.clip.visual.embed_dim
    assert feats.shape == (3, width)


def test_prompt_stage_step_gradients_only_reach_the_prompts(datasets):
    data, method = build(_config(datasets, "sysu", "tiny-vit"))
    stage = method.stages()[0]
    trained = {id(p) for g in stage.param_groups() for p in g.params}
    for p in method.parameters():
        p.requires_grad_(id(p) in trained)
    stage.setup()
    batch = next(iter(stage.loader))
    stage.step(batch)["loss"].backward()
    assert method.prompts.ctx.grad is not None
    assert all(p.grad is None for n, p in method.named_parameters() if not n.startswith("prompts."))


def test_train_two_iterations_then_eval(datasets, tmp_path, capsys):
    args = [f"data.root={datasets / 'SYSU-MM01'}", f"output_dir={tmp_path}", "name=run",
            "train.max_steps=2", "data.workers=0", "data.image_size=[64,32]",
            "data.identities_per_batch=2", "data.instances_per_identity=2"]
    assert main(["train", "-c", str(EXAMPLE), *args]) == 0
    printed = capsys.readouterr().out
    assert "all-search ir->vis" in printed and "mean" in printed
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "last.pt"
    assert ckpt.is_file() and (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert main(["eval", "--ckpt", str(ckpt), "eval.splits=[all-search]"]) == 0
    table = capsys.readouterr().out
    assert "all-search ir->vis" in table and table.count("\n") >= 12  # 10 trials + header + mean


def test_missing_weights_file_says_how_to_get_it(datasets, tmp_path, capsys):
    code = main(["train", "-c", str(EXAMPLE), f"data.root={datasets / 'SYSU-MM01'}",
                 f"output_dir={tmp_path}", f"model.weights={tmp_path / 'nope.pt'}"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.pt" in err and "vireid weights fetch" in err


def test_corrupt_image_in_the_dataset_is_named(datasets, tmp_path, capsys):
    import shutil

    root = tmp_path / "SYSU-MM01"
    shutil.copytree(datasets / "SYSU-MM01", root)
    victim = sorted((root / "cam1").rglob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    code = main(["train", "-c", str(EXAMPLE), f"data.root={root}", f"output_dir={tmp_path}",
                 "data.workers=0", "data.image_size=[64,32]", "train.max_steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and victim.name in err and "Traceback" not in err


def test_impossible_batch_composition_names_the_key(datasets, tmp_path, capsys):
    code = main(["train", "-c", str(EXAMPLE), f"data.root={datasets / 'SYSU-MM01'}",
                 f"output_dir={tmp_path}", "data.identities_per_batch=500", "data.workers=0"])
    err = capsys.readouterr().err
    assert code == 2 and "identities_per_batch" in err


def test_model_options_reach_the_backbone(datasets):
    """patch_stride and the camera embedding are honoured, not silently dropped."""
    from vireid.runner import build

    _, method = build(_config(datasets, "sysu", "tiny-vit", "model.patch_stride=8",
                              "model.camera_embedding=true"))
    assert method.clip.visual.grid_size == (7, 3)  # 16-pixel patches every 8 pixels of 64x32
    assert method.clip.visual.num_cameras == len(method.spec.cameras) > 1


def test_image_to_text_cross_entropy_is_label_smoothed_as_the_official_code(datasets):
    """Stage 2's image->text term: the ID loss's smoothed cross-entropy (epsilon 0.1)."""
    import torch.nn.functional as F

    # the official formula, q = (1 - eps) onehot + eps / K, on a hand-built case
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    y = torch.tensor([0, 1])
    q = 0.9 * F.one_hot(y, 3) + 0.1 / 3
    official = -(q * z.log_softmax(1)).sum(1).mean()
    assert official.item() == pytest.approx(0.4421074, abs=1e-6)
    assert F.cross_entropy(z, y, label_smoothing=0.1).item() == pytest.approx(0.4421074, abs=1e-6)

    _, method = build(_config(datasets, "sysu", "tiny-vit"))
    assert method.options.i2t_label_smoothing == 0.1
    image_stage = method.stages()[1]
    image_stage.setup()
    batch = next(iter(image_stage.loader))
    with torch.no_grad():
        _, proj = method.encode(batch["image"])
        logits = proj.float() @ method.text_features.T
        out = method.image_losses(batch)
    labels = batch["label"]
    K = logits.shape[1]
    q = 0.9 * F.one_hot(labels, K) + 0.1 / K
    expected = -(q * logits.log_softmax(1)).sum(1).mean()
    assert out["i2t"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["i2t"].item() != pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-3)
    _, plain = build(_config(datasets, "sysu", "tiny-vit", "method.i2t_label_smoothing=0"))
    assert plain.options.i2t_label_smoothing == 0.0


def test_camera_embedding_on_the_class_token_and_not_in_the_prompt_cache(datasets):
    """Official SIE: class token only; the stage-1 cache is computed without it."""
    _, method = build(_config(datasets, "sysu", "tiny-vit", "model.camera_embedding=true"))
    visual = method.clip.visual
    assert visual.camera_tokens == "cls"
    with torch.no_grad():
        visual.camera_embedding.normal_(0, 5.0)  # make the embedding matter
    method.stages()[0].setup()
    feats, _ = method._cache
    loader = method.test_loader(method.data.train, 64)
    batch = next(iter(loader))
    cameras = method._cameras(batch)
    with torch.no_grad():
        without = method.encode(batch["image"])[1]
        with_cam = method.encode(batch["image"], cameras)[1]
    n = len(without)
    assert torch.allclose(feats[:n], without, atol=1e-5)
    assert not torch.allclose(feats[:n], with_cam, atol=1e-3)
    _, every = build(_config(datasets, "sysu", "tiny-vit", "model.camera_embedding=true",
                             "method.camera_tokens=all"))
    assert every.clip.visual.camera_tokens == "all"
