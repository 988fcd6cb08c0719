"""SYSU-MM01 (Wu et al., ICCV 2017): images from four visible and two infrared cameras.

Layout, training set, query set and gallery draws follow docs/datasets.md#sysu-mm01 and
the reference loaders (``pre_process_sysu``, ``process_query_sysu``,
``process_gallery_sysu``) that nearly every paper uses:

- training: identities of ``exp/train_id.txt`` and ``exp/val_id.txt``
  (296 + 99 = 395); labels are the rank of the identity in ascending order;
- query: every image of a test identity from cameras 3 and 6, for both
  all-search and indoor-search;
- gallery, trial ``t``: ``random.seed(t)``, then for each test identity in
  ascending order and each gallery camera (1, 2, 4, 5 or 1, 2) whose folder
  exists, ``random.choice(sorted(files))``; multi-shot (``number_shot=10``)
  uses ``random.sample(sorted(files), 10)``.

``gallery_draw="official"`` instead takes the gallery from the owners' MATLAB
toolkit (``rand_perm_cam.mat``): row ``t`` of the permutation of identity
``id`` in camera ``c`` indexes that folder's images. The toolkit says "the i-th
image of id"; we take images in sorted file-name order [T].
"""

from __future__ import annotations

import os
from typing import Any

from vireid.data.datasets.base import (
    DatasetLayoutError,
    DatasetLoader,
    Option,
    int_in,
    labels_by_rank,
    list_images,
    one_of,
    optional_path,
    read_int_list,
    relabel,
)
from vireid.data.protocols import (
    SYSU_GALLERY_CAMERAS,
    SYSU_INFRARED_CAMERAS,
    SYSU_TRIALS,
    SYSU_VISIBLE_CAMERAS,
    draw_multi_shot,
    draw_single_shot,
    trial_seeds,
)
from vireid.data.types import Modality, ReIDData, Sample

OFFICIAL_PERM_FILE = "rand_perm_cam.mat"
"""Gallery permutations of the official toolkit (``evaluation/data_split/``)."""

OFFICIAL_TEST_ID_FILE = "test_id.mat"


