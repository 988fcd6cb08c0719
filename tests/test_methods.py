"""Every registered method, end to end on tiny synthetic data: its example config
trains a step per stage through the engine, the checkpoint loads with
``vireid.load_model`` and embeds test samples, and the ONNX export matches it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import vireid
from vireid.cli import main
from vireid.config import load_config
from vireid.data.synthetic import synthesize
from vireid.methods import list_methods
from vireid.runner import load_data, train

EXAMPLES = Path(__file__).resolve().parents[1] / "configs" / "examples"
EXAMPLE_OF = {
    "clipreid": ("tiny_synthetic.yaml", "sysu"),
    "csdn": ("csdn_tiny.yaml", "sysu"),
    "xreid": ("xreid_tiny.yaml", "vcm"),
    "lsmrl": ("lsmrl_tiny.yaml", "vcm"),
}


def test_every_method_has_a_tiny_example():
    assert sorted(EXAMPLE_OF) == list_methods()


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("methods")
    synthesize("sysu", base / "SYSU-MM01", num_ids=10, seed=0, image_size=(64, 32),
               images_per_camera=2)
    synthesize("vcm", base / "HITSZ-VCM", num_ids=8, seed=0, image_size=(64, 32),
               frames_per_tracklet=15)
    return {"sysu": base / "SYSU-MM01", "vcm": base / "HITSZ-VCM"}


@pytest.mark.parametrize("name", list_methods())
def test_method_trains_loads_embeds_and_exports(name, roots, tmp_path, capsys):
    example, layout = EXAMPLE_OF[name]
    overrides = [f"data.root={roots[layout]}", f"output_dir={tmp_path}", "name=run",
                 "train.max_steps=1", "data.workers=0", "data.image_size=[64,32]",
                 "data.identities_per_batch=2", "data.instances_per_identity=2",
                 "train.log.jsonl=false", "train.device=cpu", "eval.batch_size=8"]
    if layout == "vcm":
        overrides.append("data.video.num_frames=3")
    else:
        overrides.append("eval.splits=[all-search]")
    cfg = load_config(EXAMPLES / example, overrides)
    assert cfg.method.name == name
    summary = train(cfg)
    assert summary, f"{name}: training returned no evaluation"
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    model = vireid.load_model(ckpt)
    assert model.config.method.name == name
    data = load_data(cfg)
    samples = data.splits[0].query[:3]
    feats = model.extract_samples(samples)
    assert feats.shape[0] == 3 and torch.isfinite(feats).all()
    if layout == "vcm":  # the command line, with every frame in dense clips
        assert main(["eval", "--ckpt", str(ckpt), "data.video.test_sampling=dense"]) == 0
        assert "ir->vis" in capsys.readouterr().out
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (pip install -e '.[onnx]')")
    from vireid.retrieval.export import ExportError, export_onnx

    if model.uses_cameras:  # camera rows are looked up in Python: a clear refusal
        with pytest.raises(ExportError, match="camera embedding"):
            export_onnx(model, tmp_path / f"{name}.onnx")
        return
    report = export_onnx(model, tmp_path / f"{name}.onnx")
    assert report.max_abs_diff <= 1e-4
