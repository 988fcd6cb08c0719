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


def _examples() -> dict[str, tuple[Path, str]]:
    """method name -> (its first tiny example config, its dataset), found by glob."""
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        cfg = load_config(path)
        found.setdefault(cfg.method.name, (path, cfg.data.name))
    return found


EXAMPLE_OF = _examples()
SYNTHETIC = {  # tiny synthetic datasets, one per layout the examples use
    "sysu": ("SYSU-MM01", {"num_ids": 10, "images_per_camera": 2}),
    "vcm": ("HITSZ-VCM", {"num_ids": 8, "frames_per_tracklet": 15}),
    "bupt": ("BUPTCampus", {"num_ids": 8, "frames_per_tracklet": 15}),
}


def test_every_method_has_a_tiny_example():
    assert sorted(EXAMPLE_OF) == list_methods()


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("methods")
    made: dict[str, Path] = {}

    def root(layout: str) -> Path:
        if layout not in made:
            folder, options = SYNTHETIC[layout]
            made[layout] = base / folder
            synthesize(layout, made[layout], seed=0, image_size=(64, 32), **options)
        return made[layout]
    return root


def _tiny_config(name: str, roots, tmp_path: Path, *extra: str):
    """The method's tiny example on its synthetic dataset, one step per stage, CPU."""
    example, layout = EXAMPLE_OF[name]
    overrides = [f"data.root={roots(layout)}", f"output_dir={tmp_path}", "name=run",
                 "train.max_steps=1", "data.workers=0", "data.image_size=[64,32]",
                 "data.identities_per_batch=2", "data.instances_per_identity=2",
                 "train.log.jsonl=false", "train.device=cpu", "eval.batch_size=8"]
    if layout in ("vcm", "bupt"):
        overrides.append("data.video.num_frames=3")
    else:
        overrides.append("eval.splits=[all-search]")
    return load_config(example, [*overrides, *extra])


@pytest.mark.parametrize("name", list_methods())
def test_method_trains_loads_embeds_and_exports(name, roots, tmp_path, capsys):
    is_video = EXAMPLE_OF[name][1] in ("vcm", "bupt")
    cfg = _tiny_config(name, roots, tmp_path)
    assert cfg.method.name == name
    summary = train(cfg)
    assert summary, f"{name}: training returned no evaluation"
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    model = vireid.load_model(ckpt, overrides=["data.root=/no/such/dataset"])  # checkpoint alone
    assert model.config.method.name == name and model.num_classes == load_data(cfg).num_classes
    data = load_data(cfg)
    samples = data.splits[0].query[:3]
    feats = model.extract_samples(samples)
    assert feats.shape[0] == 3 and torch.isfinite(feats).all()
    if is_video:  # the command line, with every frame in dense clips
        assert main(["eval", "--ckpt", str(ckpt), "data.video.test_sampling=dense"]) == 0
        assert "ir->vis" in capsys.readouterr().out
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (pip install -e '.[onnx]')")
    from vireid.retrieval.export import export_onnx

    report = export_onnx(model, tmp_path / f"{name}.onnx")  # camera models take a camera input
    assert report.max_abs_diff <= 1e-4


def test_camera_embedding_model_loads_and_exports_without_its_dataset(roots, tmp_path):
    """The checkpoint carries the camera numbers: no dataset, no camera_ids; the ONNX
    graph takes each input's camera number and maps it to its embedding row itself."""
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (pip install -e '.[onnx]')")
    import onnxruntime as ort

    from vireid.retrieval.export import export_onnx

    cfg = _tiny_config("clipreid", roots, tmp_path, "model.backbone=tiny-vit",
                       "model.camera_embedding=true", "model.camera_embedding_scale=3.0")
    train(cfg)
    model = vireid.load_model(tmp_path / "run", overrides=["data.root=/no/such/dataset"])
    cameras = model.method.spec.cameras
    assert model.uses_cameras and cameras == (1, 2, 3, 4, 5, 6)
    report = export_onnx(model, tmp_path / "cams.onnx")
    assert report.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "cams.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "camera"]
    x = torch.rand(2, 3, 64, 32).numpy()
    def run(cams):
        return session.run(None, {"image": x, "camera": torch.tensor(cams).numpy()})[0]
    ones, fours, mixed = run([1, 1]), run([4, 4]), run([1, 4])
    assert abs(ones - fours).max() > 1e-4  # the rows follow the camera numbers, per input
    assert abs(mixed[0] - ones[0]).max() < 1e-5 and abs(mixed[1] - fours[1]).max() < 1e-5


@pytest.mark.parametrize("name", list_methods())
def test_parameters_frozen_at_construction_stay_frozen_in_every_stage(name, roots, tmp_path):
    """Through the engine: after steps of every stage, each parameter the method froze
    when it was built is bit-identical to its start (and still frozen)."""
    from vireid.engine import Trainer
    from vireid.runner import build

    cfg = _tiny_config(name, roots, tmp_path, "train.max_steps=2")
    _, method = build(cfg)
    frozen = {n: p.detach().clone() for n, p in method.named_parameters() if not p.requires_grad}
    if name == "clipreid":  # its BN-neck shifts are frozen at 0 (CLIP-ReID code)
        assert any(n.endswith("bias") and "neck" in n for n in frozen), sorted(frozen)
    trained = {n: p.detach().clone() for n, p in method.named_parameters() if p.requires_grad}
    Trainer(method, cfg, tmp_path / "run").fit()
    params = dict(method.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(params[n], before) and not params[n].requires_grad, n
    assert any(not torch.equal(params[n], v) for n, v in trained.items())  # training happened
