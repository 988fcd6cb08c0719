"""BUPTCampus (Du et al., TIFS 2024): pixel-aligned visible/infrared video tracklets, 6 cameras.

Read as the official code (``dataloader.py``, ``sampler.py``, ``utils.py``)
reads it (docs/datasets.md#buptcampus):

- ``data_paths.json``: ``pid -> 'RGB'|'IR'|'FakeIR' -> camera -> tracklet id ->
  [frame paths relative to DATA/]``;
- ``train.txt`` / ``train_auxiliary.txt``: lines ``obj_id RGB/IR camera
  tracklet_id``, each an aligned RGB and IR recording of one tracklet. Each
  line gives two samples here, the visible one then the infrared one, with
  the same frame count. Nothing is paired by tracklet in training, here or in
  the official code: its sampler, like ours, draws the visible and the infrared
  tracklet of an identity independently. ``train_auxiliary.txt`` (single-camera
  identities) is read only with ``use_auxiliary=True``; its samples follow
  the main ones and their index range is in ``extra``;
- ``query.txt`` / ``gallery.txt``: lines ``obj_id RGB|IR camera tracklet_id``.
  ``ir->vis`` (I2V): IR lines of query.txt against RGB lines of gallery.txt;
  ``vis->ir`` (V2I): RGB lines of query.txt against IR lines of gallery.txt.

Cameras LS3, G25, CQ1, W4, TSG1, TSG2 -> 0..5. Training labels are the rank of
the identity in ascending numeric order (the official code sorts the ids as
strings; the order of labels does not change any result).

``official_drop=True`` reproduces the official test sampler
(``ConsistentModalitySampler``, batch 64), which silently leaves out the last
``n_rgb % 64`` RGB tracklets of query.txt and of gallery.txt (file order).
Off by default: every tracklet is evaluated. (When ``n_rgb`` is a multiple of 64
the official slice ``idx_rgb[:-0]`` would drop *every* RGB tracklet; we drop none.
Third-party counts of the release give 540 and 2,422 RGB lines [T], so 28 and 54
tracklets are dropped there.)
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from vireid.data.datasets.base import (
    VERIFY_FILES_OPTION,
    DatasetLoader,
    IndexFormatError,
    Option,
    boolean,
    directions_of,
    labels_by_rank,
    read_lines,
    relabel,
    under,
)
from vireid.data.protocols import BUPT_CAMERAS, BUPT_OFFICIAL_TEST_BATCH
from vireid.data.types import Modality, ReIDData, Sample

DIRECTIONS = ("ir->vis", "vis->ir")

PAIR = "RGB/IR"
MODALITY_KEYS = {"RGB": Modality.VISIBLE, "IR": Modality.INFRARED}


class BUPTCampus(DatasetLoader):
    name = "bupt"
    title = "BUPTCampus"
    protocol = "bupt"
    aliases = ("buptcampus", "bupt-campus", "bupt_campus")
    EXPECTED_TREE = """\
