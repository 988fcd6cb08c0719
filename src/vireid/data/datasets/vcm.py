"""HITSZ-VCM (Lin et al., CVPR 2022): visible and infrared video tracklets from 12 cameras.

Read as the reference ``VCM`` class reads it (docs/datasets.md#hitsz-vcm):

- ``info/train_name.txt`` / ``test_name.txt``: one frame name per line, e.g.
  ``0001M2D3T1F1.jpg`` -> ``0001/rgb/D3/1.jpg`` (characters 0-3 the identity,
  character 5 the modality, ``'1'`` = ``ir``, anything else ``rgb``; the camera
  folder is the text from ``D`` up to ``T``; the file is the text after ``F``);
- ``info/track_{train,test}_info.txt``: rows ``modality start end pid camid``
  (modality 1 = infrared, 2 = visible; ``start``/``end`` 1-based, inclusive,
  into the matching name list);
- ``info/query_IDX.txt``: 1-based rows of ``track_test_info`` that are the
  infrared queries.

Frames sit under ``Train/`` and ``Test/``; some unpackings have no such level
(frames directly under the root). Both are accepted (option ``frames_layout``,
detected by default).

Tracklets shorter than ``min_seq_len`` (12) frames are dropped, train and
test, as in the reference; the counts are reported in ``extra``.
``ir->vis`` (I2V): query = query_IDX rows, gallery = every other test row.
``vis->ir`` (V2I): the roles swapped (the reference's ``query_1``/``gallery_1``).
Training labels are the rank of the identity among the kept training tracklets.
"""

from __future__ import annotations

import os

from vireid.data.datasets.base import (
    VERIFY_FILES_OPTION,
    DatasetLayoutError,
    DatasetLoader,
    IndexFormatError,
    Option,
    directions_of,
    int_in,
    labels_by_rank,
    one_of,
    read_int_list,
    read_lines,
    read_text,
    relabel,
    under,
)
from vireid.data.protocols import VCM_MIN_SEQ_LEN
from vireid.data.types import Modality, ReIDData, Sample

DIRECTIONS = ("ir->vis", "vis->ir")

INFO_FILES = (
    "info/train_name.txt",
    "info/test_name.txt",
    "info/track_train_info.txt",
    "info/track_test_info.txt",
    "info/query_IDX.txt",
)


def frame_relpath(name: str) -> str:
    """Relative path of a VCM frame from its name: ``0001M2D3T1F1.jpg`` -> ``0001/rgb/D3/1.jpg``.

    Raises ``ValueError`` for a name that does not follow the pattern.
    """
    d_pos, t_pos, f_pos = name.find("D"), name.find("T"), name.find("F")
    if len(name) < 6 or min(d_pos, t_pos, f_pos) < 0 or not d_pos < t_pos < f_pos:
        raise ValueError(f"frame name {name!r} does not look like <id>M<m>D<cam>T<track>F<frame>")
    modality = "ir" if name[5] == "1" else "rgb"
    return f"{name[0:4]}/{modality}/{name[d_pos:t_pos]}/{name[f_pos + 1:]}"


