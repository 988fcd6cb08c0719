"""Synthetic visible-infrared generator: determinism, real layouts, cross-modal properties."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid.data.synthetic import (
    LAYOUTS,
    MARKER,
    Pose,
    SyntheticLayoutError,
    colorize,
    make_rng,
    rasterize,
    render_pair,
    render_person,
    render_tracklet,
    sample_attributes,
    sample_camera,
    synthesize,
)
from vireid.data.synthetic.render import (
    NEUTRAL_CAMERA,
    OCCLUDER,
    UPPER,
    TrackletPlan,
    frame_layers,
    plan_tracklet,
    sample_look,
)

SMALL = {
    "sysu": {"num_ids": 10, "images_per_camera": 2},
    "regdb": {"num_ids": 8, "images_per_id": 4},
    "llcm": {"num_ids": 10, "images_per_camera": 1},
    "vcm": {"num_ids": 8, "frames_per_tracklet": 15},
    "bupt": {"num_ids": 10, "frames_per_tracklet": 6},
}


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _is_gray3(path: Path) -> bool:
    img = Image.open(path)
    a = np.asarray(img)
    return (
        img.mode == "RGB"
        and np.array_equal(a[..., 0], a[..., 1])
        and np.array_equal(a[..., 1], a[..., 2])
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for layout, options in SMALL.items():
        root = tmp_path_factory.mktemp(layout) / "data"
        out[layout] = (root, synthesize(layout, root, seed=0, **options))
    return out


def test_layout_names():
    assert LAYOUTS == ("sysu", "regdb", "llcm", "vcm", "bupt")


# --- determinism ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_gives_identical_bytes_and_other_seed_differs(layout, datasets, tmp_path):
    root, stats = datasets[layout]
    again = synthesize(layout, tmp_path / "again", seed=0, **SMALL[layout])
    first, second = _hashes(root), _hashes(tmp_path / "again")
    assert first == second
    drop = {"root", "seconds"}
    assert {k: v for k, v in stats.items() if k not in drop} == {
        k: v for k, v in again.items() if k not in drop
    }
    synthesize(layout, tmp_path / "other", seed=1, **SMALL[layout])
    other = _hashes(tmp_path / "other")
    images = [p for p in first if p.endswith((".jpg", ".bmp"))]
    same = sum(1 for p in images if other.get(p) == first[p])
    assert len(images) > 20
    assert same == 0


def test_files_do_not_depend_on_generation_order(tmp_path):
    # identities 1..4 are rendered from their own seeds, whatever else is written
    synthesize("regdb", tmp_path / "a", num_ids=4, images_per_id=3, trials=1)
    synthesize("regdb", tmp_path / "b", num_ids=6, images_per_id=3, trials=1)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    shared = [p for p in a if p.startswith(("Visible/", "Thermal/"))]
    assert len(shared) == 4 * 3 * 2
    assert all(b[p] == a[p] for p in shared)


# --- the five layouts ----------------------------------------------------------------


def test_sysu_layout(datasets):
    root, stats = datasets["sysu"]
    ids = {}
    for split in ("train", "val", "test"):
        lines = (root / "exp" / f"{split}_id.txt").read_text().splitlines()
        assert len(lines) == 1 and re.fullmatch(r"\d+(,\d+)*", lines[0])
        ids[split] = [int(x) for x in lines[0].split(",")]
        assert ids[split] == sorted(ids[split])
    train, val, test = (set(ids[s]) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 10 == stats["ids"]
    cams: dict[int, set[int]] = {}
    for cam in range(1, 7):
        folder = root / f"cam{cam}"
        assert folder.is_dir()
        cams[cam] = set()
        for pid_dir in folder.iterdir():
            assert re.fullmatch(r"\d{4}", pid_dir.name)
            files = sorted(f.name for f in pid_dir.iterdir())
            assert files == [f"{i:04d}.jpg" for i in range(1, len(files) + 1)]
            cams[cam].add(int(pid_dir.name))
            for f in pid_dir.iterdir():  # reference loader: camera at [-15], pid at [-13:-9]
                path = f.as_posix()
                assert int(path[-15]) == cam and int(path[-13:-9]) == int(pid_dir.name)
    on_disk = set().union(*cams.values())
    assert on_disk == train | val | test
    assert any(pid not in cams[c] for pid in on_disk for c in cams)  # not every id everywhere
    for pid in on_disk:
        assert pid in cams[3] | cams[6] and pid in cams[1] | cams[2] | cams[4] | cams[5]
    for pid in test:
        assert pid in cams[1] | cams[2]  # indoor search has a gallery for every test id
    assert any(pid in cams[2] and pid in cams[3] for pid in test)
    for cam in (3, 6):
        assert all(_is_gray3(f) for f in (root / f"cam{cam}").rglob("*.jpg"))
    assert not all(_is_gray3(f) for f in (root / "cam1").rglob("*.jpg"))


REGDB_LINE = re.compile(
    r"(Visible|Thermal)/(\d+)/(male|female)_(front|back)_(v|t)_(\d{5})_(\d+)\.bmp (\d+)"
)


def test_regdb_layout(datasets):
    root, _ = datasets["regdb"]
    for k in range(1, 11):
        per_split = {}
        for split in ("train", "test"):
            labels = {}
            for modality, folder, letter in (
                ("visible", "Visible", "v"),
                ("thermal", "Thermal", "t"),
            ):
                lines = (root / "idx" / f"{split}_{modality}_{k}.txt").read_text().splitlines()
                pid_label = {}
                for line in lines:
                    m = REGDB_LINE.fullmatch(line)
                    assert m, line
                    assert m.group(1) == folder and m.group(5) == letter
                    assert m.group(2) == m.group(7)
                    assert (root / line.split(" ")[0]).is_file()
                    pid_label.setdefault(int(m.group(2)), set()).add(int(m.group(8)))
                assert all(len(v) == 1 for v in pid_label.values())
                assert len(lines) == 4 * len(pid_label)
                labels[modality] = {p: v.pop() for p, v in pid_label.items()}
            assert labels["visible"] == labels["thermal"]
            assert sorted(labels["visible"].values()) == list(range(4))
            per_split[split] = set(labels["visible"])
        assert not per_split["train"] & per_split["test"]
        assert per_split["train"] | per_split["test"] == set(range(1, 9))
    bmp = next((root / "Thermal" / "1").iterdir())
    assert bmp.read_bytes()[:2] == b"BM" and _is_gray3(bmp)
    # a visible image and its thermal twin share the number and the viewpoint
    vis_names = sorted(p.name for p in (root / "Visible" / "3").iterdir())
    th_names = sorted(p.name for p in (root / "Thermal" / "3").iterdir())
    assert [n.replace("_v_", "_t_") for n in vis_names] == th_names


LLCM_NAME = re.compile(r"(\d{4})_c(\d{2})_s(\d{6})_f(\d+)_(vis|nir)\.jpg")


def test_llcm_layout(datasets):
    root, stats = datasets["llcm"]
    lines = (root / "idx" / "test_id.txt").read_text().splitlines()
    test_ids = [int(x) for x in lines[0].split(",")]
    assert len(lines) == 1 and len(test_ids) == stats["test_ids"]
    assert {p.name for p in (root / "test_nir").iterdir()} == {
        f"cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9)
    }
    assert {p.name for p in (root / "test_vis").iterdir()} == {f"cam{c}" for c in range(1, 10)}
    for tag in ("vis", "nir"):
        for f in (root / f"test_{tag}").rglob("*.jpg"):
            m = LLCM_NAME.fullmatch(f.name)
            assert m and m.group(5) == tag
            assert f.parent.parent.name == f"cam{int(m.group(2))}" and f.parent.name == m.group(1)
            assert int(m.group(1)) in test_ids
            assert (root / tag / m.group(1) / f.name).read_bytes() == f.read_bytes()
        train_pids = set()
        for split in ("train", "test"):
            pid_label = {}
            for line in (root / "idx" / f"{split}_{tag}.txt").read_text().splitlines():
                path, label = line.split(" ")
                folder, pid, name = path.split("/")
                m = LLCM_NAME.fullmatch(name)
                assert folder == tag and m and m.group(1) == pid and m.group(5) == tag
                assert (root / path).is_file()
                pid_label.setdefault(int(pid), set()).add(int(label))
            assert all(len(v) == 1 for v in pid_label.values())
            order = sorted(pid_label)
            assert [pid_label[p].pop() for p in order] == list(range(len(order)))
            if split == "test":
                assert set(order) == set(test_ids)
            else:
                train_pids = set(order)
        assert not train_pids & set(test_ids) and len(train_pids) == stats["train_ids"]
    assert all(_is_gray3(f) for f in (root / "nir").rglob("*.jpg"))


def _vcm_decode(name: str) -> str:
    """Independent frame-name decoding (docs/datasets.md#hitsz-vcm: pid, M, D..T camera, file after F)."""
    m = re.fullmatch(r"(\d{4})M([12])D(\d+)T(\d+)F(\d+\.jpg)", name)
    assert m, name
    return f"{m.group(1)}/{'ir' if m.group(2) == '1' else 'rgb'}/D{m.group(3)}/{m.group(5)}"


def _check_vcm(root: Path, with_split_dirs: bool) -> None:
    short = {}
    for part in ("train", "test"):
        names = (root / "info" / f"{part}_name.txt").read_text().splitlines()
        rows = [
            list(map(int, r.split(" ")))
            for r in (root / "info" / f"track_{part}_info.txt").read_text().splitlines()
        ]
        assert rows[0][1] == 1 and rows[-1][2] == len(names)
        prefix = part.capitalize() + "/" if with_split_dirs else ""
        for i, (m, start, end, pid, cam) in enumerate(rows):
            if i:
                assert start == rows[i - 1][2] + 1
            frames = names[start - 1 : end]
            for name in frames:
                assert int(name[:4]) == pid and name[5] == str(m)
                assert name[name.find("D") : name.find("T")] == f"D{cam}"
                assert (root / (prefix + _vcm_decode(name))).is_file()
            pixels = [np.asarray(Image.open(root / (prefix + _vcm_decode(n)))) for n in frames[:3]]
            assert not np.array_equal(pixels[0], pixels[1])  # the person moves
            if m == 1:
                assert _is_gray3(root / (prefix + _vcm_decode(frames[0])))
        short[part] = sum(1 for r in rows if r[2] - r[1] + 1 < 12)
        if part == "test":
            idx = (root / "info" / "query_IDX.txt").read_text().splitlines()
            assert len(idx) == 1
            query = [int(x) for x in idx[0].split(" ")]
            assert query == [i + 1 for i, r in enumerate(rows) if r[0] == 1]
    assert short["train"] >= 1 and short["test"] >= 1  # min_seq_len filtering is exercised
    assert (root / "Train").is_dir() == with_split_dirs


def test_vcm_layout(datasets):
    root, stats = datasets["vcm"]
    _check_vcm(root, with_split_dirs=True)
    assert stats["train_ids"] + stats["test_ids"] == 8


def test_vcm_layout_without_train_test_level(tmp_path):
    synthesize("vcm", tmp_path / "vcm", num_ids=4, frames_per_tracklet=15, split_dirs=False)
    _check_vcm(tmp_path / "vcm", with_split_dirs=False)
    assert not (tmp_path / "vcm" / "Test").exists()


def test_bupt_layout(datasets):
    root, stats = datasets["bupt"]
    data = json.loads((root / "data_paths.json").read_text())
    cams = {"LS3", "G25", "CQ1", "W4", "TSG1", "TSG2"}
    for pid, entry in data.items():
        assert set(entry) == {"RGB", "IR", "FakeIR"}
        for modality, per_cam in entry.items():
            assert set(per_cam) <= cams
            for cam, per_tracklet in per_cam.items():
                for tid, paths in per_tracklet.items():
                    assert tid.isdigit() and paths
                    for p in paths:
                        assert (
                            p.startswith(f"{pid}/{modality}/{cam}/")
                            and (root / "DATA" / p).is_file()
                        )
                    rgb = entry["RGB"][cam][tid]
                    assert entry["FakeIR"][cam][tid] == [
                        p.replace("/RGB/", "/FakeIR/") for p in rgb
                    ]
                    # training pairs are aligned frame by frame
                    assert [p.split("_")[-1] for p in entry["IR"][cam][tid]] == [
                        p.split("_")[-1] for p in rgb
                    ]
    seen = {}
    for name in ("train", "train_auxiliary", "query", "gallery"):
        lines = (root / f"{name}.txt").read_text().splitlines()
        assert lines, name
        for line in lines:
            pid, modality, cam, tid = line.split(" ")
            assert (modality == "RGB/IR") == name.startswith("train")
            for mod in modality.split("/"):
                assert data[pid][mod][cam][tid]
            seen.setdefault(name, set()).add(pid)
    assert not seen["train"] & seen["query"] and not seen["train"] & seen["train_auxiliary"]
    assert seen["query"] == seen["gallery"] and len(seen["query"]) == stats["test_ids"]
    for pid in seen["train_auxiliary"]:
        assert all(len(data[pid][m]) == 1 for m in ("RGB", "IR"))  # single-camera ids
    query = [line.split(" ") for line in (root / "query.txt").read_text().splitlines()]
    # each test id: its query tracklet once per modality
    assert len(query) == 2 * len(seen["query"]) and {q[1] for q in query} == {"RGB", "IR"}
    ir = [p for p in (root / "DATA").rglob("*.jpg") if "/IR/" in p.as_posix()]
    assert ir and all(_is_gray3(p) for p in ir[:100])


# --- errors --------------------------------------------------------------------------


def test_unknown_layout_is_an_error(tmp_path):
    with pytest.raises(SyntheticLayoutError, match="unknown layout 'market'.*sysu"):
        synthesize("market", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_foreign_non_empty_root_is_left_alone(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(SyntheticLayoutError, match="not empty"):
        synthesize("sysu", tmp_path, num_ids=6, images_per_camera=1)
    assert (tmp_path / "mine.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_previous_synthetic_root_is_replaced_without_stale_files(tmp_path):
    synthesize("regdb", tmp_path, num_ids=6, images_per_id=2, trials=2)
    assert (tmp_path / "Visible" / "6").is_dir() and (tmp_path / MARKER).is_file()
    synthesize("regdb", tmp_path, num_ids=4, images_per_id=2, trials=2)
    assert not (tmp_path / "Visible" / "6").exists()
    assert json.loads((tmp_path / MARKER).read_text())["num_ids"] == 4


def test_too_few_ids_and_unknown_options_are_errors(tmp_path):
    with pytest.raises(SyntheticLayoutError, match="at least 5 identities"):
        synthesize("sysu", tmp_path / "a", num_ids=3)
    with pytest.raises(SyntheticLayoutError, match="unknown option.*frames_per_tracklet"):
        synthesize("sysu", tmp_path / "b", num_ids=8, frames_per_tracklet=4)
    with pytest.raises(SyntheticLayoutError, match="frames_per_tracklet must be >= 15"):
        synthesize("vcm", tmp_path / "c", num_ids=8, frames_per_tracklet=8)


# --- rendering properties ------------------------------------------------------------


def test_render_person_sizes_and_infrared_channels():
    attrs = sample_attributes(0, 5)
    vis = render_person(attrs, "visible", rng=make_rng(1))
    ir = render_person(attrs, "infrared", rng=make_rng(1), image_size=(96, 48))
    assert vis.shape == (128, 64, 3) and vis.dtype == np.uint8
    assert ir.shape == (96, 48, 3)
    assert np.array_equal(ir[..., 0], ir[..., 1]) and np.array_equal(ir[..., 0], ir[..., 2])
    assert not np.array_equal(vis[..., 0], vis[..., 2])


def test_visible_colour_does_not_predict_infrared_brightness():
    """Across identities, visible garment luminance is uncorrelated with infrared brightness."""
    pose = Pose(view="front", phase=0.0, swing=0.0, scale=0.95)
    vis_lum, ir_val, thermal, colour_lum = [], [], [], []
    weights = np.array([0.299, 0.587, 0.114])
    for pid in range(1, 301):
        attrs = sample_attributes(3, pid)
        layers = rasterize(attrs, pose, (128, 64))
        mask = (layers.part == UPPER) & ~layers.secondary
        mask[:, :2] = mask[:, -2:] = False
        vis, ir = render_pair(attrs, pose, rng=make_rng(9, pid))
        vis_lum.append(float((vis[mask] @ weights).mean()))
        ir_val.append(float(ir[mask][:, 0].mean()))
        thermal.append(attrs.upper.thermal)
        colour_lum.append(float(np.dot(attrs.upper.color, weights)))
    # the measurement works: each image follows its own modality's attribute ...
    assert np.corrcoef(ir_val, thermal)[0, 1] > 0.9
    assert np.corrcoef(vis_lum, colour_lum)[0, 1] > 0.8
    # ... and a grey-scale visible image says nothing about the infrared one
    assert abs(np.corrcoef(vis_lum, ir_val)[0, 1]) < 0.2


def test_identities_differ_in_shape_and_pattern():
    attrs = [sample_attributes(0, pid) for pid in range(1, 41)]
    signatures = {
        (
            a.upper.pattern,
            a.lower.pattern,
            a.lower_kind,
            a.sleeve_length,
            a.hair_length,
            a.backpack is None,
            a.shoulder_bag is None,
            a.hat is None,
            a.glasses,
        )
        for a in attrs
    }
    assert len(signatures) >= 30
    pose = Pose(view="back", phase=0.5, swing=0.5, scale=0.95)
    maps = [rasterize(a, pose, (128, 64)) for a in attrs]
    again = rasterize(attrs[0], pose, (128, 64))
    assert np.array_equal(again.part, maps[0].part) and np.array_equal(
        again.secondary, maps[0].secondary
    )
    for i in range(len(maps)):
        for j in range(i + 1, len(maps)):
            differ = (maps[i].part != maps[j].part) | (maps[i].secondary != maps[j].secondary)
            assert differ.sum() >= 150, (i, j)


def test_tracklets_walk():
    attrs = sample_attributes(0, 7)
    camera = sample_camera(make_rng(4))
    plan = plan_tracklet(attrs, make_rng(5), camera, 12, occlusion_prob=0.0, blur_prob=0.0)
    side = tuple(dataclasses.replace(p, view="side") for p in plan.poses)
    plan = TrackletPlan(side, None, plan.occluded, plan.blurred)
    parts = [frame_layers(attrs, plan, i, (128, 64)).part for i in range(12)]
    for a, b in zip(parts, parts[1:]):
        assert (a != b).sum() > 10  # limbs swing from frame to frame
    phases = [p.phase for p in plan.poses]
    assert np.allclose(np.diff(phases), np.diff(phases)[0]) and np.diff(phases)[0] > 0
    frames = render_tracklet(attrs, "infrared", 6, camera=camera, rng=make_rng(6))
    assert len(frames) == 6 and all(not np.array_equal(frames[0], f) for f in frames[1:])


def test_occlusion_and_blur_events_happen():
    attrs = sample_attributes(0, 2)
    plans = [plan_tracklet(attrs, make_rng(i), NEUTRAL_CAMERA, 16) for i in range(40)]
    assert any(any(p.occluded) for p in plans) and not all(any(p.occluded) for p in plans)
    assert any(any(p.blurred) for p in plans)
    occluded = next(p for p in plans if any(p.occluded))
    i = occluded.occluded.index(True)
    layers = frame_layers(attrs, occluded, i, (128, 64))
    look = sample_look(make_rng(1), NEUTRAL_CAMERA, "visible", (128, 64))
    assert (layers.part == OCCLUDER).any()
    assert colorize(layers, attrs, "visible", look, make_rng(2)).shape == (128, 64, 3)
