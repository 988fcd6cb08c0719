"""Synthetic CLIP pretraining, weight files, shipped weights and the zero-shot check."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vireid.cli import main
from vireid.clip_pretrain import train as pretrain_mod
from vireid.clip_pretrain.train import Recipe, clip_loss, learning_rate, pretrain, read_metadata
from vireid.clip_pretrain.zeroshot import _ranks, average_precision
from vireid.models.factory import backbone_config, build_clip
from vireid.models.weights import sha256_file

TINY = ["--backbone", "tiny-vit-p8", "--steps", "3", "--batch-size", "4", "--ids", "6",
        "--images-per-id", "2", "--warmup-steps", "1", "--no-progress", "--threads", "1"]


def tiny_recipe(**changes) -> Recipe:
    values = dict(backbone="tiny-vit-p8", num_ids=6, images_per_id=2, steps=4, batch_size=4,
                  warmup_steps=1)
    values.update(changes)
    return Recipe(**values)


def tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_pretrain_command_writes_weights_the_loader_reads(tmp_path, capsys):
    out = tmp_path / "clip.safetensors"
    log = tmp_path / "log.jsonl"
    assert main(["clip", "pretrain", *TINY, "--out", str(out), "--log", str(log)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["final_loss"] > 0
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all(s["logit_scale"] <= 100 for s in steps)
    assert (tmp_path / "clip.safetensors.sha256").read_text().split()[0] == sha256_file(out)

    meta = read_metadata(out)
    assert meta["backbone"] == "tiny-vit-p8" and meta["image_size"] == [64, 32]
    assert meta["architecture"] == backbone_config("tiny-vit-p8")
    assert Recipe.from_dict(meta["recipe"]) == tiny_recipe(steps=3)
    stored = tensors(out)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert "token_embedding.weight" in stored  # open_clip key names, as fetch_weights writes

    model = build_clip("tiny-vit-p8", (64, 32), weights=out)  # the real loading path, strict
    assert model.weights_report.missing == [] and model.weights_report.unexpected == []
    torch.testing.assert_close(model.text.token_embedding.weight,
                               stored["token_embedding.weight"].float())
    bigger = build_clip("tiny-vit-p8", (128, 64), weights=out)  # positional embedding resized
    assert "visual.positional_embedding" in bigger.weights_report.resized


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    recipe = tiny_recipe()
    straight = tmp_path / "straight.safetensors"
    pretrain(recipe, straight, checkpoint_every=2, progress=False)

    broken = tmp_path / "broken.safetensors"
    real = pretrain_mod.make_batch

    def dies_at_step_2(recipe, population, step, tokenizer):
        if step == 2:
            raise KeyboardInterrupt
        return real(recipe, population, step, tokenizer)

    monkeypatch.setattr(pretrain_mod, "make_batch", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(recipe, broken, checkpoint_every=2, progress=False)
    assert not broken.exists()
    monkeypatch.setattr(pretrain_mod, "make_batch", real)
    summary = pretrain(recipe, broken, checkpoint_every=2, resume=True, progress=False)
    assert summary["resumed_at"] == 2
    a, b = tensors(straight), tensors(broken)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        path = tmp_path / f"{name}.safetensors"
        pretrain(tiny_recipe(steps=2, seed=seed), path, checkpoint_every=0, progress=False)
        runs[name] = tensors(path)
    key = "visual.conv1.weight"
    assert torch.equal(runs["a"][key], runs["b"][key])
    assert not torch.equal(runs["a"][key], runs["c"][key])


def test_batches_hold_distinct_people_and_grey_images_get_colourless_captions():
    from vireid.clip_pretrain.data import render_population
    from vireid.data.synthetic.people import TAG_CLIP_PRETRAIN
    from vireid.models.clip import get_tokenizer

    recipe = tiny_recipe(num_ids=12, batch_size=12, gray_prob=0.5)
    population = render_population(seed=0, stream=TAG_CLIP_PRETRAIN, num_ids=12,
                                   images_per_id=2, image_size=(64, 32))
    images, tokens, texts = pretrain_mod.make_batch(recipe, population, 0, get_tokenizer(32))
    assert images.shape == (12, 3, 64, 32) and tokens.shape[0] == 12
    assert tokens.shape[1] <= 32 and (tokens.argmax(-1) < tokens.shape[1]).all()
    channels_equal = (images[:, 0] * 0.26862954 + 0.48145466 - images[:, 1] * 0.26130258
                      - 0.4578275).abs().amax(dim=(1, 2)) < 1e-3
    assert 0 < int(channels_equal.sum()) < 12
    colours = {"red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "black",
               "white", "grey", "brown", "blond"}
    for grey, text in zip(channels_equal.tolist(), texts):
        if grey:
            assert not set(text.replace(",", " ").replace(".", " ").split()) & colours, text


def test_schedule_and_loss():
    recipe = tiny_recipe(steps=10, warmup_steps=4, lr=1.0)
    assert learning_rate(recipe, 0) == pytest.approx(0.25)
    assert learning_rate(recipe, 3) == pytest.approx(1.0)
    assert learning_rate(recipe, 4) == pytest.approx(1.0)
    assert learning_rate(recipe, 7) == pytest.approx(0.5)
    features = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(100.0).log()
    assert clip_loss(features, features, scale) < 0.1
    assert clip_loss(features, features.roll(1, 0), scale) > 1.0


@pytest.mark.parametrize(("extra", "message"), [
    (["--backbone", "no-such-net"], "unknown backbone 'no-such-net'"),
    (["--batch-size", "1"], "batch_size=1"),
    (["--batch-size", "7"], "batch_size=7"),
    (["--steps", "0"], "steps=0"),
    (["--resume"], "no checkpoint to resume from"),
])
def test_pretrain_bad_input_is_a_clear_error(tmp_path, capsys, extra, message):
    out = tmp_path / "x.safetensors"
    assert main(["clip", "pretrain", *TINY, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_pretrain_bad_out_and_changed_recipe(tmp_path, capsys):
    assert main(["clip", "pretrain", *TINY, "--out", str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(["clip", "pretrain", *TINY, "--out", str(tmp_path / "no" / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "x.safetensors"
    assert main(["clip", "pretrain", *TINY, "--out", str(out), "--checkpoint-every", "1"]) == 0
    capsys.readouterr()
    assert main(["clip", "pretrain", *TINY, "--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "lr: checkpoint 0.001, now 0.5" in capsys.readouterr().err


def test_zeroshot_command(tmp_path, capsys):
    out = tmp_path / "clip.safetensors"
    assert main(["clip", "pretrain", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["clip", "zeroshot", "--weights", str(out), "--ids", "5", "--images-per-id",
                 "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["population"]["identities"] == 5
    for modality in ("visible", "infrared"):
        ranked = result[modality]["caption_to_identity"]
        assert ranked["chance_rank1"] == pytest.approx(0.2)
        assert 0 <= ranked["rank1"] <= ranked["rank5"] <= 1
        assert set(result[modality]["attributes"]) == {"shape", "colour"}
    assert main(["clip", "zeroshot", "--weights", str(out), "--ids", "4",
                 "--images-per-id", "1"]) == 0
    table = capsys.readouterr().out
    assert "visible" in table and "infrared" in table and "chance" in table
    assert main(["clip", "zeroshot", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["clip", "zeroshot"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_retrieval_metrics():
    assert average_precision(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, False, True])) \
        == pytest.approx((1 + 2 / 3) / 2)
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.5, 0.5], [0.0, 0.2, 0.1]])
    assert _ranks(similarity, torch.tensor([0, 1, 2])).tolist() == [1, 3, 2]  # ties rank last
