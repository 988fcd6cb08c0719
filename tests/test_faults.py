"""Faults: bad input to every command is a clean error (exit 2, the culprit named, no
traceback); images, index paths, caches, checkpoints and disks that go wrong; a killed
training run resumes bit-exactly; no loadable file format runs a payload."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vireid.cli import main
from vireid.data.datasets import OutsideRootError, load_dataset
from vireid.data.io import ImageReadError, read_image_tensor
from vireid.data.synthetic import MANIFEST, MARKER, SyntheticLayoutError, synthesize
from vireid.data.transforms import to_uint8_tensor
from vireid.engine import checkpoint as ckpt_module
from vireid.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
)
from vireid.files import HOST

pytest_plugins = ["_trained_model"]  # fixtures: trained

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "configs" / "examples"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _run_cli(argv, capsys):
    """``vireid argv`` in-process: (exit code, stderr). An uncaught exception fails the test."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


# --------------------------------------------------------------------------- images


def test_sixteen_bit_images_are_scaled_not_white(tmp_path):
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(64, 32) * 31).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")  # opens as I;16
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    x = read_image_tensor(tmp_path / "g16.png")
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1)
    assert x.float().std() > 20  # was a constant 255 (white)
    as_int = Image.fromarray(ramp.astype(np.int32), "I")
    np.testing.assert_allclose(to_uint8_tensor(as_int)[1].numpy(), expected, atol=1)


