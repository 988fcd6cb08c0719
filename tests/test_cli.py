"""The ``vireid`` command on synthetic data and on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vireid.cli import main
from vireid.evaluation import compute_metrics

pytest_plugins = ["_trained_model"]  # fixture: trained

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "tiny_synthetic.yaml"


def _feature_file(path, rng, drop=None):
    q_ids, g_ids = torch.arange(40) % 10, torch.arange(30) % 10
    centres = torch.randn(10, 16, generator=rng)
    tensors = {
        "query_features": centres[q_ids] + 0.8 * torch.randn(40, 16, generator=rng),
        "query_ids": q_ids,
        "query_cams": torch.full((40,), 3),
        "gallery_features": centres[g_ids] + 0.8 * torch.randn(30, 16, generator=rng),
        "gallery_ids": g_ids,
        "gallery_cams": torch.arange(30) % 4 + 1,
    }
    if drop:
        tensors.pop(drop)
    save_file(tensors, str(path))
    return tensors


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "vireid", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("data", "evaluate", "config"):
        assert command in out.stdout


def test_evaluate_json_matches_the_library(tmp_path, capsys):
    t = _feature_file(tmp_path / "f.safetensors", torch.Generator().manual_seed(0))
    assert main(["evaluate", "--features", str(tmp_path / "f.safetensors"), "--protocol", "sysu",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    q = torch.nn.functional.normalize(t["query_features"], dim=1)
    g = torch.nn.functional.normalize(t["gallery_features"], dim=1)
    expected = compute_metrics(-(q @ g.T), t["query_ids"], t["gallery_ids"], t["query_cams"],
                               t["gallery_cams"], "sysu")
    assert len(out["cmc"]) == 10  # ten identities: the deduplicated CMC has ten entries
    np.testing.assert_allclose(out["cmc"], expected.cmc)
    assert out["mAP"] == pytest.approx(expected.mAP) and out["mINP"] == pytest.approx(expected.mINP)
    assert 0 < out["mAP"] <= 1


def test_evaluate_table(tmp_path, capsys):
    _feature_file(tmp_path / "f.safetensors", torch.Generator().manual_seed(1))
    assert main(["evaluate", "--features", str(tmp_path / "f.safetensors"), "--protocol", "vcm"]) == 0
    out = capsys.readouterr().out
    assert "R1" in out and "mAP" in out and "mINP" in out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "feature file not found"),
        (lambda p: p.write_bytes(b"not a safetensors file"), "not a readable safetensors file"),
        (lambda p: _feature_file(p, torch.Generator().manual_seed(0), drop="gallery_cams"),
         "lacks gallery_cams"),
    ],
)
def test_evaluate_bad_files_name_the_problem(tmp_path, capsys, make, message):
    path = tmp_path / "f.safetensors"
    make(path)
    assert main(["evaluate", "--features", str(path), "--protocol", "regdb"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err
    assert "Traceback" not in err


SMALL = {
    "sysu": "images_per_camera=2", "llcm": "images_per_camera=2", "regdb": "images_per_id=2",
    "vcm": "frames_per_tracklet=15", "bupt": "frames_per_tracklet=15",
}


@pytest.mark.parametrize("layout", sorted(SMALL))
def test_synth_then_check(tmp_path, capsys, layout):
    root = tmp_path / layout
    assert main(["data", "synth", "--layout", layout, "--root", str(root), "--ids", "6",
                 "--image-size", "32", "16", "-o", SMALL[layout]]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["ids"] == 6
    assert main(["data", "check", layout, "--root", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert 0 < stats["train"]["identities"] <= 6
    assert set(stats["train"]["by_modality"]) == {"visible", "infrared"}
    assert stats["splits"] and all(s["query"]["count"] > 0 for s in stats["splits"])


def test_check_on_a_wrong_layout_prints_what_is_missing(tmp_path, capsys):
    (tmp_path / "RegDB").mkdir()
    assert main(["data", "check", "regdb", "--root", str(tmp_path / "RegDB")]) == 2
    err = capsys.readouterr().err
    assert "idx" in err and "Expected layout" in err and str(tmp_path / "RegDB") in err


def test_bad_option_syntax(tmp_path, capsys):
    assert main(["data", "check", "sysu", "--root", str(tmp_path), "-o", "mode"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_config_prints_the_resolved_yaml(capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "configs" / "examples" / "tiny_synthetic.yaml"
    assert main(["config", "-c", str(example), "seed=7"]) == 0
    assert "seed: 7" in capsys.readouterr().out
    assert main(["config", "-c", str(example), "train.no_such_key=1"]) == 2
    assert "train.no_such_key" in capsys.readouterr().err


def test_trial_specs():
    from vireid.cli import UsageError, _parse_trials

    assert _parse_trials("1-10") == list(range(1, 11))
    assert _parse_trials("1,3,5") == [1, 3, 5]
    with pytest.raises(UsageError, match="--trials"):
        _parse_trials("a-b")


def test_unknown_eval_split_is_refused_before_the_first_step(trained, tmp_path, capsys):
    root, _, _ = trained
    code = main(["train", "-c", str(EXAMPLE), f"data.root={root}", f"output_dir={tmp_path}",
                 "name=run", "data.workers=0", "data.image_size=[64,32]",
                 "model.backbone=tiny-vit", "eval.splits=[nope]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "eval.splits" in err and "nope" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_eval_distance_reaches_the_evaluator(trained, monkeypatch, distance):
    """`eval.distance` of the config is the distance the protocol evaluation ranks by."""
    import vireid.evaluation.evaluator as evaluator
    from vireid.runner import evaluate_checkpoint

    _, _, ckpt = trained
    seen = []
    real = evaluator.evaluate_features

    def spy(*args, **kwargs):
        seen.append(kwargs.get("distance"))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate_features", spy)
    evaluate_checkpoint(ckpt, overrides=[f"eval.distance={distance}", "train.device=cpu"])
    assert seen and set(seen) == {distance}


def test_a_non_finite_loss_stops_training_with_a_message_not_a_traceback(trained, tmp_path,
                                                                          monkeypatch, capsys):
    from vireid.methods.clipreid import ClipReID

    def nan_losses(self, indices):
        return {"loss": torch.full((), float("nan"), requires_grad=True)}

    monkeypatch.setattr(ClipReID, "prompt_losses", nan_losses)
    root, _, _ = trained
    code = main(["train", "-c", str(EXAMPLE), f"data.root={root}", f"output_dir={tmp_path}",
                 "name=run", "data.workers=0", "data.image_size=[64,32]",
                 "model.backbone=tiny-vit", "train.max_steps=2", "eval.splits=[all-search]"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite loss in stage 'prompt'" in err and "Traceback" not in err


def test_demo_starts_from_the_shipped_synthetic_vit_and_prints_its_stage_losses(tmp_path, capsys):
    """`vireid demo` (shortened to one epoch per stage): the shipped synthetic ViT CLIP is
    loaded through the real path, and the stage losses and chance are printed."""
    assert main(["demo", "--workdir", str(tmp_path), "train.stages.prompt.epochs=1",
                 "train.stages.image.epochs=1", "train.log.progress=false"]) == 0
    out = capsys.readouterr().out
    assert "stage prompt: loss" in out and "stage image: loss" in out
    assert "chance Rank-1 (all-search ir->vis): 1.67%" in out
    config = (tmp_path / "clipreid_tiny" / "config.yaml").read_text()
    assert "backbone: synth-vit-p8" in config and "pretrained: synthetic" in config
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report["stage_losses"]) == {"prompt", "image"}
