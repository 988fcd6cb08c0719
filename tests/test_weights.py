"""Weight files: formats, key names, grid resizing, errors, checksums and the fetch verb."""

from __future__ import annotations

import hashlib
import os
import pickle
import urllib.error
import warnings
import zipfile

import open_clip.pretrained
import pytest
import torch
from open_clip.model import CLIP, convert_weights_to_lp
from safetensors.torch import load_file, save_file

from vireid.models import build_clip, fetch_weights, load_weights, read_state_dict
from vireid.models import weights as weights_module
from vireid.models.factory import backbone_config
from vireid.models.pos_embed import resize_grid_embedding
from vireid.models.weights import (
    WeightsDownloadError,
    WeightsError,
    WeightsNotFoundError,
    to_model_keys,
    to_open_clip_keys,
)


def _reference(name: str, seed: int = 0) -> CLIP:
    """open_clip's own CLIP for a tiny config, at its native 224x224."""
    torch.manual_seed(seed)
    cfg = backbone_config(name)
    model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=True).eval()
    # give the BatchNorm statistics non-trivial values so that they are checked too
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    return model


def _images(size=(224, 224), batch=2):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(7))


TOKENS = None


def _tokens():
    global TOKENS
    if TOKENS is None:
        from vireid.models import get_tokenizer

        TOKENS = get_tokenizer()(["a photo of a person.", "a person in the dark."])
    return TOKENS


def _script(model: torch.nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))