def test_float_images_and_non_finite_tensors_are_refused(tmp_path):
    Image.fromarray(np.full((8, 4), 0.5, dtype=np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match=r"f\.tif.*mode F"):
        read_image_tensor(tmp_path / "f.tif")
    bad = torch.rand(3, 8, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        to_uint8_tensor(bad)


def test_training_on_a_float_image_stops_naming_it(tmp_path):
    """The training loader reads through read_image_tensor, as data check does: the image
    is named, not blackened."""
    root = tmp_path / "RegDB"
    synthesize("regdb", root, num_ids=4, seed=0, image_size=(32, 16), images_per_id=2, trials=1)
    victim = next((root / "Visible").rglob("*.bmp"))
    Image.fromarray(np.zeros((32, 16), dtype=np.float32), "F").save(victim, format="TIFF")
    code = subprocess.run(
        [sys.executable, "-m", "vireid", "data", "check", "regdb", "--root", str(root),
         "-o", "trial=1"], capture_output=True, text=True)
    assert code.returncode == 2 and victim.name in code.stderr and "mode F" in code.stderr


# --------------------------------------------------------------------------- data check


def test_data_check_decodes_every_image(tmp_path, capsys):
    root = tmp_path / "SYSU-MM01"
    synthesize("sysu", root, num_ids=6, seed=0, image_size=(32, 16), images_per_camera=2)
    images = sorted(root.rglob("*.jpg"))
    truncated, corrupt, empty, text = images[0], images[5], images[10], images[15]
    truncated.write_bytes(truncated.read_bytes()[:200])
    corrupt.write_bytes(b"\xff\xd8" + os.urandom(300))
    empty.write_bytes(b"")
    text.write_text("not an image\n")
    assert main(["data", "check", "sysu", "--root", str(root), "--quick"]) == 0  # existence only
    capsys.readouterr()
    code, err = _run_cli(["data", "check", "sysu", "--root", root, "--workers", "2"], capsys)
    assert code == 2 and f"4 of {len(images)} image file(s) cannot be used" in err
    for path in (truncated, corrupt, empty, text):
        assert str(path) in err
    assert "image file is empty" in err


# --------------------------------------------------------------------------- index paths


def _append(path: Path, line: str) -> int:
    lines = path.read_text().splitlines() + [line]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def test_index_paths_must_stay_inside_the_root(tmp_path):
    regdb = tmp_path / "RegDB"
    synthesize("regdb", regdb, num_ids=4, seed=0, image_size=(32, 16), images_per_id=2, trials=1)
    outside = tmp_path / "other" / "vis" / "0015"
    outside.mkdir(parents=True)
    Image.new("RGB", (16, 32)).save(outside / "x.jpg")
    index = regdb / "idx" / "train_visible_1.txt"
    line = _append(index, "../other/vis/0015/x.jpg 0")
    with pytest.raises(OutsideRootError, match=rf"train_visible_1\.txt, line {line}: .*outside"):
        load_dataset("regdb", regdb, trial=1)

    llcm = tmp_path / "LLCM"
    synthesize("llcm", llcm, num_ids=4, seed=0, image_size=(32, 16), images_per_camera=1)
    line = _append(llcm / "idx" / "train_vis.txt", "vis/../../other/vis/0015/0015_c01_x.jpg 0")
    with pytest.raises(OutsideRootError, match=rf"train_vis\.txt, line {line}"):
        load_dataset("llcm", llcm)

    bupt = tmp_path / "BUPTCampus"
    synthesize("bupt", bupt, num_ids=8, seed=0, image_size=(32, 16), frames_per_tracklet=5)
    paths = json.loads((bupt / "data_paths.json").read_text())
    pid = next(iter(paths))
    cam = next(iter(paths[pid]["RGB"]))
    tid = next(iter(paths[pid]["RGB"][cam]))
    paths[pid]["RGB"][cam][tid][0] = "../../other/vis/0015/x.jpg"
    (bupt / "data_paths.json").write_text(json.dumps(paths))
    with pytest.raises(OutsideRootError, match=r"data_paths\.json\[.*outside"):
        load_dataset("bupt", bupt)

    vcm = tmp_path / "HITSZ-VCM"
    synthesize("vcm", vcm, num_ids=4, seed=0, image_size=(32, 16), frames_per_tracklet=15)
    names = (vcm / "info" / "train_name.txt").read_text().splitlines()
    names[0] = names[0][:names[0].index("F") + 1] + "/../../../../../other/vis/0015/x.jpg"
    (vcm / "info" / "train_name.txt").write_text("\n".join(names) + "\n")
    with pytest.raises(OutsideRootError, match=r"train_name\.txt, line 1"):
        load_dataset("vcm", vcm)


def test_symlinks_inside_the_root_are_fine(tmp_path):
    elsewhere = tmp_path / "disk2"
    root = tmp_path / "RegDB"
    synthesize("regdb", elsewhere, num_ids=4, seed=0, image_size=(32, 16), images_per_id=2,
               trials=1)
    root.mkdir()
    for name in ("Visible", "Thermal", "idx"):
        (root / name).symlink_to(elsewhere / name)
    data = load_dataset("regdb", root, trial=1)
    assert data.train and all(s.path.startswith(str(root)) for s in data.train)


# --------------------------------------------------------------------------- lost files


def test_synth_over_a_synthetic_root_deletes_only_its_own_files(tmp_path):
    root = tmp_path / "RegDB"
    synthesize("regdb", root, num_ids=6, seed=0, image_size=(32, 16), images_per_id=2, trials=1)
    (root / "notes.txt").write_text("mine")
    (root / "Visible" / "6" / "extra.txt").write_text("mine too")
    (root / "mine").mkdir()
    synthesize("regdb", root, num_ids=4, seed=1, image_size=(32, 16), images_per_id=2, trials=1)
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "Visible" / "6" / "extra.txt").read_text() == "mine too"
    assert (root / "mine").is_dir()
    assert not list((root / "Visible" / "6").glob("*.bmp"))  # the old generator files are gone
    assert load_dataset("regdb", root, trial=1).num_classes == 2
    # A synthetic root without a file list (older vireid) is never emptied.
    (root / MANIFEST).unlink()
    with pytest.raises(SyntheticLayoutError, match="without its file list"):
        synthesize("regdb", root, num_ids=4, seed=0, image_size=(32, 16), images_per_id=2)
    assert (root / MARKER).is_file() and (root / "notes.txt").is_file()


def test_search_cache_never_overwrites_a_feature_file(trained, tmp_path, capsys):
    root, run, _ = trained
    split_file = tmp_path / "split.safetensors"
    assert main(["extract", "--ckpt", str(run), "--split", "all-search/trial0", "--out",
                 str(split_file)]) == 0
    before = split_file.read_bytes()
    query = sorted(str(p) for p in (root / "cam6").rglob("*.jpg"))[0]
    code, err = _run_cli(["search", "--ckpt", run, "--query", query, "--gallery", root / "cam1",
                          "--cache", split_file], capsys)
    assert code == 2 and str(split_file) in err and "refusing to overwrite" in err
    assert split_file.read_bytes() == before


# --------------------------------------------------------------------------- checkpoints


def _training_checkpoint(path: Path, **changes) -> Path:
    state = {"format": "vireid-checkpoint", "format_version": 1, "config": {}, "method": {},
             "optimizer": {}, "scheduler": {}, "scaler": None,
             "progress": {"stage": "image", "stage_index": 0, "epoch": 0, "step_in_epoch": 1,
                          "stage_step": 1, "global_step": 1, "stage_done": False},
             "world_size": 1,
             "ranks": [{"rng": capture_rng_state(), "epoch_rng": capture_rng_state(),
                        "sampler": None}]}
    for key, value in changes.items():
        target, *rest = key.split(".")
        if rest:
            if value is None:
                state[target].pop(rest[0])
            else:
                state[target][rest[0]] = value
        elif value is None:
            state.pop(target)
        else:
            state[target] = value
    torch.save(state, path)
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"progress": None}, "lacks key 'progress'"),
    ({"progress.global_step": None}, "lacks key 'progress'.'global_step'"),
    ({"progress.epoch": "one"}, "'progress'.'epoch' must be int"),
    ({"ranks": [{"rng": {"python": (3, (1, 2), None), "numpy": {}, "torch": 0},
                 "epoch_rng": None}]}, "'ranks'\\[0\\].'rng'.*malformed RNG state at 'python'"),
    ({"ranks": [{"rng": "noise"}]}, "malformed RNG state"),
    ({"method": None}, "lacks key 'method'"),
])
def test_malformed_checkpoints_name_the_file_and_key(tmp_path, change, message):
    path = _training_checkpoint(tmp_path / "bad.pt", **change)
    with pytest.raises(CheckpointError, match=rf"bad\.pt.*{message}"):
        load_checkpoint(path)