BUPTCampus/
  DATA/<pid>/{RGB,IR,FakeIR}/<camera>/*.jpg      frames
  data_paths.json      pid -> RGB|IR|FakeIR -> camera -> tracklet id -> [paths under DATA/]
  train.txt            lines: obj_id RGB/IR camera tracklet_id
  train_auxiliary.txt  (same format; read with use_auxiliary=True)
  query.txt  gallery.txt                 lines: obj_id RGB|IR camera tracklet_id
      cameras: LS3 G25 CQ1 W4 TSG1 TSG2
"""
    OPTIONS = {
        "use_auxiliary": Option(False, "add train_auxiliary.txt to the training set", boolean),
        "official_drop": Option(
            False,
            "reproduce the official test loader, which drops the last len % 64 RGB "
            "tracklets of query.txt and gallery.txt",
            boolean,
        ),
        "drop_one_frame": Option(
            False,
            "drop one-frame tracklets as the official loader does: a train.txt pair whose IR "
            "recording has one frame (both samples), and one-frame query/gallery tracklets; "
            "off: every tracklet is used (a one-frame clip repeats its frame)",
            boolean,
        ),
        "directions": Option(None, "'ir->vis' (reported first), 'vis->ir', or both (default)",
                             directions_of(DIRECTIONS)),
        "verify_files": VERIFY_FILES_OPTION,
    }

    def required_paths(self) -> list[str]:
        required = ["DATA/", "data_paths.json", "train.txt", "query.txt", "gallery.txt"]
        if self.options["use_auxiliary"]:
            required.append("train_auxiliary.txt")
        return required

    def _read_json(self) -> dict[str, Any]:
        path = self.path("data_paths.json")
        try:
            with open(path, encoding="utf-8") as handle:
                content = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexFormatError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(content, dict):
            raise IndexFormatError(f"{path}: expected an object keyed by identity")
        return content

    def _read_list(
        self, rel: str, allowed: tuple[str, ...]
    ) -> list[tuple[str, int, str, str, str, str]]:
        """Lines ``obj_id modality camera tracklet_id`` -> (where, pid, modality, camera, tid, obj_id)."""
        path = self.path(rel)
        rows = []
        for number, line in read_lines(path):
            where = f"{path}, line {number}"
            fields = line.split()
            if len(fields) != 4:
                raise IndexFormatError(
                    f"{where}: expected 'obj_id modality camera tracklet_id', got {line!r}"
                )
            obj_id, modality, camera, tid = fields
            try:
                pid = int(obj_id)
            except ValueError:
                raise IndexFormatError(f"{where}: obj_id {obj_id!r} is not an integer") from None
            if modality not in allowed:
                raise IndexFormatError(
                    f"{where}: modality {modality!r} is not allowed here; expected "
                    f"{' or '.join(allowed)}"
                )
            if camera not in BUPT_CAMERAS:
                raise IndexFormatError(
                    f"{where}: unknown camera {camera!r}; expected one of {', '.join(BUPT_CAMERAS)}"
                )
            rows.append((where, pid, modality, camera, tid, obj_id))
        return rows

    def _frames(self, paths: dict[str, Any], row, modality_key: str) -> tuple[str, ...]:
        where, _, _, camera, tid, obj_id = row
        node: Any = paths
        for key in (obj_id, modality_key, camera, tid):
            if not isinstance(node, dict) or key not in node:
                raise IndexFormatError(
                    f"{where}: data_paths.json has no entry "
                    f"[{obj_id!r}][{modality_key!r}][{camera!r}][{tid!r}] (missing {key!r})"
                )
            node = node[key]
        if not isinstance(node, list) or not node:
            raise IndexFormatError(
                f"{where}: data_paths.json[{obj_id!r}][{modality_key!r}][{camera!r}][{tid!r}] "
                "is not a non-empty list of frame paths"
            )
        prefix = os.path.join(self.path("DATA"), "")
        where = f"{self.path('data_paths.json')}[{obj_id!r}][{modality_key!r}][{camera!r}][{tid!r}]"
        return tuple(self.inside(under(prefix, str(p)), where) for p in node)

    def _train(self, paths, rel: str) -> tuple[list[Sample], int]:
        samples, unequal = [], 0
        for row in self._read_list(rel, (PAIR,)):
            _, pid, _, camera, _, _ = row
            rgb = self._frames(paths, row, "RGB")
            ir = self._frames(paths, row, "IR")
            if self.options["drop_one_frame"] and len(ir) == 1:  # the official rule: IR only
                self._dropped_one_frame += 1
                continue
            if len(rgb) != len(ir):
                unequal += 1
                n = min(len(rgb), len(ir))
                rgb, ir = rgb[:n], ir[:n]
            cam = BUPT_CAMERAS[camera]
            samples.append(Sample(rgb, pid, cam, Modality.VISIBLE))
            samples.append(Sample(ir, pid, cam, Modality.INFRARED))
        if unequal:
            warnings.warn(
                f"BUPTCampus: {unequal} RGB/IR pair(s) in {self.path(rel)} have different frame "
                "counts; both were cut to the shorter length to keep the frames aligned",
                stacklevel=3,
            )
        return samples, unequal

    def _test(self, paths, rel: str) -> tuple[list[Sample], int]:
        rows = self._read_list(rel, tuple(MODALITY_KEYS))
        dropped = 0
        if self.options["official_drop"]:
            rgb_positions = [i for i, row in enumerate(rows) if row[2] == "RGB"]
            dropped = len(rgb_positions) % BUPT_OFFICIAL_TEST_BATCH
            if dropped:
                gone = set(rgb_positions[-dropped:])
                rows = [row for i, row in enumerate(rows) if i not in gone]
        samples = [
            Sample(self._frames(paths, row, row[2]), row[1], BUPT_CAMERAS[row[3]],
                   MODALITY_KEYS[row[2]])
            for row in rows
        ]
        if self.options["drop_one_frame"]:
            kept = [s for s in samples if len(s.frames) > 1]
            self._dropped_one_frame += len(samples) - len(kept)
            samples = kept
        return samples, dropped

    def _load(self) -> ReIDData:
        self._dropped_one_frame = 0
        paths = self._read_json()
        train, unequal = self._train(paths, "train.txt")
        aux_range = None
        if self.options["use_auxiliary"]:
            aux, unequal_aux = self._train(paths, "train_auxiliary.txt")
            aux_range = (len(train), len(train) + len(aux))
            train += aux
            unequal += unequal_aux
        self.verify([f for s in train for f in s.frames], self.path("data_paths.json"))
        labels = labels_by_rank(s.pid for s in train)
        train = relabel(train, labels)

        query_all, dropped_query = self._test(paths, "query.txt")
        gallery_all, dropped_gallery = self._test(paths, "gallery.txt")
        self.verify([f for s in query_all + gallery_all for f in s.frames],
                    self.path("data_paths.json"))

        def of(samples: list[Sample], modality: Modality) -> list[Sample]:
            return [s for s in samples if s.modality == modality]

        splits = []
        for direction in self.options["directions"]:
            q_mod, g_mod = ((Modality.INFRARED, Modality.VISIBLE) if direction == "ir->vis"
                            else (Modality.VISIBLE, Modality.INFRARED))
            splits.append(self.split(direction, of(query_all, q_mod), of(gallery_all, g_mod),
                                     direction))
        extra = {
            "auxiliary_train_range": aux_range,
            "pairs_with_unequal_lengths": unequal,
            "official_drop": {"query_rgb": dropped_query, "gallery_rgb": dropped_gallery},
            "one_frame_dropped": self._dropped_one_frame,
        }
        return ReIDData(self.name, self.root, train, splits, len(labels), extra)
