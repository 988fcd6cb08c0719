"""ONNX export of the image and clip encoders, checked against PyTorch in onnxruntime."""

import importlib.util
import json

import pytest
import torch

import vireid
from vireid.cli import main
from vireid.data.transforms import build_transforms
from vireid.retrieval.export import ExportError, export_onnx

pytest_plugins = ["_trained_model"]  # fixtures: trained, video_checkpoint

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAVE_ONNX, reason="onnx/onnxruntime not installed (pip install 'vireid[onnx]')")


@needs_onnx
def test_image_encoder_matches_extract(trained, tmp_path):
    import onnx
    import onnxruntime as ort

    root, run, _ = trained
    model = vireid.load_model(run)
    report = export_onnx(model, tmp_path / "enc.onnx")
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4
    assert report.input_name == "image" and report.input_shape[1:] == (3, 64, 32)

    # real images, preprocessed as the metadata says, give the features of model.extract
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    size = tuple(json.loads(props["vireid.image_size"]))
    norm = (tuple(json.loads(props["vireid.mean"])), tuple(json.loads(props["vireid.std"])))
    transform = build_transforms(False, size, normalization=norm)
    paths = sorted(str(p) for p in (root / "cam1").rglob("*.jpg"))[:5]
    from vireid.data.io import read_image_tensor

    batch = torch.stack([transform(read_image_tensor(p)) for p in paths]).numpy()
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": batch})[0])
    torch.testing.assert_close(got, model.extract(paths, modality="visible"), atol=1e-4, rtol=0)


@needs_onnx
def test_clip_encoder_has_dynamic_batch_and_frames(video_checkpoint, tmp_path):
    import onnxruntime as ort

    _, ckpt = video_checkpoint
    model = vireid.load_model(ckpt)
    report = export_onnx(model, tmp_path / "clip.onnx")
    assert report.input_name == "clip" and report.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    for b, t in ((1, 1), (2, 5)):
        x = torch.randn(b, t, 3, 64, 32)
        got = torch.from_numpy(session.run(None, {"clip": x.numpy()})[0])
        with torch.no_grad():
            ref = model.method.extract({"image": x, "camera": torch.zeros(b, dtype=torch.long)})
        torch.testing.assert_close(got, torch.nn.functional.normalize(ref, dim=1), atol=1e-4,
                                   rtol=0)


@needs_onnx
def test_parity_failure_is_an_error_and_cli_prints_the_difference(trained, tmp_path, capsys):
    _, run, _ = trained
    model = vireid.load_model(run)
    with pytest.raises(ExportError, match="differ from PyTorch"):
        export_onnx(model, tmp_path / "strict.onnx", tolerance=-1.0)
    out = tmp_path / "cli.onnx"
    assert main(["export", "--ckpt", str(run), "--onnx", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max abs diff" in printed
    diff = float(printed.split("max abs diff")[1].split()[0])
    assert diff <= 1e-4


def test_missing_onnx_is_a_clear_error(trained, tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name in ("onnx", "onnxruntime"):
            raise ImportError(f"no {name}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    _, run, _ = trained
    code = main(["export", "--ckpt", str(run), "--onnx", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "vireid[onnx]" in err and "Traceback" not in err