class HITSZVCM(DatasetLoader):
    name = "vcm"
    title = "HITSZ-VCM"
    protocol = "vcm"
    aliases = ("hitsz-vcm", "hitsz_vcm", "hitszvcm", "vcm-hitsz")
    EXPECTED_TREE = """\
HITSZ-VCM/
  info/
      train_name.txt  test_name.txt              one frame name per line (0001M2D3T1F1.jpg)
      track_train_info.txt  track_test_info.txt  rows: modality start end pid camid
      query_IDX.txt                              1-based rows of track_test_info (IR queries)
  Train/<id>/{ir,rgb}/D<cam>/<n>.jpg
  Test/<id>/{ir,rgb}/D<cam>/<n>.jpg
      (some unpackings have no Train/ Test/ level: <id>/{ir,rgb}/... directly under the root)
"""
    OPTIONS = {
        "min_seq_len": Option(VCM_MIN_SEQ_LEN, "drop tracklets with fewer frames (train and test)",
                              int_in(0)),
        "frames_layout": Option(
            "auto", "'split' (Train/ and Test/ folders), 'flat' (no such level) or 'auto'",
            one_of("auto", "split", "flat"),
        ),
        "directions": Option(None, "'ir->vis' (reported first), 'vis->ir', or both (default)",
                             directions_of(DIRECTIONS)),
        "verify_files": VERIFY_FILES_OPTION,
    }

    def required_paths(self) -> list[str]:
        required = list(INFO_FILES)
        if self.options["frames_layout"] == "split":
            required += ["Train/", "Test/"]
        return required

    def _frames_layout(self) -> str:
        chosen = self.options["frames_layout"]
        if chosen != "auto":
            return chosen
        has_train, has_test = os.path.isdir(self.path("Train")), os.path.isdir(self.path("Test"))
        if has_train and has_test:
            return "split"
        if has_train or has_test:
            absent = self.path("Test" if has_train else "Train")
            raise self.layout_error(
                f"found only one of Train/ and Test/ under {self.root}:", [absent + "/"]
            )
        return "flat"

    def _read_names(self, rel: str) -> list[str]:
        # Every line counts (the track rows index lines), so blank lines are kept.
        return [line.strip() for line in read_text(self.path(rel)).splitlines()]

    def _read_tracks(self, rel: str, num_names: int) -> list[tuple[int, int, int, int, int]]:
        path = self.path(rel)
        rows = []
        for number, line in read_lines(path):
            fields = line.split()
            try:
                values = tuple(int(f) for f in fields)
            except ValueError:
                values = ()
            if len(values) != 5:
                raise IndexFormatError(
                    f"{path}, line {number}: expected five integers "
                    f"'modality start end pid camid', got {line!r}"
                )
            _, start, end, _, _ = values
            if not 1 <= start <= end <= num_names:
                raise IndexFormatError(
                    f"{path}, line {number}: frames {start}..{end} are outside the "
                    f"{num_names} names of the matching *_name.txt"
                )
            rows.append(values)
        if not rows:
            raise IndexFormatError(f"{path} lists no tracklet")
        return rows

    def _tracklets(self, rows, names, frames_dir, names_file) -> list[Sample | None]:
        """One Sample per row, or None where the tracklet is shorter than ``min_seq_len``."""
        out: list[Sample | None] = []
        min_len = self.options["min_seq_len"]
        prefix = os.path.join(frames_dir, "")  # plain concatenation: ~500k frames on the real set
        for modality_code, start, end, pid, camid in rows:
            if end - start + 1 < min_len:
                out.append(None)
                continue
            frames = []
            for position in range(start - 1, end):
                try:
                    rel = frame_relpath(names[position])
                except ValueError as err:
                    raise IndexFormatError(f"{names_file}, line {position + 1}: {err}") from None
                frames.append(self.inside(under(prefix, rel), f"{names_file}, line {position + 1}"))
            modality = Modality.INFRARED if modality_code == 1 else Modality.VISIBLE
            out.append(Sample(tuple(frames), pid, camid, modality))
        return out

    def _load(self) -> ReIDData:
        layout = self._frames_layout()
        train_dir = self.path("Train") if layout == "split" else self.root
        test_dir = self.path("Test") if layout == "split" else self.root

        train_names = self._read_names("info/train_name.txt")
        test_names = self._read_names("info/test_name.txt")
        train_rows = self._read_tracks("info/track_train_info.txt", len(train_names))
        test_rows = self._read_tracks("info/track_test_info.txt", len(test_names))
        query_file = self.path("info/query_IDX.txt")
        query_rows = [i - 1 for i in read_int_list(query_file)]
        bad = [i + 1 for i in query_rows if not 0 <= i < len(test_rows)]
        if bad:
            raise IndexFormatError(
                f"{query_file}: row(s) {bad[:5]} are outside the {len(test_rows)} rows of "
                "info/track_test_info.txt (the indices are 1-based)"
            )

        train_all = self._tracklets(train_rows, train_names, train_dir,
                                    self.path("info/train_name.txt"))
        test_all = self._tracklets(test_rows, test_names, test_dir,
                                   self.path("info/test_name.txt"))
        train = [s for s in train_all if s is not None]
        if not train:
            raise DatasetLayoutError(
                f"HITSZ-VCM: every training tracklet is shorter than min_seq_len="
                f"{self.options['min_seq_len']}"
            )
        self.verify([f for s in train for f in s.frames], self.path("info/train_name.txt"))
        self.verify([f for s in test_all if s is not None for f in s.frames],
                    self.path("info/test_name.txt"))
        labels = labels_by_rank(s.pid for s in train)
        train = relabel(train, labels)

        query_set = set(query_rows)
        ir_rows = list(dict.fromkeys(query_rows))  # file order, duplicates removed
        other_rows = [i for i in range(len(test_rows)) if i not in query_set]
        ir_side = [test_all[i] for i in ir_rows if test_all[i] is not None]
        other_side = [test_all[i] for i in other_rows if test_all[i] is not None]
        splits = []
        for direction in self.options["directions"]:
            query, gallery = (ir_side, other_side) if direction == "ir->vis" else (
                other_side, ir_side)
            splits.append(self.split(direction, query, gallery, direction))

        dropped_train = sum(s is None for s in train_all)
        dropped_test = sum(s is None for s in test_all)
        all_train_ids = {row[3] for row in train_rows}
        extra = {
            "frames_layout": layout,
            "min_seq_len": self.options["min_seq_len"],
            "dropped_short_tracklets": {
                "train": dropped_train,
                "test": dropped_test,
                "query_IDX_rows": sum(test_all[i] is None for i in ir_rows),
                "other_test_rows": sum(test_all[i] is None for i in other_rows),
            },
            "train_ids_without_tracklets": sorted(all_train_ids - set(labels)),
        }
        return ReIDData(self.name, self.root, train, splits, len(labels), extra)