def test_round_trip_safetensors_and_bin(tmp_path):
    torch.manual_seed(0)
    source = build_clip("tiny-vit", (64, 32)).eval()
    state = to_open_clip_keys(source.state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.bin")
    torch.save(source.state_dict(), tmp_path / "own_names.pt")  # ClipModel names load too
    x = _images((64, 32))
    with torch.no_grad():
        expected_image, expected_text = source.visual(x).proj, source.encode_text(_tokens())
        for name in ("w.safetensors", "w.bin", "own_names.pt"):
            torch.manual_seed(123)  # a different initialisation
            loaded = build_clip("tiny-vit", (64, 32), weights=tmp_path / name).eval()
            torch.testing.assert_close(loaded.visual(x).proj, expected_image, rtol=0, atol=0)
            torch.testing.assert_close(loaded.encode_text(_tokens()), expected_text, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn50"])
def test_open_clip_checkpoint_reproduces_open_clip(tmp_path, name):
    """A training checkpoint of open_clip (state_dict entry, DDP prefix) loads and our
    towers compute what open_clip computes (224x224, ResNet last stride 2)."""
    reference = _reference(name)
    checkpoint = {
        "epoch": 3,
        "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()},
    }
    torch.save(checkpoint, tmp_path / "epoch_3.pt")
    model = build_clip(name, 224, last_stride=2, weights=tmp_path / "epoch_3.pt").eval()
    assert model.weights_report.missing == [] and model.weights_report.resized == {}
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(x), reference.encode_image(x), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            model.encode_text(_tokens()), reference.encode_text(_tokens()), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn50"])
def test_torchscript_archive_read_without_running_code(tmp_path, name):
    """OpenAI-style archive: a scripted CLIP with float16 weights (as OpenAI's files)."""
    reference = _reference(name)
    convert_weights_to_lp(reference, torch.float16)
    _script(reference, tmp_path / f"{name}.pt")
    with zipfile.ZipFile(tmp_path / f"{name}.pt") as archive:
        assert any("/code/" in n for n in archive.namelist())
    safe = read_state_dict(tmp_path / f"{name}.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        jit_state = torch.jit.load(str(tmp_path / f"{name}.pt")).state_dict()
    assert set(safe) == set(jit_state)
    assert all(torch.equal(safe[k], jit_state[k]) for k in safe)

    model = build_clip(name, 224, last_stride=2, weights=tmp_path / f"{name}.pt").eval()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    expected = to_model_keys(reference.state_dict())
    own = model.state_dict()
    assert {k for k, v in expected.items() if v.dtype == torch.float16}  # really fp16 in the file
    for key, value in expected.items():
        assert torch.equal(own[key], value.float()), key
    reference.float()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(x), reference.encode_image(x), atol=1e-5, rtol=1e-5
        )


def test_trusted_torchscript_falls_back_to_jit_load(tmp_path, monkeypatch):
    reference = _reference("tiny-vit")
    _script(reference, tmp_path / "ts.pt")
    expected = read_state_dict(tmp_path / "ts.pt")

    def refuse(self, module, name):
        raise WeightsError(f"refusing to load the global {module}.{name}")

    monkeypatch.setattr(weights_module._RestrictedUnpickler, "find_class", refuse)
    with pytest.raises(WeightsError, match="trust_torchscript_code=True"):
        read_state_dict(tmp_path / "ts.pt")
    with pytest.warns(UserWarning, match="executes code"):
        trusted = read_state_dict(tmp_path / "ts.pt", trust_torchscript_code=True)
    assert set(trusted) == set(expected)
    assert all(torch.equal(trusted[k], expected[k]) for k in expected)


def test_resized_vit_checkpoint_loads(tmp_path):
    reference = _reference("tiny-vit")
    torch.save(reference.state_dict(), tmp_path / "vit224.bin")
    model = build_clip("tiny-vit", (288, 144), weights=tmp_path / "vit224.bin")
    key = "visual.positional_embedding"
    assert model.weights_report.resized == {key: ((197, 64), (163, 64))}
    old = reference.visual.positional_embedding.detach()
    loaded = model.visual.positional_embedding.detach()
    assert torch.equal(loaded[0], old[0])  # class token kept
    torch.testing.assert_close(loaded, resize_grid_embedding(old, (18, 9), (14, 14)))
    assert model.visual(_images((288, 144), 1)).proj.isfinite().all()


def test_resized_resnet_checkpoint_loads(tmp_path):
    reference = _reference("tiny-rn50")
    torch.save(reference.state_dict(), tmp_path / "rn224.bin")
    model = build_clip("tiny-rn50", (288, 144), last_stride=1, weights=tmp_path / "rn224.bin")
    key = "visual.attnpool.positional_embedding"
    assert model.weights_report.resized == {key: ((50, 512), (163, 512))}
    old = reference.visual.attnpool.positional_embedding.detach()
    torch.testing.assert_close(
        model.visual.attnpool.positional_embedding.detach(), resize_grid_embedding(old, (18, 9))
    )
    torch.testing.assert_close(model.visual.stem.conv1.weight, reference.visual.conv1.weight)


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        build_clip("tiny-vit", (64, 32), weights=tmp_path / "ViT-B-16.pt")
    message = str(caught.value)
    assert isinstance(caught.value, WeightsNotFoundError)
    assert str(tmp_path / "ViT-B-16.pt") in message
    assert "vireid weights fetch" in message and "model.weights=" in message


def test_wrong_shape_names_the_key(tmp_path):
    state = to_open_clip_keys(build_clip("tiny-vit", (64, 32)).state_dict())
    state["visual.proj"] = torch.zeros(64, 32)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"visual\.proj: file \(64, 32\) vs model \(64, 64\)"):
        build_clip("tiny-vit", (64, 32), weights=tmp_path / "bad.pt")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    source = build_clip("tiny-vit", (64, 32), num_cameras=2)
    state = to_open_clip_keys(source.state_dict())
    assert "visual.camera_embedding" not in state
    del state["ln_final.weight"]
    state["extra.head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "partial.pt")
    target = build_clip("tiny-vit", (64, 32), num_cameras=2)
    with pytest.raises(WeightsError) as caught:
        load_weights(target, tmp_path / "partial.pt")
    message = str(caught.value)
    assert "text.ln_final.weight" in message and "extra.head.weight" in message
    assert "camera_embedding" not in message  # expected: no CLIP file has it
    report = load_weights(target, tmp_path / "partial.pt", strict=False)
    assert report.missing == ["text.ln_final.weight"]
    assert report.unexpected == ["extra.head.weight"]
    assert report.kept_initialisation == ["visual.camera_embedding"]
    assert torch.equal(target.visual.proj, source.visual.proj)


def test_backbone_kind_mismatch(tmp_path):
    torch.save(_reference("tiny-rn50").state_dict(), tmp_path / "rn.pt")
    with pytest.raises(WeightsError, match="resnet weights"):
        build_clip("tiny-vit", (64, 32), weights=tmp_path / "rn.pt")


def test_unreadable_files_are_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(WeightsError, match="junk.pt"):
        read_state_dict(junk)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_in_pickles_is_not_run(tmp_path):
    marker = tmp_path / "ran"
    plain = tmp_path / "evil.pt"
    plain.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    with pytest.raises(WeightsError, match="evil.pt"):
        read_state_dict(plain)
    archive = tmp_path / "evil_ts.pt"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("evil_ts/data.pkl", pickle.dumps(_Payload(marker), protocol=2))
        handle.writestr("evil_ts/code/__torch__.py", "class M(Module):\n  pass\n")
        handle.writestr("evil_ts/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(WeightsError, match="refusing to load the global"):
        read_state_dict(archive)
    assert not marker.exists()


def test_checksum_file_is_checked(tmp_path):
    state = to_open_clip_keys(build_clip("tiny-vit", (64, 32)).state_dict())
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    sidecar = tmp_path / "w.safetensors.sha256"
    sidecar.write_text("0" * 64 + "  w.safetensors\n")
    with pytest.raises(WeightsError, match="checksum"):
        build_clip("tiny-vit", (64, 32), weights=path)
    sidecar.write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "  w.safetensors\n")
    build_clip("tiny-vit", (64, 32), weights=path)


def _offline(*_args, **_kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_explicit_download_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", _offline)
    with pytest.raises(WeightsDownloadError) as caught:
        fetch_weights("ViT-B-16", tmp_path)
    message = str(caught.value)
    assert "network" in message and "model.weights=" in message and "ViT-B-16" in message
    with pytest.raises(WeightsDownloadError, match="network"):
        build_clip("ViT-B-16", pretrained="openai")
    with pytest.raises(WeightsError, match="openai"):
        fetch_weights("ViT-B-16", tmp_path, tag="no-such-tag")


def test_fetch_converts_to_safetensors_with_checksum(tmp_path, monkeypatch):
    reference = _reference("tiny-vit")
    convert_weights_to_lp(reference, torch.float16)
    archive = tmp_path / "src" / "ViT-B-16.pt"
    archive.parent.mkdir()
    _script(reference, archive)
    calls = []

    def fake_download(cfg, prefer_hf_hub=True, cache_dir=None):
        calls.append((cfg.get("url"), cache_dir))
        os.makedirs(cache_dir, exist_ok=True)
        return str(archive)

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", fake_download)
    out_dir = tmp_path / "weights"
    path = fetch_weights("ViT-B-16", out_dir)
    assert path == out_dir / "ViT-B-16-openai.safetensors"
    assert "openaipublic" in calls[0][0] and str(out_dir) in calls[0][1]
    assert not (out_dir / ".download").exists()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (out_dir / "ViT-B-16-openai.safetensors.sha256").read_text() == (
        f"{digest}  ViT-B-16-openai.safetensors\n"
    )
    stored = load_file(str(path))
    expected = reference.state_dict()  # open_clip / OpenAI names, dtypes as stored
    assert set(stored) == set(expected)
    assert all(torch.equal(stored[k], expected[k]) for k in expected)
    model = build_clip("tiny-vit", 224, weights=path)
    torch.testing.assert_close(model.visual.proj, reference.visual.proj.float())