def test_missing_key_at_access_is_a_checkpoint_error(tmp_path):
    good = load_checkpoint(_training_checkpoint(tmp_path / "ok.pt"))
    with pytest.raises(CheckpointError, match=r"ok\.pt lacks key 'ranks'\[0\]\.'sampler2'"):
        good["ranks"][0]["sampler2"]


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"step": 1}, target)

    def full(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module, "_write", full)
    with pytest.raises(OSError, match=r"no space left on device: cannot write .*last\.pt "
                                      r"\(the previous checkpoint is kept\)") as info:
        atomic_save({"step": 2}, target)
    assert info.value.errno == errno.ENOSPC
    assert torch.load(target) == {"step": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"]

    def torch_style(obj, handle):  # what torch's zip writer raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(ckpt_module, "_write", torch_style)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(OSError, match="no space left on device"):
        atomic_save({"step": 3}, target)
    assert torch.load(target) == {"step": 1}


def test_partial_files_of_killed_writers_are_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = HOST
    stale = folder / f".last.pt.{host}.{dead.pid}.0badc0de.tmp"
    old_style = folder / ".last.pt.ab12_xyz.tmp"
    live = folder / f".last.pt.{host}.{os.getpid()}.0123abcd.tmp"
    other_host = folder / f".last.pt.elsewhere.{dead.pid}.0123abcd.tmp"
    for p in (stale, old_style, live, other_host):
        p.write_bytes(b"partial")
    assert sorted(remove_stale_temporaries(folder)) == sorted([stale, old_style])
    assert live.exists() and other_host.exists()
    stale.write_bytes(b"partial")
    atomic_save({"step": 1}, folder / "last.pt")  # the next write cleans up too
    assert not stale.exists()
    stale.write_bytes(b"partial")
    load_checkpoint(_training_checkpoint(folder / "resume.pt"))  # and so does a resume
    assert not stale.exists()


# --------------------------------------------------------------------------- every command


def _bad_feature_file(path: Path) -> Path:
    save_file({"query_features": torch.zeros(3, 4), "query_ids": torch.arange(3),
               "query_cams": torch.ones(3), "gallery_features": torch.zeros(3, 4),
               "gallery_ids": torch.arange(3),
               "gallery_cams": torch.ones(3)}, str(path))
    return path


CASES = {
    "evaluate-float-ids": (lambda t: ["evaluate", "--features", _bad_feature_file(t / "f.st"),
                                      "--protocol", "sysu"], "query_cams must hold integers"),
    "evaluate-not-safetensors": (lambda t: ["evaluate", "--features", _text(t / "f.st"),
                                            "--protocol", "vcm"], "not a readable safetensors"),
    "check-outside-root": (lambda t: ["data", "check", "regdb", "--root", _escaping_regdb(t),
                                      "-o", "trial=1"], "outside the dataset root"),
    "check-bad-option": (lambda t: ["data", "check", "sysu", "--root", t, "-o", "mode=attic"],
                         "option 'mode'"),
    "synth-foreign-root": (lambda t: ["data", "synth", "--layout", "sysu", "--root",
                                      _text(t / "d" / "mine.txt").parent], "refusing to overwrite"),
    "eval-malformed-checkpoint": (lambda t: ["eval", "--ckpt", _training_checkpoint(
        t / "bad.pt", progress=None)], "lacks key 'progress'"),
    "eval-missing-checkpoint": (lambda t: ["eval", "--ckpt", t / "none.pt"], "none.pt"),
    "extract-malformed-checkpoint": (lambda t: ["extract", "--ckpt", _training_checkpoint(
        t / "bad.pt", **{"progress.epoch": "x"}), "--folder", t, "--out", t / "o.st",
        "--device", "cpu"], "'progress'.'epoch' must be int"),
    "search-garbage-checkpoint": (lambda t: ["search", "--ckpt", _text(t / "g.pt"), "--query",
                                             t, "--gallery", t], "g.pt"),
    "export-opset": (lambda t: ["export", "--ckpt", t / "x.pt", "--onnx", t / "x.onnx",
                                "--opset", "99"], "opset 99 is not supported"),
    "train-config-key": (lambda t: ["train", "-c", EXAMPLES / "tiny_synthetic.yaml",
                                    "train.nope=1"], "nope"),
    "config-missing-file": (lambda t: ["config", "-c", t / "absent.yaml"], "absent.yaml"),
}
CUDA_CASES = {
    "eval": lambda t: ["eval", "--ckpt", t / "x.pt", "--device", "cuda"],
    "extract": lambda t: ["extract", "--ckpt", t / "x.pt", "--folder", t, "--out", t / "o",
                          "--device", "cuda"],
    "search": lambda t: ["search", "--ckpt", t / "x.pt", "--query", t, "--gallery", t,
                         "--device", "cuda"],
    "export": lambda t: ["export", "--ckpt", t / "x.pt", "--onnx", t / "x.onnx",
                         "--device", "cuda:1"],
}


def _text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("hello\n")
    return path


def _escaping_regdb(tmp: Path) -> Path:
    root = tmp / "RegDB"
    synthesize("regdb", root, num_ids=4, seed=0, image_size=(32, 16), images_per_id=1, trials=1)
    _append(root / "idx" / "train_visible_1.txt", "../../other/vis/0015/x.jpg 0")
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_fails_cleanly(case, tmp_path, capsys):
    build, message = CASES[case]
    code, err = _run_cli(build(tmp_path), capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert err.startswith("vireid ")


@NO_CUDA
@pytest.mark.parametrize("command", sorted(CUDA_CASES))
def test_cuda_without_a_gpu_is_a_clean_error(command, tmp_path):
    out = subprocess.run([sys.executable, "-m", "vireid",
                          *map(str, CUDA_CASES[command](tmp_path))],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "--device cuda" in out.stderr and "not available" in out.stderr
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- no payloads


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_no_loadable_file_format_runs_a_payload(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    evil = _Payload(str(marker))
    # checkpoints (.pt), loaded by eval/extract/train.resume
    pt = tmp_path / "evil.pt"
    torch.save({"format": "vireid-checkpoint", "format_version": 1, "config": {},
                "method": {"w": evil}}, pt)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(pt)
    assert main(["eval", "--ckpt", str(pt)]) == 2
    # feature files given as .pt / .npz pickles instead of safetensors
    feats_pt = tmp_path / "feats.pt"
    torch.save({"query_features": evil}, feats_pt)
    npz = tmp_path / "feats.npz"
    np.savez(npz, query_features=np.array([evil], dtype=object))
    pickled = tmp_path / "feats.safetensors"
    pickled.write_bytes(pickle.dumps(evil))
    for path in (feats_pt, npz, pickled):
        assert main(["evaluate", "--features", str(path), "--protocol", "sysu"]) == 2
        assert main(["search", "--ckpt", str(pt), "--query", str(path),
                     "--gallery", str(path)]) == 2
    # safetensors: metadata is text, never code
    meta = tmp_path / "meta.safetensors"
    save_file({"features": torch.ones(2, 3)}, str(meta),
              metadata={"paths": pickle.dumps(evil).hex(), "model": "!!python/object:os.system"})
    from vireid.retrieval.features import load_feature_set

    with pytest.raises(ValueError):
        load_feature_set(meta)
    # YAML configs with python tags
    config = tmp_path / "evil.yaml"
    config.write_text(f"name: !!python/object/apply:pathlib.Path.touch [[{str(marker)!r}]]\n")
    assert main(["config", "-c", str(config)]) == 2
    capsys.readouterr()
    assert not marker.exists()


# --------------------------------------------------------------------------- CI browser


@pytest.mark.skipif(Path("/usr/bin/chromium").exists(), reason="chromium is installed here")
@pytest.mark.parametrize("apt_result", ["fails", "installs nothing"])
def test_ci_stops_when_chromium_cannot_be_installed(tmp_path, apt_result):
    """.ci/run installs chromium for the report's browser test; a failed install fails CI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    status = 1 if apt_result == "fails" else 0
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\necho apt $@ >> {tmp_path}/apt.log\nexit {status}\n")
    (bin_dir / "make").write_text(f"#!/bin/sh\ntouch {tmp_path}/make-ran\n")
    for tool in ("apt-get", "make"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(REPO / ".ci" / "run")], capture_output=True, text=True,
                         env=env)
    assert out.returncode != 0 and "ci: error" in out.stderr
    assert not (tmp_path / "make-ran").exists()
    calls = (tmp_path / "apt.log").read_text()
    assert calls.startswith("apt update")
    if apt_result == "installs nothing":
        assert "install -y -qq --no-install-recommends chromium" in calls


# --------------------------------------------------------------------------- kill and resume


def _train_cmd(config: Path, root: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vireid", "train", "-c", str(config), f"data.root={root}",
            f"output_dir={out}", f"name={name}", "data.workers=0", "train.log.jsonl=false",
            "train.checkpoint_every_steps=1", "train.deterministic=true", *extra]


def _killed_mid_epoch(cmd: list[str], last: Path, min_step: int) -> dict:
    """Start ``cmd``, SIGKILL it once ``last`` records ``min_step`` steps; the checkpoint's progress."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                try:
                    progress = torch.load(last, weights_only=True)["progress"]
                except Exception:  # noqa: BLE001 - replaced while reading: try again
                    progress = None
                if progress and progress["global_step"] >= min_step:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    return load_checkpoint(last)["progress"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image", "video"])
def test_killed_training_resumes_bit_exactly(kind, tmp_path):
    if kind == "image":
        root = tmp_path / "SYSU-MM01"
        synthesize("sysu", root, num_ids=6, seed=0, image_size=(32, 16), images_per_camera=4)
        config = EXAMPLES / "tiny_synthetic.yaml"
        extra = ["data.image_size=[32,16]", "data.identities_per_batch=2",
                 "data.instances_per_identity=2", "eval.splits=[all-search/trial0]",
                 "train.max_steps=4"]
    else:
        root = tmp_path / "HITSZ-VCM"
        synthesize("vcm", root, num_ids=6, seed=0, image_size=(32, 16), frames_per_tracklet=15)
        config = EXAMPLES / "tiny_synthetic.yaml"
        extra = ["data.name=vcm", "model.backbone=tiny-rn50", "data.image_size=[32,16]",
                 "data.video.num_frames=2", "data.video.test_sampling=first_of_chunk",
                 "data.identities_per_batch=2", "data.instances_per_identity=2",
                 "eval.splits=[ir->vis]", "train.max_steps=4"]
    full = subprocess.run(_train_cmd(config, root, tmp_path, "full", *extra),
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    progress = _killed_mid_epoch(_train_cmd(config, root, tmp_path, "killed", *extra), last, 3)
    assert not progress["stage_done"] or progress["stage"] != "image"
    stale = last.parent / f".last.pt.{HOST}.999999999.0badc0de.tmp"
    stale.write_bytes(b"partial")  # what a kill during a write leaves
    resumed = subprocess.run(_train_cmd(config, root, tmp_path, "killed", *extra,
                                        f"train.resume={last}"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not stale.exists()
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a["progress"] == b["progress"]
    assert a["method"].keys() == b["method"].keys()
    for key, value in a["method"].items():
        assert torch.equal(value, b["method"][key]), key
