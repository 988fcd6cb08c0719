"""Writers of the five real on-disk layouts (docs/datasets.md) filled with synthetic people."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from vireid.data.types import Modality

from .people import (
    TAG_CAMERA,
    TAG_IMAGE,
    TAG_LAYOUT,
    TAG_SPLIT,
    TAG_TRACKLET,
    CameraProfile,
    PersonAttributes,
    make_rng,
    name_code,
    sample_attributes,
    sample_camera,
    sample_pose,
)
from .render import (
    colorize,
    frame_layers,
    plan_tracklet,
    rasterize,
    sample_look,
)

VIS, IR = Modality.VISIBLE, Modality.INFRARED

LAYOUTS: tuple[str, ...] = ("sysu", "regdb", "llcm", "vcm", "bupt")
"""Layout names accepted by :func:`synthesize`."""

DEFAULT_NUM_IDS: dict[str, int] = {"sysu": 100, "regdb": 80, "llcm": 100, "vcm": 80, "bupt": 80}
"""Identities written when ``num_ids`` is not given (each layout takes seconds on one core)."""

MIN_NUM_IDS: dict[str, int] = {"sysu": 5, "regdb": 4, "llcm": 4, "vcm": 4, "bupt": 5}
"""Fewest identities that still fill every split of a layout."""

MARKER = ".vireid_synthetic.json"
"""File that marks a folder as written by this generator (so it may be overwritten)."""

MANIFEST = ".vireid_synthetic_files.txt"
"""Every file and folder the generator wrote under the root (``f <path>`` / ``d <path>``,
relative, one a line): a later run deletes exactly these, and nothing a user added."""

GENERATOR_VERSION = 1


class SyntheticLayoutError(ValueError):
    """Invalid request to the synthetic generator (layout, ids, options or target folder)."""


@dataclass
class _Context:
    layout: str
    root: Path
    seed: int
    image_size: tuple[int, int]
    counts: dict[str, int] = field(default_factory=dict)
    _attrs: dict[int, PersonAttributes] = field(default_factory=dict)
    _cams: dict[tuple[int, int], CameraProfile] = field(default_factory=dict)

    @property
    def code(self) -> int:
        return name_code(self.layout)

    def attrs(self, pid: int) -> PersonAttributes:
        if pid not in self._attrs:
            self._attrs[pid] = sample_attributes(self.seed, pid)
        return self._attrs[pid]

    def camera(self, modality: Modality, cam: int) -> CameraProfile:
        key = (int(modality), cam)
        if key not in self._cams:
            self._cams[key] = sample_camera(make_rng(self.seed, TAG_CAMERA, self.code, *key))
        return self._cams[key]

    def split_rng(self, *keys: int) -> np.random.Generator:
        return make_rng(self.seed, TAG_SPLIT, self.code, *keys)

    def layout_rng(self, *keys: int) -> np.random.Generator:
        return make_rng(self.seed, TAG_LAYOUT, self.code, *keys)

    def image_rng(self, pid: int, modality: int, cam: int, index: int) -> np.random.Generator:
        return make_rng(self.seed, TAG_IMAGE, self.code, pid, modality, cam, index)

    def tracklet_rng(self, pid: int, modality: int, cam: int, index: int) -> np.random.Generator:
        return make_rng(self.seed, TAG_TRACKLET, self.code, pid, modality, cam, index)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def _save(path: Path, img: np.ndarray, quality: int | None) -> None:
    """Write ``img`` as JPEG (``quality`` given) or BMP, creating folders as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(img)
    if quality is None:
        pil.save(path, format="BMP")
    else:
        pil.save(path, format="JPEG", quality=quality)


def _jpeg_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(72, 96))


def _still(
    ctx: _Context, pid: int, modality: Modality, cam: int, index: int
) -> tuple[np.ndarray, int]:
    """One still image of ``pid`` in camera ``cam``; returns the image and a JPEG quality."""
    rng = ctx.image_rng(pid, int(modality), cam, index)
    camera = ctx.camera(modality, cam)
    attrs = ctx.attrs(pid)
    pose = sample_pose(rng, camera)
    look = sample_look(rng, camera, modality, ctx.image_size)
    img = colorize(rasterize(attrs, pose, ctx.image_size), attrs, modality, look, rng)
    return img, _jpeg_quality(rng)


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")


