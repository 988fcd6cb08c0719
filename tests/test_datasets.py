"""Dataset loaders on small trees written in each benchmark's real layout.

The trees are written by hand here (an independent statement of the formats
in docs/datasets.md); the loaders are also run on the project's synthetic generator
when it provides the layout (section at the end).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vireid.data import synthetic
from vireid.data.datasets import (
    ALIASES,
    DATASETS,
    DatasetLayoutError,
    DatasetOptionError,
    IndexFormatError,
    MissingImagesError,
    dataset_options,
    dataset_stats,
    expected_tree,
    format_stats,
    get_dataset,
    load_dataset,
)
from vireid.data.datasets.vcm import frame_relpath
from vireid.data.types import Modality


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8")


# ---------------------------------------------------------------------------
# Hand-written trees
# ---------------------------------------------------------------------------

SYSU_TRAIN, SYSU_VAL, SYSU_TEST = [5, 1, 2], [9], [12, 3, 20, 7]
# (cam, pid) -> number of images; absent pairs have no folder.
SYSU_COUNTS = {
    (1, 1): 3, (2, 1): 2, (3, 1): 4, (4, 2): 2, (6, 2): 3, (5, 5): 1, (3, 5): 2,
    (1, 9): 2, (6, 9): 2,
    (1, 3): 5, (2, 3): 4, (4, 3): 3, (5, 3): 6, (3, 3): 4, (6, 3): 2,
    (1, 7): 7, (2, 7): 3, (5, 7): 2, (3, 7): 3,
    (1, 12): 2, (2, 12): 6, (4, 12): 5, (5, 12): 4, (6, 12): 5,
    (2, 20): 9, (4, 20): 8, (3, 20): 1, (6, 20): 2,
}


def make_sysu(root: Path, counts=SYSU_COUNTS) -> Path:
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    for (cam, pid), n in counts.items():
        for i in range(1, n + 1):
            touch(root / f"cam{cam}" / f"{pid:04d}" / f"{i:04d}.jpg")
    (root / "exp").mkdir(exist_ok=True)
    (root / "exp" / "train_id.txt").write_text(",".join(map(str, SYSU_TRAIN)) + "\n")
    (root / "exp" / "val_id.txt").write_text(",".join(map(str, SYSU_VAL)) + "\n")
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, SYSU_TEST)) + "\n")
    return root


def make_regdb(root: Path, trials=(1, 2)) -> Path:
    """Ids 1..6; trial k trains on three of them. File names as in the release."""
    for pid in range(1, 7):
        for i in range(3):
            touch(root / "Visible" / str(pid) / f"male_back_v_{100 * pid + i:05d}_{pid}.bmp")
            touch(root / "Thermal" / str(pid) / f"male_back_t_{100 * pid + i:05d}_{pid}.bmp")
    (root / "idx").mkdir(exist_ok=True)
    for k in trials:
        train_ids = [1, 2, 3] if k == 1 else [4, 5, 6]
        test_ids = [4, 5, 6] if k == 1 else [1, 2, 3]
        for part, ids in (("train", train_ids), ("test", test_ids)):
            for modality, folder, tag in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                lines = [
                    f"{folder}/{pid}/male_back_{tag}_{100 * pid + i:05d}_{pid}.bmp {label}"
                    for label, pid in enumerate(ids) for i in range(3)
                ]
                (root / "idx" / f"{part}_{modality}_{k}.txt").write_text("\n".join(lines) + "\n")
    return root


LLCM_TEST = [4, 11]
LLCM_TEST_COUNTS = {
    ("test_vis", 1, 4): 3, ("test_vis", 3, 4): 2, ("test_vis", 9, 4): 4,
    ("test_vis", 2, 11): 5, ("test_vis", 3, 11): 1,
    ("test_nir", 1, 4): 2, ("test_nir", 4, 4): 3, ("test_nir", 2, 11): 4, ("test_nir", 9, 11): 2,
    # a NIR cam3 folder is not part of the protocol and must be ignored
    ("test_nir", 3, 11): 2,
}


def make_llcm(root: Path) -> Path:
    idx = root / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    train = {"vis": [], "nir": []}
    for label, pid in enumerate([7, 2]):
        for modality in ("vis", "nir"):
            for i, cam in enumerate((1, 6, 9)):
                name = f"{pid:04d}_c{cam:02d}_s1857{i}_f{31 + i}_{modality}.jpg"
                touch(root / modality / f"{pid:04d}" / name)
                train[modality].append(f"{modality}/{pid:04d}/{name} {label}")
    (idx / "train_vis.txt").write_text("\n".join(train["vis"]) + "\n")
    (idx / "train_nir.txt").write_text("\n".join(train["nir"]) + "\n")
    (idx / "test_id.txt").write_text(",".join(map(str, LLCM_TEST)) + "\n")
    for (top, cam, pid), n in LLCM_TEST_COUNTS.items():
        for i in range(n):
            suffix = "vis" if top == "test_vis" else "nir"
            touch(root / top / f"cam{cam}" / f"{pid:04d}" / f"{pid:04d}_c{cam:02d}_s{i}_f{i}_{suffix}.jpg")
    return root


# VCM tracklets: (modality 1=IR/2=RGB, pid, cam, number of frames)
VCM_TRAIN = [(2, 1, 3, 12), (1, 1, 2, 14), (2, 2, 1, 5), (1, 2, 4, 13), (2, 5, 2, 12)]
VCM_TEST = [(1, 8, 2, 12), (2, 8, 3, 15), (1, 9, 5, 3), (2, 9, 6, 12), (2, 8, 4, 12),
            (1, 9, 2, 16)]
VCM_QUERY_ROWS = [1, 3, 6]  # 1-based rows of the IR tracklets


def make_vcm(root: Path, with_split_level: bool = True) -> Path:
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    for part, tracks in (("train", VCM_TRAIN), ("test", VCM_TEST)):
        names, rows = [], []
        for track_id, (m, pid, cam, n) in enumerate(tracks, start=1):
            start = len(names) + 1
            for f in range(1, n + 1):
                name = f"{pid:04d}M{m}D{cam}T{track_id}F{f}.jpg"
                names.append(name)
                base = root / ("Train" if part == "train" else "Test") if with_split_level else root
                touch(base / frame_relpath(name))
            rows.append(f"{m} {start} {len(names)} {pid} {cam}")
        (info / f"{part}_name.txt").write_text("\n".join(names) + "\n")
        (info / f"track_{part}_info.txt").write_text("\n".join(rows) + "\n")
    (info / "query_IDX.txt").write_text(" ".join(map(str, VCM_QUERY_ROWS)) + "\n")
    return root


BUPT_CAMS = ["LS3", "G25", "CQ1", "W4", "TSG1", "TSG2"]


def make_bupt(root: Path, gallery_rgb: int = 66) -> Path:
    """Train pids 3, 10, 2 (pairs); auxiliary pid 40; test pids 20..; see the lines below."""
    data: dict = {}

    def tracklet(pid: int, modality: str, cam: str, tid: int, n: int) -> None:
        paths = [f"{pid}/{modality}/{cam}/{pid}_{modality}_{cam}_{tid}_{100 + i}.jpg"
                 for i in range(n)]
        data.setdefault(str(pid), {}).setdefault(modality, {}).setdefault(cam, {})[str(tid)] = paths
        for p in paths:
            touch(root / "DATA" / p)

    train_lines = []
    for pid, cam, tid, n in ((3, "LS3", 1, 4), (10, "G25", 1, 6), (2, "TSG2", 2, 5), (3, "CQ1", 1, 3)):
        tracklet(pid, "RGB", cam, tid, n)
        tracklet(pid, "IR", cam, tid, n)
        tracklet(pid, "FakeIR", cam, tid, n)
        train_lines.append(f"{pid} RGB/IR {cam} {tid}")
    aux_lines = []
    for tid in (1, 2):
        tracklet(40, "RGB", "W4", tid, 3)
        tracklet(40, "IR", "W4", tid, 3)
        aux_lines.append(f"40 RGB/IR W4 {tid}")
    query_lines = []
    for pid in (20, 21, 22):
        tracklet(pid, "IR", "LS3", 1, 3)
        query_lines.append(f"{pid} IR LS3 1")
    for pid in (20, 21):
        tracklet(pid, "RGB", "TSG1", 1, 2)
        query_lines.append(f"{pid} RGB TSG1 1")
    gallery_lines = []
    for j in range(gallery_rgb):
        pid = 20 + j % 3
        tracklet(pid, "RGB", BUPT_CAMS[j % 6], 10 + j, 2)
        gallery_lines.append(f"{pid} RGB {BUPT_CAMS[j % 6]} {10 + j}")
    for pid in (20, 21, 22):
        tracklet(pid, "IR", "G25", 5, 2)
        gallery_lines.append(f"{pid} IR G25 5")
    (root / "data_paths.json").write_text(json.dumps(data))
    for name, lines in (("train.txt", train_lines), ("train_auxiliary.txt", aux_lines),
                        ("query.txt", query_lines), ("gallery.txt", gallery_lines)):
        (root / name).write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------
# Registry and options
# ---------------------------------------------------------------------------


def test_registry_names_and_aliases():
    assert set(DATASETS) == {"sysu", "regdb", "llcm", "vcm", "bupt"}
    assert get_dataset("SYSU-MM01") is DATASETS["sysu"]
    assert get_dataset("hitsz-vcm") is DATASETS["vcm"]
    assert get_dataset("BUPTCampus") is DATASETS["bupt"]
    assert all(target in DATASETS for target in ALIASES.values())
    with pytest.raises(DatasetOptionError, match="unknown dataset 'market'"):
        get_dataset("market")
    assert "rand_perm_cam" in dataset_options("sysu")["toolkit_dir"][1]
    for name in DATASETS:
        assert expected_tree(name).splitlines()[0].endswith("/")


def test_unknown_and_invalid_options_name_the_key(tmp_path):
    root = make_sysu(tmp_path / "SYSU-MM01")
    with pytest.raises(DatasetOptionError, match="'gallery_size'"):
        load_dataset("sysu", root, gallery_size=3)
    with pytest.raises(DatasetOptionError, match="option 'mode'"):
        load_dataset("sysu", root, mode="outdoor")
    with pytest.raises(DatasetOptionError, match="option 'trial'"):
        load_dataset("regdb", root, trial=0)
    with pytest.raises(DatasetOptionError, match="option 'directions'"):
        load_dataset("llcm", root, directions="ir->ir")


# ---------------------------------------------------------------------------
# Layout errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_root_names_the_path_and_the_tree(tmp_path, name):
    missing = tmp_path / "nowhere" / "data"
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(name, missing)
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message
    assert expected_tree(name).splitlines()[1].strip() in message


@pytest.mark.parametrize(
    "name, make, index_file",
    [
        ("sysu", make_sysu, "exp/test_id.txt"),
        ("regdb", make_regdb, "idx/test_thermal_1.txt"),
        ("llcm", make_llcm, "idx/train_nir.txt"),
        ("vcm", make_vcm, "info/query_IDX.txt"),
        ("bupt", make_bupt, "gallery.txt"),
    ],
)
def test_missing_index_file_is_one_clear_error(tmp_path, name, make, index_file):
    root = make(tmp_path / "data")
    os.remove(root / index_file)
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(name, root)
    assert str(root / index_file) in str(info.value)
    assert info.value.missing == [str(root / index_file)]
    assert "Expected layout" in str(info.value)


def test_wrong_layout_lists_every_missing_path(tmp_path):
    root = make_regdb(tmp_path / "RegDB")
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset("sysu", root)
    assert len(info.value.missing) == 9  # six camera folders and three id files
    assert str(root / "exp" / "train_id.txt") in str(info.value)


def test_root_one_level_too_high_gets_a_hint(tmp_path):
    make_sysu(tmp_path / "SYSU-MM01")
    with pytest.raises(DatasetLayoutError, match="Hint: .*SYSU-MM01 has this layout"):
        load_dataset("sysu", tmp_path)


def test_missing_images_error_names_files_and_count(tmp_path):
    root = make_regdb(tmp_path / "RegDB")
    gone = sorted((root / "Thermal" / "2").iterdir())
    for path in gone:
        path.unlink()
    with pytest.raises(MissingImagesError) as info:
        load_dataset("regdb", root, trial=1)
    message = str(info.value)
    assert "3 image file(s) listed in" in message and "train_thermal_1.txt" in message
    assert str(gone[0]) in message
    # the check can be switched off; the index is then trusted
    data = load_dataset("regdb", root, trial=1, verify_files=False)
    assert len(data.train) == 18


def test_malformed_index_line_names_file_and_line(tmp_path):
    root = make_regdb(tmp_path / "RegDB")
    path = root / "idx" / "train_visible_1.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(" ", " x")
    path.write_text("\n".join(lines))
    with pytest.raises(IndexFormatError, match=r"train_visible_1.txt, line 5: label 'x"):
        load_dataset("regdb", root)


# ---------------------------------------------------------------------------
# SYSU-MM01
# ---------------------------------------------------------------------------


def test_sysu_training_set(tmp_path):
    root = make_sysu(tmp_path / "SYSU-MM01")
    data = load_dataset("sysu", root)
    assert data.name == "sysu" and data.root == str(root)
    # train_id ∪ val_id = {1, 2, 5, 9}: labels are ranks 0..3
    assert data.num_classes == 4
    assert {s.pid: s.label for s in data.train} == {1: 0, 2: 1, 5: 2, 9: 3}
    expected = sum(n for (cam, pid), n in SYSU_COUNTS.items() if pid in (1, 2, 5, 9))
    assert len(data.train) == expected == 21
    for s in data.train:
        assert os.path.isabs(s.path)
        assert Path(s.path).parent.parent.name == f"cam{s.camera}"
        assert s.modality == (Modality.INFRARED if s.camera in (3, 6) else Modality.VISIBLE)
    assert sum(s.modality == Modality.INFRARED for s in data.train) == 4 + 3 + 2 + 2


def test_sysu_query_gallery_and_trials(tmp_path):
    root = make_sysu(tmp_path / "SYSU-MM01")
    data = load_dataset("sysu", root)
    assert [s.name for s in data.splits] == [f"all-search/trial{t}" for t in range(10)]
    query = data.splits[0].query
    # every cam3 + cam6 image of the test ids
    assert len(query) == sum(n for (cam, pid), n in SYSU_COUNTS.items()
                             if pid in SYSU_TEST and cam in (3, 6))
    assert [s.pid for s in query] == sorted(s.pid for s in query)
    folders = {(cam, pid) for (cam, pid) in SYSU_COUNTS if pid in SYSU_TEST and cam in (1, 2, 4, 5)}
    for split in data.splits:
        assert split.protocol == "sysu" and split.direction == "ir->vis"
        assert split.query == query
        assert sorted((s.camera, s.pid) for s in split.gallery) == sorted(folders)
    draws = {tuple(s.path for s in split.gallery) for split in data.splits}
    assert len(draws) > 1  # the seeds give different draws


def test_sysu_indoor_draws_differ_from_all_search(tmp_path):
    root = make_sysu(tmp_path / "SYSU-MM01")
    all_search = load_dataset("sysu", root, mode="all", trials=3)
    indoor = load_dataset("sysu", root, mode="indoor", trials=3)
    both = load_dataset("sysu", root, mode="both", trials=3)
    assert [s.name for s in indoor.splits] == [f"indoor-search/trial{t}" for t in range(3)]
    assert [s.name for s in both.splits] == [s.name for s in all_search.splits + indoor.splits]
    assert indoor.splits[0].query == all_search.splits[0].query
    for split in indoor.splits:
        assert {s.camera for s in split.gallery} == {1, 2}
    # Same seed, different camera list: the draw for the indoor cameras differs from
    # the cam1/cam2 part of the all-search draw in at least one trial.
    differ = [
        [s.path for s in a.gallery if s.camera in (1, 2)] != [s.path for s in i.gallery]
        for a, i in zip(all_search.splits, indoor.splits)
    ]
    assert any(differ)


def test_sysu_multi_shot(tmp_path):
    root = make_sysu(tmp_path / "SYSU-MM01")
    data = load_dataset("sysu", root, number_shot=10, trials=2)
    assert data.splits[0].name == "all-search-10shot/trial0"
    gallery = data.splits[0].gallery
    for (cam, pid), n in SYSU_COUNTS.items():
        if pid in SYSU_TEST and cam in (1, 2, 4, 5):
            chosen = [s for s in gallery if (s.camera, s.pid) == (cam, pid)]
            assert len(chosen) == min(n, 10) and len({s.path for s in chosen}) == len(chosen)


def test_sysu_ignores_non_images_with_a_warning(tmp_path):
    root = make_sysu(tmp_path / "SYSU-MM01")
    (root / "cam1" / "0003" / "Thumbs.db").write_bytes(b"")
    with pytest.warns(UserWarning, match="ignored 1 non-image"):
        data = load_dataset("sysu", root, trials=1)
    assert all(s.path.endswith(".jpg") for split in data.splits for s in split.gallery)
    assert data.extra["ignored_files"] == 1


def test_sysu_official_draw_needs_toolkit(tmp_path):
    root = make_sysu(tmp_path / "SYSU-MM01")
    with pytest.raises(DatasetLayoutError, match="toolkit_dir"):
        load_dataset("sysu", root, gallery_draw="official")
    with pytest.raises(DatasetLayoutError, match="rand_perm_cam.mat not found"):
        load_dataset("sysu", root, gallery_draw="official", toolkit_dir=tmp_path)


# ---------------------------------------------------------------------------
# RegDB
# ---------------------------------------------------------------------------


def test_regdb_trial_files_labels_and_directions(tmp_path):
    root = make_regdb(tmp_path / "RegDB")
    data = load_dataset("regdb", root, trial=2)
    assert {s.pid for s in data.train} == {4, 5, 6}
    assert {s.pid: s.label for s in data.train} == {4: 0, 5: 1, 6: 2}  # the label column
    assert data.num_classes == 3
    assert {(s.modality, s.camera) for s in data.train} == {(Modality.VISIBLE, 1),
                                                             (Modality.INFRARED, 2)}
    assert [(s.name, s.direction, s.trial) for s in data.splits] == [
        ("vis->ir/trial2", "vis->ir", 2), ("ir->vis/trial2", "ir->vis", 2)]
    v2t, t2v = data.splits
    assert len(v2t.query) == len(v2t.gallery) == 9
    assert all(s.modality == Modality.VISIBLE for s in v2t.query)
    assert v2t.query == t2v.gallery and v2t.gallery == t2v.query
    assert {s.pid for s in v2t.query} == {1, 2, 3}
    assert all(s.label == -1 for s in v2t.query)
    only = load_dataset("regdb", root, trial=1, directions="ir->vis")
    assert [s.name for s in only.splits] == ["ir->vis/trial1"]


def test_regdb_inconsistent_label_column_is_an_error(tmp_path):
    root = make_regdb(tmp_path / "RegDB", trials=(1,))
    path = root / "idx" / "train_thermal_1.txt"
    text = path.read_text().replace("_2.bmp 1", "_2.bmp 2", 1)
    path.write_text(text)
    with pytest.raises(IndexFormatError, match=r"label 2 is given to identity 2 .*line 4.* and to identity 3"):
        load_dataset("regdb", root, trial=1)


# ---------------------------------------------------------------------------
# LLCM
# ---------------------------------------------------------------------------


def test_llcm_root_containing_cam_is_parsed_correctly(tmp_path):
    root = make_llcm(tmp_path / "camera_data" / "LLCM")
    # The reference parse (split the absolute path on "cam") reads this root wrongly:
    sample_path = str(root / "test_vis" / "cam3" / "0004" / "x.jpg")
    assert sample_path.split("cam")[1][0] != "3"
    data = load_dataset("llcm", root, trials=2)
    query = data.splits[0].query  # ir->vis: every test_nir image
    for s in query:
        rel = Path(s.path).relative_to(root).parts
        assert rel[0] == "test_nir" and rel[1] == f"cam{s.camera}" and rel[2] == f"{s.pid:04d}"
    assert {s.pid for s in query} == set(LLCM_TEST)


def test_llcm_directions_and_cameras(tmp_path):
    root = make_llcm(tmp_path / "LLCM")
    data = load_dataset("llcm", root, trials=3)
    names = [s.name for s in data.splits]
    assert names == [f"ir->vis/trial{t}" for t in range(3)] + [f"vis->ir/trial{t}" for t in range(3)]
    i2v, v2i = data.splits[0], data.splits[3]
    n_nir = sum(n for (top, cam, pid), n in LLCM_TEST_COUNTS.items()
                if top == "test_nir" and cam != 3)
    n_vis = sum(n for (top, cam, pid), n in LLCM_TEST_COUNTS.items() if top == "test_vis")
    assert len(i2v.query) == n_nir and all(s.modality == Modality.INFRARED for s in i2v.query)
    assert 3 not in {s.camera for s in i2v.query}  # no NIR cam3 in the protocol
    # single-shot gallery: one image per (id, camera) folder
    assert sorted((s.pid, s.camera) for s in i2v.gallery) == sorted(
        (pid, cam) for (top, cam, pid) in LLCM_TEST_COUNTS if top == "test_vis")
    assert len(v2i.query) == n_vis and all(s.modality == Modality.VISIBLE for s in v2i.query)
    assert sorted((s.pid, s.camera) for s in v2i.gallery) == sorted(
        (pid, cam) for (top, cam, pid) in LLCM_TEST_COUNTS if top == "test_nir" and cam != 3)
    assert all(s.protocol == "llcm" for s in data.splits)


def test_llcm_training_set(tmp_path):
    root = make_llcm(tmp_path / "LLCM")
    data = load_dataset("llcm", root, trials=1)
    assert data.num_classes == 2
    assert {s.pid: s.label for s in data.train} == {7: 0, 2: 1}
    assert sorted({s.camera for s in data.train}) == [1, 6, 9]  # from the _cNN_ field
    assert sum(s.modality == Modality.INFRARED for s in data.train) == 6


def test_llcm_file_name_without_camera_is_an_error(tmp_path):
    root = make_llcm(tmp_path / "LLCM")
    (root / "nir" / "0002" / "odd.jpg").write_bytes(b"")
    with open(root / "idx" / "train_nir.txt", "a") as handle:
        handle.write("nir/0002/odd.jpg 1\n")
    with pytest.raises(IndexFormatError, match="train_nir.txt, line 7: cannot read the camera"):
        load_dataset("llcm", root)


# ---------------------------------------------------------------------------
# HITSZ-VCM
# ---------------------------------------------------------------------------


def test_vcm_frame_name_to_path():
    assert frame_relpath("0001M2D3T1F1.jpg") == "0001/rgb/D3/1.jpg"
    assert frame_relpath("0503M1D12T7F24.jpg") == "0503/ir/D12/24.jpg"
    with pytest.raises(ValueError, match="does not look like"):
        frame_relpath("0001_c1_f2.jpg")


@pytest.mark.parametrize("with_split_level", [True, False])
def test_vcm_both_root_styles(tmp_path, with_split_level):
    root = make_vcm(tmp_path / "HITSZ-VCM", with_split_level)
    data = load_dataset("vcm", root)
    assert data.extra["frames_layout"] == ("split" if with_split_level else "flat")
    first = data.train[0]
    prefix = root / "Train" if with_split_level else root
    assert first.path[0] == str(prefix / "0001" / "rgb" / "D3" / "1.jpg")
    assert len(first.path) == 12 and first.is_tracklet
    assert first.path[-1].endswith(os.path.join("D3", "12.jpg"))
    assert (first.pid, first.camera, first.modality) == (1, 3, Modality.VISIBLE)


def test_vcm_min_seq_len_and_splits(tmp_path):
    root = make_vcm(tmp_path / "HITSZ-VCM")
    data = load_dataset("vcm", root)
    # train row 3 (5 frames) and test row 3 (3 frames) are shorter than 12
    assert data.extra["dropped_short_tracklets"]["train"] == 1
    assert data.extra["dropped_short_tracklets"]["test"] == 1
    assert len(data.train) == 4 and {s.pid: s.label for s in data.train} == {1: 0, 2: 1, 5: 2}
    assert data.num_classes == 3
    i2v, v2i = data.splits
    assert (i2v.name, i2v.direction, v2i.direction) == ("ir->vis", "ir->vis", "vis->ir")
    # query_IDX rows 1, 3, 6 -> row 3 is dropped
    assert [(s.pid, s.camera, len(s.path)) for s in i2v.query] == [(8, 2, 12), (9, 2, 16)]
    assert all(s.modality == Modality.INFRARED for s in i2v.query)
    assert [(s.pid, s.camera) for s in i2v.gallery] == [(8, 3), (9, 6), (8, 4)]
    assert v2i.query == i2v.gallery and v2i.gallery == i2v.query
    everything = load_dataset("vcm", root, min_seq_len=0)
    assert len(everything.train) == 5 and len(everything.splits[0].query) == 3
    assert everything.extra["dropped_short_tracklets"]["train"] == 0


def test_vcm_half_split_layout_is_an_error(tmp_path):
    root = make_vcm(tmp_path / "HITSZ-VCM")
    (root / "Test").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetLayoutError, match="only one of Train/ and Test/") as info:
        load_dataset("vcm", root)
    assert info.value.missing == [str(root / "Test") + "/"]


def test_vcm_missing_frames_are_reported(tmp_path):
    root = make_vcm(tmp_path / "HITSZ-VCM")
    os.remove(root / "Test" / "0009" / "ir" / "D2" / "16.jpg")
    with pytest.raises(MissingImagesError, match="1 image file.*test_name.txt"):
        load_dataset("vcm", root)


def test_vcm_query_index_out_of_range(tmp_path):
    root = make_vcm(tmp_path / "HITSZ-VCM")
    (root / "info" / "query_IDX.txt").write_text("1 7\n")
    with pytest.raises(IndexFormatError, match=r"row\(s\) \[7\]"):
        load_dataset("vcm", root)


# ---------------------------------------------------------------------------
# BUPTCampus
# ---------------------------------------------------------------------------


def test_bupt_training_pairs(tmp_path):
    root = make_bupt(tmp_path / "BUPTCampus")
    data = load_dataset("bupt", root)
    assert len(data.train) == 8  # four pair lines -> a visible and an infrared sample each
    assert data.num_classes == 3 and {s.pid: s.label for s in data.train} == {2: 0, 3: 1, 10: 2}
    for vis, ir in zip(data.train[::2], data.train[1::2]):
        assert (vis.modality, ir.modality) == (Modality.VISIBLE, Modality.INFRARED)
        assert (vis.pid, vis.camera) == (ir.pid, ir.camera)
        assert len(vis.path) == len(ir.path)
        assert [p.replace("RGB", "IR") for p in vis.path] == list(ir.path)
    assert data.train[0].path[0] == str(root / "DATA" / "3" / "RGB" / "LS3" / "3_RGB_LS3_1_100.jpg")
    assert [s.camera for s in data.train[::2]] == [0, 1, 5, 2]  # LS3 G25 TSG2 CQ1
    assert data.extra["auxiliary_train_range"] is None


def test_bupt_auxiliary(tmp_path):
    root = make_bupt(tmp_path / "BUPTCampus")
    data = load_dataset("bupt", root, use_auxiliary=True)
    assert data.extra["auxiliary_train_range"] == (8, 12)
    assert {s.pid for s in data.train[8:]} == {40} and data.num_classes == 4
    os.remove(root / "train_auxiliary.txt")
    assert len(load_dataset("bupt", root).train) == 8  # not needed unless asked for
    with pytest.raises(DatasetLayoutError, match="train_auxiliary.txt"):
        load_dataset("bupt", root, use_auxiliary=True)


def test_bupt_directions(tmp_path):
    root = make_bupt(tmp_path / "BUPTCampus")
    i2v, v2i = load_dataset("bupt", root).splits
    assert (i2v.name, i2v.direction, i2v.protocol) == ("ir->vis", "ir->vis", "bupt")
    assert [s.pid for s in i2v.query] == [20, 21, 22]
    assert all(s.modality == Modality.INFRARED for s in i2v.query)
    assert len(i2v.gallery) == 66 and all(s.modality == Modality.VISIBLE for s in i2v.gallery)
    assert [s.pid for s in v2i.query] == [20, 21] and v2i.query[0].camera == 4  # TSG1
    assert [(s.pid, s.camera) for s in v2i.gallery] == [(20, 1), (21, 1), (22, 1)]


def test_bupt_official_drop(tmp_path):
    root = make_bupt(tmp_path / "BUPTCampus", gallery_rgb=66)
    full = load_dataset("bupt", root)
    dropped = load_dataset("bupt", root, official_drop=True)
    # gallery.txt: 66 RGB lines -> 66 % 64 = 2 last ones dropped; query.txt: 2 RGB lines -> 2 % 64 = 2
    assert dropped.extra["official_drop"] == {"query_rgb": 2, "gallery_rgb": 2}
    assert dropped.splits[0].gallery == full.splits[0].gallery[:64]
    assert dropped.splits[1].query == ()
    # infrared lines are never dropped
    assert dropped.splits[0].query == full.splits[0].query
    assert dropped.splits[1].gallery == full.splits[1].gallery
    assert full.extra["official_drop"] == {"query_rgb": 0, "gallery_rgb": 0}


def test_bupt_official_drop_with_a_multiple_of_the_batch(tmp_path):
    root = make_bupt(tmp_path / "BUPTCampus", gallery_rgb=64)
    data = load_dataset("bupt", root, official_drop=True)
    assert data.extra["official_drop"]["gallery_rgb"] == 0 and len(data.splits[0].gallery) == 64


def test_bupt_unknown_tracklet_names_the_line(tmp_path):
    root = make_bupt(tmp_path / "BUPTCampus")
    with open(root / "query.txt", "a") as handle:
        handle.write("21 IR W4 9\n")
    with pytest.raises(IndexFormatError, match=r"query.txt, line 6: data_paths.json has no entry"):
        load_dataset("bupt", root)
    (root / "query.txt").write_text("21 IR W9 1\n")
    with pytest.raises(IndexFormatError, match="unknown camera 'W9'"):
        load_dataset("bupt", root)


def test_bupt_unequal_pair_lengths_warn_and_align(tmp_path):
    root = make_bupt(tmp_path / "BUPTCampus")
    paths = json.loads((root / "data_paths.json").read_text())
    paths["10"]["IR"]["G25"]["1"] = paths["10"]["IR"]["G25"]["1"][:4]
    (root / "data_paths.json").write_text(json.dumps(paths))
    with pytest.warns(UserWarning, match="1 RGB/IR pair"):
        data = load_dataset("bupt", root)
    assert len(data.train[2].path) == len(data.train[3].path) == 4
    assert data.extra["pairs_with_unequal_lengths"] == 1


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def test_dataset_stats_counts(tmp_path):
    data = load_dataset("vcm", make_vcm(tmp_path / "HITSZ-VCM"))
    stats = dataset_stats(data)
    train = stats["train"]
    assert train["unit"] == "tracklets" and train["count"] == 4 and train["identities"] == 3
    assert train["by_modality"] == {"visible": 2, "infrared": 2}
    assert train["by_camera"] == {2: 2, 3: 1, 4: 1}
    assert train["frames"] == {"min": 12, "mean": (12 + 14 + 13 + 12) / 4, "max": 14,
                               "total": 51}
    i2v = stats["splits"][0]
    assert i2v["query"]["count"] == 2 and i2v["gallery"]["by_modality"]["visible"] == 3
    text = format_stats(stats)
    assert "training classes: 3" in text and "frames min/mean/max" in text
    assert "12/12.8/14" in text and "dropped_short_tracklets" in text


def test_format_stats_prints_a_shared_query_once(tmp_path):
    data = load_dataset("sysu", make_sysu(tmp_path / "SYSU-MM01"), trials=3)
    stats = dataset_stats(data)
    assert stats["train"]["unit"] == "images" and "frames" not in stats["train"]
    text = format_stats(stats)
    assert text.count(" query ") == 1
    assert text.count(" gallery ") == 3
    assert "all-search/trial2 (ir->vis) gallery" in text


# ---------------------------------------------------------------------------
# The project's synthetic generator writes the real layouts; the loaders read them.
# ---------------------------------------------------------------------------

SMALL = (32, 16)


def test_sysu_on_synthetic(tmp_path):
    root = tmp_path / "SYSU-MM01"
    made = synthetic.synthesize("sysu", root, num_ids=12, seed=3, image_size=SMALL)
    data = load_dataset("sysu", root, mode="both", trials=2)
    assert data.num_classes == made["train_ids"] + made["val_ids"]
    assert sorted({s.label for s in data.train}) == list(range(data.num_classes))
    query = data.splits[0].query
    assert sum(s.modality == Modality.INFRARED for s in data.train) + len(query) == made[
        "images_infrared"]
    all_search, indoor = data.splits[0], data.splits[2]
    assert len({s.pid for s in all_search.gallery}) == made["test_ids"]
    assert len({s.pid for s in indoor.gallery}) == made["test_ids"]  # every test id has cam1/2
    # the generator makes the cam3 -> cam2 exclusion matter for at least one query
    assert any(q.camera == 3 for q in query) and any(g.camera == 2 for g in all_search.gallery)


def test_regdb_on_synthetic(tmp_path):
    root = tmp_path / "RegDB"
    made = synthetic.synthesize("regdb", root, num_ids=6, seed=3, image_size=SMALL,
                                images_per_id=3, trials=2)
    for trial in (1, 2):
        data = load_dataset("regdb", root, trial=trial)
        assert data.num_classes == made["train_ids"]
        assert len(data.train) == 2 * 3 * made["train_ids"]
        v2t = data.splits[0]
        assert len(v2t.query) == len(v2t.gallery) == 3 * made["test_ids"]
        assert {s.pid for s in v2t.query} == {s.pid for s in v2t.gallery}
        assert not {s.pid for s in data.train} & {s.pid for s in v2t.query}


def test_llcm_on_synthetic_under_a_root_containing_cam(tmp_path):
    root = tmp_path / "camera_data" / "LLCM"
    made = synthetic.synthesize("llcm", root, num_ids=8, seed=3, image_size=SMALL)
    data = load_dataset("llcm", root, trials=2)
    assert data.num_classes == made["train_ids"]
    i2v, v2i = data.splits[0], data.splits[2]
    assert len(data.train) + len(i2v.query) + len(v2i.query) == (
        made["images_visible"] + made["images_infrared"])
    assert len({s.pid for s in i2v.query}) == made["test_ids"]
    for s in i2v.query + v2i.query:
        assert os.path.basename(s.path).startswith(f"{s.pid:04d}_c{s.camera:02d}_")
    for s in data.train:
        assert os.path.basename(s.path).startswith(f"{s.pid:04d}_c{s.camera:02d}_")


@pytest.mark.parametrize("split_dirs", [True, False])
def test_vcm_on_synthetic(tmp_path, split_dirs):
    root = tmp_path / "HITSZ-VCM"
    made = synthetic.synthesize("vcm", root, num_ids=6, seed=3, image_size=SMALL,
                                frames_per_tracklet=16, split_dirs=split_dirs)
    data = load_dataset("vcm", root)
    assert data.extra["frames_layout"] == ("split" if split_dirs else "flat")
    dropped = data.extra["dropped_short_tracklets"]
    i2v = data.splits[0]
    total = made["tracklets_visible"] + made["tracklets_infrared"]
    assert len(data.train) + len(i2v.query) + len(i2v.gallery) + dropped["train"] + dropped[
        "test"] == total
    assert dropped["train"] + dropped["test"] == made["short_tracklets"] > 0
    assert all(len(s.path) >= 12 for s in data.train + list(i2v.query + i2v.gallery))
    assert all(s.modality == Modality.INFRARED for s in i2v.query)
    assert all(s.modality == Modality.VISIBLE for s in i2v.gallery)
    assert data.num_classes == made["train_ids"]


def test_bupt_on_synthetic(tmp_path):
    root = tmp_path / "BUPTCampus"
    made = synthetic.synthesize("bupt", root, num_ids=10, seed=3, image_size=SMALL,
                                frames_per_tracklet=6)
    data = load_dataset("bupt", root)
    assert data.num_classes == made["train_ids"]
    pairs = (root / "train.txt").read_text().split("\n")
    assert len(data.train) == 2 * len([line for line in pairs if line.strip()])
    i2v, v2i = data.splits
    # every test id queries in both modalities
    assert len(i2v.query) == len(v2i.query) == made["test_ids"]
    assert len(i2v.gallery) == len(v2i.gallery)
    with_aux = load_dataset("bupt", root, use_auxiliary=True)
    assert with_aux.num_classes == made["train_ids"] + made["auxiliary_ids"]


# ---------------------------------------------------------------------------
# SYSU-MM01: the official toolkit's gallery draw (rand_perm_cam.mat)
# ---------------------------------------------------------------------------

import scipy.io as scipy_io  # noqa: E402  (a dev dependency)


def test_sysu_official_draw_on_a_hand_made_permutation_file(tmp_path):
    import numpy as np

    counts = {(1, 3): 3, (2, 3): 2, (1, 7): 4, (4, 7): 2, (3, 3): 2, (6, 7): 1, (1, 1): 1}
    root = tmp_path / "SYSU-MM01"
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True)
    for (cam, pid), n in counts.items():
        for i in range(n):
            touch(root / f"cam{cam}" / f"{pid:04d}" / f"{i + 1:04d}.jpg")
    (root / "exp").mkdir()
    for name, ids in (("train_id", "1"), ("val_id", "1"), ("test_id", "3,7")):
        (root / "exp" / f"{name}.txt").write_text(ids)
    # rows of run r: a rotation of 1..n by r (1-based indices, as MATLAB writes them)
    cells = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        per_id = np.empty((8, 1), dtype=object)
        for pid in range(1, 9):
            n = counts.get((cam, pid), 0)
            per_id[pid - 1, 0] = np.array(
                [[(j + r) % n + 1 for j in range(n)] for r in range(10)], dtype=np.uint8
            ).reshape(10, n)
        cells[cam - 1, 0] = per_id
    toolkit = tmp_path / "toolkit" / "evaluation" / "data_split"
    toolkit.mkdir(parents=True)
    scipy_io.savemat(toolkit / "rand_perm_cam.mat", {"rand_perm_cam": cells})
    scipy_io.savemat(toolkit / "test_id.mat", {"id": np.array([[3, 7]])})

    data = load_dataset("sysu", root, gallery_draw="official", toolkit_dir=tmp_path / "toolkit",
                        trials=3)
    assert data.extra["gallery_draw"] == "official"
    # run r picks image (r % n) + 1 of each folder; cameras first (1, 2, 4, 5), then ids
    for r, split in enumerate(data.splits):
        expected = [(1, 3, r % 3 + 1), (1, 7, r % 4 + 1), (2, 3, r % 2 + 1), (4, 7, r % 2 + 1)]
        assert [(s.camera, s.pid, int(Path(s.path).stem)) for s in split.gallery] == expected
    multi = load_dataset("sysu", root, gallery_draw="official", toolkit_dir=toolkit,
                         number_shot=-1, trials=1)
    # all but one image of each folder
    assert len(multi.splits[0].gallery) == (3 - 1) + (4 - 1) + (2 - 1) + (2 - 1)
    # a folder whose size disagrees with the permutation is an error naming it
    os.remove(root / "cam4" / "0007" / "0002.jpg")
    with pytest.raises(DatasetLayoutError, match=r"cam4/0007 holds 1 images but .* permutes 2"):
        load_dataset("sysu", root, gallery_draw="official", toolkit_dir=toolkit)
    (root / "exp" / "test_id.txt").write_text("3")
    with pytest.raises(DatasetLayoutError, match="differ from exp/test_id.txt"):
        load_dataset("sysu", root, gallery_draw="official", toolkit_dir=toolkit)


# The shared data folder sits beside the project checkout (../shared/data).
SYSU_TOOLKIT = Path(
    os.environ.get(
        "VIREID_SYSU_TOOLKIT",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "sysu-official",
    )
)


@pytest.mark.skipif(
    not (SYSU_TOOLKIT / "rand_perm_cam.mat").is_file(),
    reason=f"LOUD: the official SYSU-MM01 split files are not at {SYSU_TOOLKIT} "
    "(set VIREID_SYSU_TOOLKIT to the toolkit's evaluation/data_split/)",
)
def test_sysu_official_draw_with_the_owners_permutations(tmp_path):
    """A tree sized from the real rand_perm_cam.mat: every test id, indoor cameras."""
    import numpy as np

    cells = scipy_io.loadmat(SYSU_TOOLKIT / "rand_perm_cam.mat")["rand_perm_cam"].ravel()
    test_ids = [int(v) for v in scipy_io.loadmat(SYSU_TOOLKIT / "test_id.mat")["id"].ravel()]
    assert len(test_ids) == 96

    def width(cam: int, pid: int) -> int:
        return np.asarray(cells[cam - 1].ravel()[pid - 1]).shape[1]

    # Cell i is identity i and its width is the folder's image count: the sizes
    # docs/datasets.md#sysu-mm01 gives (3,803 queries, ~301 all-search and ~112 indoor gallery images) follow.
    assert sum(width(3, p) + width(6, p) for p in test_ids) == 3803
    assert sum(width(c, p) > 0 for c in (1, 2, 4, 5) for p in test_ids) == 301
    root = tmp_path / "SYSU-MM01"
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True)
    sizes = {}
    for cam in (1, 2, 3):
        per_id = cells[cam - 1].ravel()
        for pid in test_ids:
            n = np.asarray(per_id[pid - 1]).shape[1]
            sizes[cam, pid] = n
            for i in range(n):
                touch(root / f"cam{cam}" / f"{pid:04d}" / f"{i + 1:04d}.jpg")
    touch(root / "cam1" / "0001" / "0001.jpg")
    (root / "exp").mkdir()
    (root / "exp" / "train_id.txt").write_text("1")
    (root / "exp" / "val_id.txt").write_text("1")
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, test_ids)))

    data = load_dataset("sysu", root, mode="indoor", gallery_draw="official",
                        toolkit_dir=SYSU_TOOLKIT)
    assert len(data.splits) == 10
    folders = [(cam, pid) for cam in (1, 2) for pid in sorted(test_ids) if sizes[cam, pid] > 0]
    for r, split in enumerate(data.splits):
        got = [(s.camera, s.pid, int(Path(s.path).stem)) for s in split.gallery]
        want = [(cam, pid, int(np.asarray(cells[cam - 1].ravel()[pid - 1])[r, 0]))
                for cam, pid in folders]
        assert got == want
    assert len(data.splits[0].query) == sum(sizes[3, pid] for pid in test_ids)
    # indoor-search single-shot: one image per non-empty (cam1|cam2, id) folder;
    # docs/datasets.md#sysu-mm01 gives ~112 images for the real dataset, which these permutation sizes reproduce
    assert len(data.splits[0].gallery) == len(folders) == 112