def _number_shot(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value == 0:
        raise ValueError(f"got {value!r}; expected 1 (single-shot), 10 (multi-shot) or, "
                         "with gallery_draw='official', a negative n (all but n images)")
    return value


class SYSUMM01(DatasetLoader):
    name = "sysu"
    title = "SYSU-MM01"
    protocol = "sysu"
    aliases = ("sysu-mm01", "sysu_mm01", "sysumm01")
    EXPECTED_TREE = """\
SYSU-MM01/
  cam1/ cam2/ cam4/ cam5/      visible cameras
  cam3/ cam6/                  infrared cameras
      <id, 4 digits>/<NNNN>.jpg    (not every id appears under every camera)
  exp/
      train_id.txt  val_id.txt  test_id.txt    (one line of comma-separated ids)
"""
    OPTIONS = {
        "mode": Option(
            "all", "gallery setting: 'all' (cams 1,2,4,5), 'indoor' (cams 1,2) or 'both'",
            one_of("all", "indoor", "both"),
        ),
        "trials": Option(SYSU_TRIALS, "number of gallery draws (trial t uses seed t)", int_in(1)),
        "number_shot": Option(
            1, "gallery images per (id, camera): 1 single-shot, 10 multi-shot", _number_shot
        ),
        "gallery_draw": Option(
            "python",
            "'python': random.seed(t) + random.choice (the convention); "
            "'official': the toolkit's rand_perm_cam.mat",
            one_of("python", "official"),
        ),
        "toolkit_dir": Option(
            None,
            "folder holding rand_perm_cam.mat (the toolkit's evaluation/data_split/, "
            "or the toolkit root); needed by gallery_draw='official'",
            optional_path,
        ),
    }

    def required_paths(self) -> list[str]:
        cams = [f"cam{c}/" for c in sorted(SYSU_VISIBLE_CAMERAS + SYSU_INFRARED_CAMERAS)]
        return cams + ["exp/train_id.txt", "exp/val_id.txt", "exp/test_id.txt"]

    # ------------------------------------------------------------------
    def _folder_samples(self, cam: int, pid: int, modality: Modality) -> list[Sample] | None:
        """Images of one (camera, identity) folder in sorted order, or None if the folder is absent."""
        folder = self.inside(self.path(f"cam{cam}", f"{pid:04d}"), f"identity {pid}, camera {cam}")
        if not os.path.isdir(folder):
            return None
        names, ignored = list_images(folder)
        self._ignored.extend(ignored)
        return [Sample(os.path.join(folder, n), pid, cam, modality) for n in names]

    def _load(self) -> ReIDData:
        opts = self.options
        self._ignored: list[str] = []
        if opts["number_shot"] < 0 and opts["gallery_draw"] != "official":
            raise DatasetLayoutError(
                "SYSU-MM01: number_shot < 0 (all but n images) exists only with "
                "gallery_draw='official'"
            )

        train_ids = read_int_list(self.path("exp", "train_id.txt"))
        val_ids = read_int_list(self.path("exp", "val_id.txt"))
        test_ids = sorted(set(read_int_list(self.path("exp", "test_id.txt"))))
        overlap = sorted(set(train_ids + val_ids) & set(test_ids))
        if overlap:
            raise DatasetLayoutError(
                f"SYSU-MM01: identities {overlap[:5]} are listed both for training "
                f"(exp/train_id.txt, exp/val_id.txt) and for testing (exp/test_id.txt)"
            )

        # Training: visible images (ids ascending, cams 1,2,4,5), then infrared (cams 3,6).
        train: list[Sample] = []
        for cams, modality in ((SYSU_VISIBLE_CAMERAS, Modality.VISIBLE),
                               (SYSU_INFRARED_CAMERAS, Modality.INFRARED)):
            for pid in sorted(set(train_ids + val_ids)):
                for cam in cams:
                    train.extend(self._folder_samples(cam, pid, modality) or [])
        if not train:
            raise DatasetLayoutError(
                f"SYSU-MM01: no training image found under {self.root}/cam*/<id>/ for the ids of "
                "exp/train_id.txt and exp/val_id.txt"
            )
        labels = labels_by_rank(s.pid for s in train)
        train = relabel(train, labels)
        ids_without_images = sorted(set(train_ids + val_ids) - set(labels))

        # Query: every infrared image of the test identities.
        query: list[Sample] = []
        for pid in test_ids:
            for cam in SYSU_INFRARED_CAMERAS:
                query.extend(self._folder_samples(cam, pid, Modality.INFRARED) or [])
        if not query:
            raise DatasetLayoutError(
                f"SYSU-MM01: no query image found under {self.root}/cam3|cam6/<id>/ for the ids "
                "of exp/test_id.txt"
            )

        modes = ("all", "indoor") if opts["mode"] == "both" else (opts["mode"],)
        splits = []
        for mode in modes:
            cams = SYSU_GALLERY_CAMERAS[mode]
            setting = f"{mode}-search" if opts["number_shot"] == 1 else (
                f"{mode}-search-{opts['number_shot']}shot")
            if opts["gallery_draw"] == "official":
                galleries = self._official_galleries(test_ids, cams)
            else:
                galleries = self._python_galleries(test_ids, cams)
            for trial, gallery in enumerate(galleries):
                splits.append(self.split(f"{setting}/trial{trial}", query, gallery, "ir->vis", trial))

        self.warn_ignored(self._ignored)
        extra = {
            "train_ids": len(set(train_ids + val_ids)),
            "test_ids": len(test_ids),
            "train_ids_without_images": ids_without_images,
            "ignored_files": len(self._ignored),
            "gallery_draw": opts["gallery_draw"],
        }
        return ReIDData(self.name, self.root, train, splits, len(labels), extra)

    # ------------------------------------------------------------------
    def _gallery_groups(self, test_ids: list[int], cams: tuple[int, ...]) -> list[list[Sample]]:
        """Folders in the reference order: ids ascending, then the camera list; absent ones skipped."""
        groups = []
        for pid in test_ids:
            for cam in cams:
                samples = self._folder_samples(cam, pid, Modality.VISIBLE)
                if samples is not None:
                    groups.append(samples)
        return groups

    def _python_galleries(self, test_ids: list[int], cams: tuple[int, ...]) -> list[list[Sample]]:
        groups = self._gallery_groups(test_ids, cams)
        shots = self.options["number_shot"]
        if shots == 1:
            return [draw_single_shot(groups, seed) for seed in trial_seeds(self.options["trials"])]
        return [draw_multi_shot(groups, seed, shots) for seed in trial_seeds(self.options["trials"])]

    def _find_toolkit_file(self, name: str) -> str | None:
        base = self.options["toolkit_dir"]
        for sub in ("", "data_split", os.path.join("evaluation", "data_split")):
            candidate = os.path.join(base, sub, name)
            if os.path.isfile(candidate):
                return candidate
        return None

    def _official_galleries(self, test_ids: list[int], cams: tuple[int, ...]) -> list[list[Sample]]:
        """Gallery of each run as ``get_testing_set.m`` of the official toolkit builds it.

        Cameras in the gallery-camera order, then identities 1..n of the
        camera's cell; the first ``number_shot`` (or all but ``-number_shot``)
        entries of row ``trial`` of the permutation select images.
        """
        if self.options["toolkit_dir"] is None:
            raise DatasetLayoutError(
                "SYSU-MM01: gallery_draw='official' needs toolkit_dir, the folder holding "
                f"{OFFICIAL_PERM_FILE} (evaluation/data_split/ of the official toolkit)"
            )
        perm_file = self._find_toolkit_file(OFFICIAL_PERM_FILE)
        if perm_file is None:
            raise DatasetLayoutError(
                f"SYSU-MM01: {OFFICIAL_PERM_FILE} not found in {self.options['toolkit_dir']} "
                "(nor in its data_split/ or evaluation/data_split/)",
                [os.path.join(self.options["toolkit_dir"], OFFICIAL_PERM_FILE)],
            )
        try:
            import numpy as np
            import scipy.io
        except ImportError:
            raise ImportError(
                "gallery_draw='official' reads the toolkit's MATLAB files with scipy; "
                "install it with `pip install scipy`"
            ) from None

        def load_mat(path: str, key: str) -> Any:
            try:
                content = scipy.io.loadmat(path)
            except Exception as err:  # scipy raises several types for unreadable files
                raise DatasetLayoutError(f"SYSU-MM01: cannot read {path}: {err}") from None
            if key not in content:
                raise DatasetLayoutError(f"SYSU-MM01: {path} has no variable {key!r}")
            return content[key]

        id_file = self._find_toolkit_file(OFFICIAL_TEST_ID_FILE)
        if id_file is not None:
            official_ids = sorted(int(v) for v in np.asarray(load_mat(id_file, "id")).ravel())
            if official_ids != test_ids:
                raise DatasetLayoutError(
                    f"SYSU-MM01: the test ids of {id_file} differ from exp/test_id.txt "
                    f"({len(official_ids)} vs {len(test_ids)} ids)"
                )

        cells = np.asarray(load_mat(perm_file, "rand_perm_cam"), dtype=object).ravel()
        if cells.size < max(cams):
            raise DatasetLayoutError(
                f"SYSU-MM01: {perm_file} holds {cells.size} camera cells, expected 6"
            )
        shots = self.options["number_shot"]
        trials = self.options["trials"]
        test_set = set(test_ids)
        galleries: list[list[Sample]] = [[] for _ in range(trials)]
        for cam in cams:
            per_id = np.asarray(cells[cam - 1], dtype=object).ravel()
            for index, perm in enumerate(per_id):
                pid = index + 1  # identity i is cell i (1-based) in the toolkit
                perm = np.asarray(perm)
                if pid not in test_set or perm.size == 0:
                    continue
                if perm.ndim != 2 or perm.shape[0] < trials:
                    raise DatasetLayoutError(
                        f"SYSU-MM01: {perm_file}: camera {cam}, id {pid} has a permutation of "
                        f"shape {perm.shape}; {trials} rows are needed for {trials} trials"
                    )
                samples = self._folder_samples(cam, pid, Modality.VISIBLE)
                folder = self.path(f"cam{cam}", f"{pid:04d}")
                if samples is None or len(samples) != perm.shape[1]:
                    found = 0 if samples is None else len(samples)
                    raise DatasetLayoutError(
                        f"SYSU-MM01: {folder} holds {found} images but {perm_file} permutes "
                        f"{perm.shape[1]} for camera {cam}, id {pid}"
                    )
                for trial in range(trials):
                    row = [int(v) for v in perm[trial]]
                    chosen = row[:shots] if shots > 0 else row[: len(row) + shots]
                    galleries[trial].extend(samples[i - 1] for i in chosen)
        return galleries