def _split_counts(n: int, fractions: list[float], minimums: list[int]) -> list[int]:
    """Sizes of consecutive splits of ``n`` items; the last split takes the rest."""
    sizes = [max(m, int(round(n * f))) for f, m in zip(fractions, minimums)]
    rest = n - sum(sizes)
    return sizes + [rest]


def _pick_cameras(rng: np.random.Generator, cams: list[int], low: int, high: int) -> list[int]:
    k = int(rng.integers(low, min(high, len(cams)) + 1))
    return sorted(int(c) for c in rng.choice(cams, size=k, replace=False))


def _check_positive(layout: str, **values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise SyntheticLayoutError(f"{layout}: {name} must be >= 1, got {value}")


def _check_fractions(layout: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 < float(value) < 1.0:
            raise SyntheticLayoutError(f"{layout}: {name} must be in (0, 1), got {value}")


def _check_range(layout: str, pair: tuple[int, int], low: int, high: int) -> None:
    if len(tuple(pair)) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise SyntheticLayoutError(
            f"{layout}: cameras_per_id must be (min, max) with "
            f"{low} <= min <= max <= {high}, got {pair}"
        )


# --- SYSU-MM01 -------------------------------------------------------------------------

SYSU_VISIBLE_CAMS = (1, 2, 4, 5)
SYSU_INFRARED_CAMS = (3, 6)


def _write_sysu(
    ctx: _Context,
    num_ids: int,
    images_per_camera: int = 4,
    test_fraction: float = 96 / 491,
    val_fraction: float = 99 / 491,
) -> None:
    """cam1..cam6/<pid 4 digits>/<NNNN>.jpg and exp/{train,val,test}_id.txt (docs/datasets.md#sysu-mm01)."""
    _check_positive("sysu", images_per_camera=images_per_camera)
    _check_fractions("sysu", test_fraction=test_fraction, val_fraction=val_fraction)
    rng = ctx.split_rng()
    # Real ids run from 1 to 533 with gaps (491 used); keep gaps so labels != pids.
    span = max(num_ids, int(round(num_ids * 533 / 491)))
    pids = sorted(int(p) for p in rng.choice(np.arange(1, span + 1), size=num_ids, replace=False))
    n_test, n_val, n_train = _split_counts(num_ids, [test_fraction, val_fraction], [1, 1])
    if n_train < 2:
        raise SyntheticLayoutError(f"sysu: {num_ids} ids leave {n_train} training ids; need >= 2")
    order = [int(p) for p in rng.permutation(pids)]
    test = sorted(order[:n_test])
    val = sorted(order[n_test : n_test + n_val])
    train = sorted(order[n_test + n_val :])
    for cam in SYSU_VISIBLE_CAMS + SYSU_INFRARED_CAMS:  # every camera folder exists, as released
        (ctx.root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    for pid in pids:
        crng = ctx.layout_rng(pid)
        vis = [c for c in SYSU_VISIBLE_CAMS if crng.random() < 0.65]
        ir = [c for c in SYSU_INFRARED_CAMS if crng.random() < 0.7]
        if pid in test and not ({1, 2} & set(vis)):
            vis.append(int(crng.choice([1, 2])))
        if pid == test[0]:  # make sure the cam3 -> cam2 exclusion rule has something to act on
            vis, ir = sorted(set(vis) | {2}), sorted(set(ir) | {3})
        if not vis:
            vis = [int(crng.choice(SYSU_VISIBLE_CAMS))]
        if not ir:
            ir = [int(crng.choice(SYSU_INFRARED_CAMS))]
        for cam in sorted(vis + ir):
            modality = IR if cam in SYSU_INFRARED_CAMS else VIS
            n = max(1, images_per_camera + int(crng.integers(-1, 2)))
            for i in range(1, n + 1):
                img, q = _still(ctx, pid, modality, cam, i)
                _save(ctx.root / f"cam{cam}" / f"{pid:04d}" / f"{i:04d}.jpg", img, q)
                ctx.count("images_" + modality.name.lower())
    exp = ctx.root / "exp"
    _write_text(exp / "train_id.txt", [",".join(str(p) for p in train)])
    _write_text(exp / "val_id.txt", [",".join(str(p) for p in val)])
    _write_text(exp / "test_id.txt", [",".join(str(p) for p in test)])
    ctx.counts.update(train_ids=len(train), val_ids=len(val), test_ids=len(test))


# --- RegDB -----------------------------------------------------------------------------


def _write_regdb(ctx: _Context, num_ids: int, images_per_id: int = 10, trials: int = 10) -> None:
    """Visible/<id>/*.bmp, Thermal/<id>/*.bmp and idx/{train,test}_{visible,thermal}_{k}.txt."""
    _check_positive("regdb", images_per_id=images_per_id, trials=trials)
    pids = list(range(1, num_ids + 1))
    names: dict[int, tuple[list[str], list[str]]] = {}
    counter = int(ctx.split_rng(0).integers(1, 400))
    vcam, tcam = ctx.camera(VIS, 1), ctx.camera(IR, 1)
    for pid in pids:
        attrs = ctx.attrs(pid)
        crng = ctx.layout_rng(pid)
        gender = "male" if crng.random() < 0.6 else "female"
        vis_names, th_names = [], []
        for i in range(images_per_id):
            view = "front" if i < (images_per_id + 1) // 2 else "back"
            counter += 1 + int(crng.integers(0, 3))
            vname = f"{gender}_{view}_v_{counter:05d}_{pid}.bmp"
            tname = f"{gender}_{view}_t_{counter:05d}_{pid}.bmp"
            # visible and thermal frames come from one dual-camera shot: same pose
            rng = ctx.image_rng(pid, 2, 1, i)
            pose = replace(sample_pose(rng, vcam), view=view)
            layers = rasterize(attrs, pose, ctx.image_size)
            vis = colorize(layers, attrs, VIS, sample_look(rng, vcam, VIS, ctx.image_size), rng)
            th = colorize(layers, attrs, IR, sample_look(rng, tcam, IR, ctx.image_size), rng)
            _save(ctx.root / "Visible" / str(pid) / vname, vis, None)
            _save(ctx.root / "Thermal" / str(pid) / tname, th, None)
            ctx.count("images_visible")
            ctx.count("images_infrared")
            vis_names.append(vname)
            th_names.append(tname)
        names[pid] = (vis_names, th_names)
    n_train = num_ids // 2
    for k in range(1, trials + 1):
        order = [int(p) for p in ctx.split_rng(k).permutation(pids)]
        for part, ids in (("train", order[:n_train]), ("test", order[n_train:])):
            vis_lines, th_lines = [], []
            for label, pid in enumerate(ids):
                vis_lines += [f"Visible/{pid}/{n} {label}" for n in names[pid][0]]
                th_lines += [f"Thermal/{pid}/{n} {label}" for n in names[pid][1]]
            _write_text(ctx.root / "idx" / f"{part}_visible_{k}.txt", vis_lines)
            _write_text(ctx.root / "idx" / f"{part}_thermal_{k}.txt", th_lines)
    ctx.counts.update(train_ids=n_train, test_ids=num_ids - n_train, trials=trials)


# --- LLCM ------------------------------------------------------------------------------

LLCM_CAMS = tuple(range(1, 10))
LLCM_TEST_NIR_CAMS = tuple(c for c in LLCM_CAMS if c != 3)


def _write_llcm(
    ctx: _Context,
    num_ids: int,
    images_per_camera: int = 2,
    test_fraction: float = 351 / 1064,
    cameras_per_id: tuple[int, int] = (2, 4),
    test_copies_in_train_dirs: bool = True,
) -> None:
    """vis/, nir/, test_vis/cam1..9/, test_nir/ (no cam3), idx/*.txt (docs/datasets.md#llcm)."""
    _check_positive("llcm", images_per_camera=images_per_camera)
    _check_fractions("llcm", test_fraction=test_fraction)
    _check_range("llcm", cameras_per_id, 1, len(LLCM_TEST_NIR_CAMS))
    rng = ctx.split_rng()
    pids = list(range(1, num_ids + 1))
    (n_test, n_train) = _split_counts(num_ids, [test_fraction], [1])
    if n_train < 2:
        raise SyntheticLayoutError(f"llcm: {num_ids} ids leave {n_train} training ids; need >= 2")
    test = sorted(int(p) for p in rng.choice(pids, size=n_test, replace=False))
    test_set = set(test)
    train = [p for p in pids if p not in test_set]
    train_label = {p: i for i, p in enumerate(train)}
    test_label = {p: i for i, p in enumerate(test)}
    idx: dict[str, list[str]] = {"train_vis": [], "train_nir": [], "test_vis": [], "test_nir": []}
    for tag, cams in (("vis", LLCM_CAMS), ("nir", LLCM_TEST_NIR_CAMS)):  # all camera folders exist
        for cam in cams:
            (ctx.root / f"test_{tag}" / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    for pid in pids:
        crng = ctx.layout_rng(pid)
        is_test = pid in test_set
        for modality, tag in ((VIS, "vis"), (IR, "nir")):
            cams = list(LLCM_TEST_NIR_CAMS if (is_test and modality == IR) else LLCM_CAMS)
            for cam in _pick_cameras(crng, cams, *cameras_per_id):
                hour, minute, second = (int(v) for v in crng.integers((7, 0, 0), (22, 60, 60)))
                stamp = f"{hour:02d}{minute:02d}{second:02d}"
                frame = int(crng.integers(100, 9000))
                n = max(1, images_per_camera + int(crng.integers(0, 2)))
                for i in range(n):
                    frame += int(crng.integers(5, 80))
                    name = f"{pid:04d}_c{cam:02d}_s{stamp}_f{frame}_{tag}.jpg"
                    img, q = _still(ctx, pid, modality, cam, i)
                    rel = f"{tag}/{pid:04d}/{name}"
                    if is_test:
                        _save(ctx.root / f"test_{tag}" / f"cam{cam}" / f"{pid:04d}" / name, img, q)
                        if test_copies_in_train_dirs:
                            _save(ctx.root / rel, img, q)
                        idx[f"test_{tag}"].append(f"{rel} {test_label[pid]}")
                    else:
                        _save(ctx.root / rel, img, q)
                        idx[f"train_{tag}"].append(f"{rel} {train_label[pid]}")
                    ctx.count("images_" + modality.name.lower())
    for key, lines in idx.items():
        _write_text(ctx.root / "idx" / f"{key}.txt", lines)
    _write_text(ctx.root / "idx" / "test_id.txt", [",".join(str(p) for p in test)])
    ctx.counts.update(train_ids=len(train), test_ids=len(test))


# --- HITSZ-VCM -------------------------------------------------------------------------

VCM_CAMS = tuple(range(1, 13))
VCM_MODALITY_CODE = {IR: 1, VIS: 2}  # track_*_info column 0 (docs/datasets.md#hitsz-vcm)


def _write_vcm(
    ctx: _Context,
    num_ids: int,
    frames_per_tracklet: int = 16,
    tracklets_per_camera: int = 1,
    cameras_per_id: tuple[int, int] = (2, 3),
    test_fraction: float = 427 / 927,
    short_fraction: float = 0.08,
    split_dirs: bool = True,
) -> None:
    """info/*.txt and [Train|Test]/<pid>/{ir,rgb}/D<cam>/<n>.jpg (docs/datasets.md#hitsz-vcm)."""
    if frames_per_tracklet < 15:
        raise SyntheticLayoutError(
            f"vcm: frames_per_tracklet must be >= 15 so regular tracklets survive min_seq_len=12, "
            f"got {frames_per_tracklet}"
        )
    _check_positive("vcm", tracklets_per_camera=tracklets_per_camera)
    _check_fractions("vcm", test_fraction=test_fraction)
    if not 0.0 <= short_fraction <= 1.0:
        raise SyntheticLayoutError(f"vcm: short_fraction must be in [0, 1], got {short_fraction}")
    # the first camera of each (pid, modality) never gets a short tracklet, so >= 2 cameras
    _check_range("vcm", cameras_per_id, 2, len(VCM_CAMS))
    (n_test, n_train) = _split_counts(num_ids, [test_fraction], [2])
    if n_train < 2:
        raise SyntheticLayoutError(f"vcm: {num_ids} ids leave {n_train} training ids; need >= 2")
    pids = list(range(1, num_ids + 1))
    parts = {"train": pids[:n_train], "test": pids[n_train:]}
    for part, part_pids in parts.items():
        names: list[str] = []
        rows: list[str] = []
        ir_rows: list[int] = []
        short_done = False
        for pid in part_pids:
            crng = ctx.layout_rng(pid)
            attrs = ctx.attrs(pid)
            for modality in (IR, VIS):
                m = VCM_MODALITY_CODE[modality]
                folder = "ir" if modality == IR else "rgb"
                cams = _pick_cameras(crng, list(VCM_CAMS), *cameras_per_id)
                for ci, cam in enumerate(cams):
                    frame_no = 0
                    for t in range(1, tracklets_per_camera + 1):
                        length = max(1, frames_per_tracklet + int(crng.integers(-3, 4)))
                        # a spare camera (not the first) may hold a short tracklet (< 12 frames)
                        want_short = crng.random() < short_fraction or (
                            not short_done and pid == part_pids[-1]
                        )
                        if ci > 0 and want_short:
                            length = int(crng.integers(3, 12))
                            short_done = True
                        trng = ctx.tracklet_rng(pid, int(modality), cam, t)
                        camera = ctx.camera(modality, cam)
                        plan = plan_tracklet(attrs, trng, camera, length)
                        look = sample_look(trng, camera, modality, ctx.image_size)
                        start = len(names) + 1
                        for i in range(length):
                            frame_no += 1
                            layers = frame_layers(attrs, plan, i, ctx.image_size)
                            img = colorize(layers, attrs, modality, look, trng, plan.blurred[i])
                            rel = Path(f"{pid:04d}") / folder / f"D{cam}" / f"{frame_no}.jpg"
                            if split_dirs:
                                rel = Path(part.capitalize()) / rel
                            _save(ctx.root / rel, img, _jpeg_quality(trng))
                            names.append(f"{pid:04d}M{m}D{cam}T{t}F{frame_no}.jpg")
                        rows.append(f"{m} {start} {len(names)} {pid} {cam}")
                        if modality == IR:
                            ir_rows.append(len(rows))
                        ctx.count("tracklets_" + modality.name.lower())
                        ctx.count("frames_" + modality.name.lower(), length)
                        if length < 12:
                            ctx.count("short_tracklets")
        info = ctx.root / "info"
        _write_text(info / f"{part}_name.txt", names)
        _write_text(info / f"track_{part}_info.txt", rows)
        if part == "test":
            _write_text(info / "query_IDX.txt", [" ".join(str(i) for i in ir_rows)])
    ctx.counts.update(train_ids=n_train, test_ids=n_test)


# --- BUPTCampus ------------------------------------------------------------------------

BUPT_CAMS = ("LS3", "G25", "CQ1", "W4", "TSG1", "TSG2")


def _write_bupt(
    ctx: _Context,
    num_ids: int,
    frames_per_tracklet: int = 12,
    test_fraction: float = 1076 / 3080,
    auxiliary_fraction: float = 930 / 3080,
    cameras_per_id: tuple[int, int] = (2, 4),
    fake_ir: bool = True,
) -> None:
    """DATA/<pid>/{RGB,IR,FakeIR}/<cam>/*.jpg, data_paths.json and the four list files."""
    if frames_per_tracklet < 5:
        raise SyntheticLayoutError(
            f"bupt: frames_per_tracklet must be >= 5, got {frames_per_tracklet}"
        )
    _check_fractions("bupt", test_fraction=test_fraction)
    if not 0.0 <= auxiliary_fraction < 1.0:
        raise SyntheticLayoutError(
            f"bupt: auxiliary_fraction must be in [0, 1), got {auxiliary_fraction}"
        )
    # a test id needs a camera for its query and another one for its gallery
    _check_range("bupt", cameras_per_id, 2, len(BUPT_CAMS))
    rng = ctx.split_rng()
    pids = list(range(1, num_ids + 1))
    min_aux = 1 if auxiliary_fraction > 0 else 0
    n_test, n_aux, n_train = _split_counts(
        num_ids, [test_fraction, auxiliary_fraction], [2, min_aux]
    )
    if n_train < 2:
        raise SyntheticLayoutError(f"bupt: {num_ids} ids leave {n_train} training ids; need >= 2")
    order = [int(p) for p in rng.permutation(pids)]
    test, aux = set(order[:n_test]), set(order[n_test : n_test + n_aux])
    data_paths: dict[str, dict[str, dict[str, dict[str, list[str]]]]] = {}
    lists: dict[str, list[str]] = {"train": [], "train_auxiliary": [], "query": [], "gallery": []}
    cam_index = {name: i for i, name in enumerate(BUPT_CAMS)}
    for pid in pids:
        crng = ctx.layout_rng(pid)
        attrs = ctx.attrs(pid)
        if pid in aux:
            cams = [str(crng.choice(BUPT_CAMS))]
        else:
            cams = [BUPT_CAMS[i] for i in _pick_cameras(crng, list(range(6)), *cameras_per_id)]
        entry: dict[str, dict[str, dict[str, list[str]]]] = {"RGB": {}, "IR": {}}
        if fake_ir:
            entry["FakeIR"] = {}
        tracklets: list[tuple[str, str]] = []
        for cam in cams:
            n_trk = 1 + int(crng.random() < 0.25)
            for t in range(1, n_trk + 1):
                tid = str(t)
                length = max(2, frames_per_tracklet + int(crng.integers(-3, 4)))
                first = int(crng.integers(1, 9000))
                ci = cam_index[cam]
                trng = ctx.tracklet_rng(pid, 2, ci, t)
                vcam, icam = ctx.camera(VIS, ci), ctx.camera(IR, ci)
                plan = plan_tracklet(attrs, trng, vcam, length)
                vlook = sample_look(trng, vcam, VIS, ctx.image_size)
                ilook = sample_look(trng, icam, IR, ctx.image_size)
                for key in entry:
                    entry[key].setdefault(cam, {})[tid] = []
                for i in range(length):
                    frame = first + i
                    layers = frame_layers(attrs, plan, i, ctx.image_size)
                    vis = colorize(layers, attrs, VIS, vlook, trng, plan.blurred[i])
                    ir = colorize(layers, attrs, IR, ilook, trng, plan.blurred[i])
                    q = _jpeg_quality(trng)
                    frames = {
                        "RGB": (f"{pid}_RGB_{cam}_{tid}_{frame}.jpg", vis),
                        "IR": (f"{pid}_IR_{cam}_{tid}_{frame}.jpg", ir),
                    }
                    if fake_ir:
                        frames["FakeIR"] = (frames["RGB"][0], _fake_infrared(vis, ir))
                    for key, (name, img) in frames.items():
                        rel = f"{pid}/{key}/{cam}/{name}"
                        _save(ctx.root / "DATA" / rel, img, q)
                        entry[key][cam][tid].append(rel)
                ctx.count("tracklets_visible")
                ctx.count("tracklets_infrared")
                ctx.count("frames_visible", length)
                ctx.count("frames_infrared", length)
                tracklets.append((cam, tid))
        data_paths[str(pid)] = entry
        if pid in aux:
            lists["train_auxiliary"] += [f"{pid} RGB/IR {cam} {tid}" for cam, tid in tracklets]
        elif pid in test:
            qi = int(crng.integers(0, len(tracklets)))
            q_cam, q_tid = tracklets[qi]
            # the query tracklet in both modalities: queries for I2V and for V2I
            lists["query"] += [f"{pid} RGB {q_cam} {q_tid}", f"{pid} IR {q_cam} {q_tid}"]
            for cam, tid in tracklets:
                if cam == q_cam:  # the query camera's tracklets stay out of the gallery
                    continue
                lists["gallery"] += [f"{pid} RGB {cam} {tid}", f"{pid} IR {cam} {tid}"]
        else:
            lists["train"] += [f"{pid} RGB/IR {cam} {tid}" for cam, tid in tracklets]
    with open(ctx.root / "data_paths.json", "w", encoding="utf-8", newline="\n") as fh:
        json.dump(data_paths, fh)
    for key, lines in lists.items():
        _write_text(ctx.root / f"{key}.txt", lines)
    ctx.counts.update(train_ids=n_train, test_ids=n_test, auxiliary_ids=n_aux)


def _fake_infrared(vis: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """A generator-made infrared look-alike of a visible frame (stands in for PairGAN output)."""
    lum = vis.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    fake = 0.65 * ir[..., 0].astype(np.float32) + 0.35 * (255.0 - lum) * 0.6
    fake = np.clip(fake + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(fake[..., None], 3, axis=2)


# --- entry point -----------------------------------------------------------------------

_WRITERS: dict[str, Callable[..., None]] = {
    "sysu": _write_sysu,
    "regdb": _write_regdb,
    "llcm": _write_llcm,
    "vcm": _write_vcm,
    "bupt": _write_bupt,
}

_OPTIONS: dict[str, tuple[str, ...]] = {
    "sysu": ("images_per_camera", "test_fraction", "val_fraction"),
    "regdb": ("images_per_id", "trials"),
    "llcm": ("images_per_camera", "test_fraction", "cameras_per_id", "test_copies_in_train_dirs"),
    "vcm": (
        "frames_per_tracklet",
        "tracklets_per_camera",
        "cameras_per_id",
        "test_fraction",
        "short_fraction",
        "split_dirs",
    ),
    "bupt": (
        "frames_per_tracklet",
        "test_fraction",
        "auxiliary_fraction",
        "cameras_per_id",
        "fake_ir",
    ),
}


def _entries(root: Path) -> set[str]:
    """Relative paths of every file (``f ...``) and folder (``d ...``) under ``root``."""
    out = set()
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root)
        out.update(f"d {(rel / d).as_posix()}" for d in dirs)
        out.update(f"f {(rel / f).as_posix()}" for f in files)
    return out


def _prepare_root(root: Path) -> set[str]:
    """Create ``root``, or delete the files a previous run of the generator wrote there
    (its manifest); never touch anything else. Returns the entries left (not ours)."""
    if root.exists() and not root.is_dir():
        raise SyntheticLayoutError(f"dataset root {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        marker = root / MARKER
        ok = False
        if marker.is_file():
            try:
                ok = json.loads(marker.read_text(encoding="utf-8")).get("generator") == __package__
            except (OSError, ValueError, AttributeError):
                ok = False
        if not ok:
            raise SyntheticLayoutError(
                f"dataset root {root} is not empty and holds no synthetic-dataset marker "
                f"({MARKER}); refusing to overwrite it. Choose an empty or new folder."
            )
        manifest = root / MANIFEST
        if not manifest.is_file():
            raise SyntheticLayoutError(
                f"dataset root {root} holds a synthetic dataset without its file list "
                f"({MANIFEST}: an older vireid, or an interrupted run), so its files cannot be "
                "told from yours; refusing to overwrite it. Delete the folder or choose another."
            )
        written = manifest.read_text(encoding="utf-8").splitlines()
        for entry in written:
            kind, _, rel = entry.partition(" ")
            path = root / rel
            if kind == "f" and (path.is_file() or path.is_symlink()) and not path.is_dir():
                path.unlink()
        for entry in sorted(written, key=len, reverse=True):  # deepest folders first
            kind, _, rel = entry.partition(" ")
            path = root / rel
            if kind == "d" and path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
        for name in (MARKER, MANIFEST):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    return _entries(root)


def synthesize(
    layout: str,
    root: str | Path,
    num_ids: int | None = None,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 64),
    **layout_options,
) -> dict:
    """Write a complete synthetic dataset in the real on-disk ``layout`` under ``root``.

    ``root`` is the dataset folder itself (e.g. ``.../SYSU-MM01``). The same arguments
    always give byte-identical files. Returns statistics: ids per split, images or
    tracklets/frames per modality, and the seconds taken.
    """
    key = str(layout).strip().lower()
    if key not in _WRITERS:
        raise SyntheticLayoutError(
            f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}"
        )
    unknown = sorted(set(layout_options) - set(_OPTIONS[key]))
    if unknown:
        raise SyntheticLayoutError(
            f"unknown option(s) {', '.join(unknown)} for layout {key!r}; "
            f"known: {', '.join(_OPTIONS[key])}"
        )
    n = DEFAULT_NUM_IDS[key] if num_ids is None else int(num_ids)
    if n < MIN_NUM_IDS[key]:
        raise SyntheticLayoutError(
            f"layout {key!r} needs at least {MIN_NUM_IDS[key]} identities for its splits, got {n}"
        )
    h, w = (int(v) for v in image_size)
    if h < 32 or w < 16:
        raise SyntheticLayoutError(f"image_size {image_size!r} too small; need at least (32, 16)")
    root = Path(root)
    started = time.perf_counter()
    foreign = _prepare_root(root)
    marker = {
        "generator": __package__,
        "version": GENERATOR_VERSION,
        "layout": key,
        "num_ids": n,
        "seed": int(seed),
        "image_size": [h, w],
        "options": {k: layout_options[k] for k in sorted(layout_options)},
    }
    (root / MARKER).write_text(json.dumps({**marker, "complete": False}, sort_keys=True) + "\n")
    ctx = _Context(layout=key, root=root, seed=int(seed), image_size=(h, w))
    _WRITERS[key](ctx, n, **layout_options)
    written = sorted(_entries(root) - foreign - {f"f {MARKER}"})
    (root / MANIFEST).write_text("".join(f"{e}\n" for e in written + [f"f {MANIFEST}"]),
                                 encoding="utf-8")
    (root / MARKER).write_text(json.dumps({**marker, "complete": True}, sort_keys=True) + "\n")
    stats: dict = {"layout": key, "root": str(root), "ids": n, "seed": int(seed)}
    stats.update(sorted(ctx.counts.items()))
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats
