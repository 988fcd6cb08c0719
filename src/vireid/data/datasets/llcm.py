"""LLCM (Zhang & Wang, CVPR 2023): low-light visible and near-infrared images from 9 cameras.

Training images come from ``idx/train_vis.txt`` and ``idx/train_nir.txt``
(``<relative path> <label>``, labels used as written, as the reference
``LLCMData`` does). Test images are listed from ``test_vis/camK/<id>/`` and
``test_nir/camK/<id>/`` for the ids of ``idx/test_id.txt`` (reference
``process_query_llcm`` / ``process_gallery_llcm``).

Identity and camera always come from path components *relative to the
dataset root* (the ``camK`` and ``<id>`` folders, or the ``_cNN_`` field of a
training file name). The reference splits the absolute path on the substring
``cam``, which breaks when the root itself contains "cam"; this loader does not.

Directions (docs/datasets.md#llcm, docs/protocols.md#per-dataset):
- ``ir->vis`` (the default, reported first): query = every test_nir image,
  gallery = one test_vis image per (id, camera), drawn with
  ``random.seed(trial)`` + ``random.choice(sorted(files))``;
- ``vis->ir`` [U]: the reference scripts disagree. We follow the train-time
  code (``train.py`` with ``test_mode = [2, 1]``): query = every test_vis
  image, gallery = one test_nir image per (id, camera). (``test.py`` instead
  evaluates the drawn NIR images as queries against all visible images.)
"""

from __future__ import annotations

import os
import re

from vireid.data.datasets.base import (
    VERIFY_FILES_OPTION,
    DatasetLayoutError,
    DatasetLoader,
    IndexFormatError,
    Option,
    check_label_column,
    directions_of,
    int_in,
    list_images,
    parse_int,
    read_int_list,
    read_path_label_index,
    relative_parts,
)
from vireid.data.protocols import (
    LLCM_INFRARED_CAMERAS,
    LLCM_TRIALS,
    LLCM_VISIBLE_CAMERAS,
    draw_single_shot,
    trial_seeds,
)
from vireid.data.types import Modality, ReIDData, Sample

DIRECTIONS = ("ir->vis", "vis->ir")

CAMERA_IN_NAME = re.compile(r"_c(\d+)(?:_|\.|$)")
"""Camera field of an LLCM file name, e.g. ``0003_c01_s185734_f3195_nir.jpg`` -> 1 [T]."""

TEST_FOLDERS = {Modality.VISIBLE: "test_vis", Modality.INFRARED: "test_nir"}
TEST_CAMERAS = {Modality.VISIBLE: LLCM_VISIBLE_CAMERAS, Modality.INFRARED: LLCM_INFRARED_CAMERAS}


def camera_from_name(file_name: str, where: str) -> int:
    """Camera number from the ``_cNN_`` field of an LLCM file name."""
    match = CAMERA_IN_NAME.search(file_name)
    if match is None:
        raise IndexFormatError(
            f"{where}: cannot read the camera from file name {file_name!r} "
            "(expected a field like '_c01_', as in 0003_c01_s185734_f3195_nir.jpg)"
        )
    return int(match.group(1))


class LLCM(DatasetLoader):
    name = "llcm"
    title = "LLCM"
    protocol = "llcm"
    aliases = ()
    EXPECTED_TREE = """\
LLCM/
  idx/
      train_vis.txt  train_nir.txt     each line: <relative path> <label>
      test_id.txt                      comma-separated test ids
  vis/<id>/*.jpg   nir/<id>/*.jpg      training images, e.g. nir/0351/0351_c06_s200656_f4830_nir.jpg
  test_vis/cam1..cam9/<id, 4 digits>/*.jpg
  test_nir/cam1,cam2,cam4..cam9/<id, 4 digits>/*.jpg      (no NIR cam3)
"""
    OPTIONS = {
        "trials": Option(LLCM_TRIALS, "number of gallery draws (trial t uses seed t)", int_in(1)),
        "directions": Option(None, "'ir->vis' (reported first), 'vis->ir', or both (default)",
                             directions_of(DIRECTIONS)),
        "verify_files": VERIFY_FILES_OPTION,
    }

    def required_paths(self) -> list[str]:
        return ["idx/train_vis.txt", "idx/train_nir.txt", "idx/test_id.txt",
                "test_vis/", "test_nir/"]

    def _read_train(self, rel_index: str, modality: Modality):
        index_file = self.path(rel_index)
        samples, rows = [], []
        for number, rel, label in read_path_label_index(index_file):
            where = f"{index_file}, line {number}"
            parts = relative_parts(rel)
            if len(parts) < 3:
                raise IndexFormatError(f"{where}: expected <vis|nir>/<id>/<file>, got {rel!r}")
            pid = parse_int(parts[-2], "identity folder", where)
            camera = camera_from_name(parts[-1], where)
            samples.append(Sample(self.inside(self.path(*parts), where), pid, camera, modality))
            rows.append((where, pid, label))
        self.verify([s.path for s in samples], index_file)
        return samples, rows

    def _test_groups(self, test_ids: list[int], modality: Modality) -> list[list[Sample]]:
        """Folders in the reference order (ids ascending, then cameras); absent ones skipped."""
        groups = []
        top = TEST_FOLDERS[modality]
        for pid in test_ids:
            for cam in TEST_CAMERAS[modality]:
                folder = self.path(top, f"cam{cam}", f"{pid:04d}")
                if not os.path.isdir(folder):
                    continue
                names, ignored = list_images(folder)
                self._ignored.extend(ignored)
                if names:
                    groups.append([Sample(os.path.join(folder, n), pid, cam, modality)
                                   for n in names])
        return groups

    def _load(self) -> ReIDData:
        self._ignored: list[str] = []
        train_vis, rows_vis = self._read_train("idx/train_vis.txt", Modality.VISIBLE)
        train_ir, rows_ir = self._read_train("idx/train_nir.txt", Modality.INFRARED)
        num_classes = check_label_column(rows_vis + rows_ir, "LLCM training index")
        label_of = {pid: label for _, pid, label in rows_vis + rows_ir}
        train = [Sample(s.path, s.pid, s.camera, s.modality, label_of[s.pid])
                 for s in train_vis + train_ir]

        test_ids = sorted(set(read_int_list(self.path("idx", "test_id.txt"))))
        groups = {m: self._test_groups(test_ids, m) for m in (Modality.VISIBLE, Modality.INFRARED)}
        for modality, found in groups.items():
            if not found:
                raise DatasetLayoutError(
                    f"LLCM: no test image found under {self.path(TEST_FOLDERS[modality])}/cam*/<id>/ "
                    "for the ids of idx/test_id.txt"
                )
        everything = {m: [s for g in found for s in g] for m, found in groups.items()}

        splits = []
        for direction in self.options["directions"]:
            query_mod, gallery_mod = (
                (Modality.INFRARED, Modality.VISIBLE) if direction == "ir->vis"
                else (Modality.VISIBLE, Modality.INFRARED)
            )
            for seed in trial_seeds(self.options["trials"]):
                gallery = draw_single_shot(groups[gallery_mod], seed)
                splits.append(self.split(f"{direction}/trial{seed}", everything[query_mod],
                                         gallery, direction, seed))
        self.warn_ignored(self._ignored)
        extra = {"test_ids": len(test_ids), "ignored_files": len(self._ignored)}
        return ReIDData(self.name, self.root, train, splits, num_classes, extra)
