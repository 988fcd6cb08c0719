"""RegDB (Nguyen et al., Sensors 2017): one visible and one thermal camera, 412 identities.

Ten fixed 206/206 identity splits ship as ``idx/{train,test}_{visible,thermal}_{k}.txt``
with lines ``<relative path> <label>``. As in the reference loaders
(``RegDBData``, ``process_test_regdb``) the training labels are the label
column as written; the identity of every image is the folder it sits in
(``Visible/<id>/...``). One model is trained per split (option ``trial``).
Visible->Thermal: query = test_visible_k, gallery = test_thermal_k;
Thermal->Visible swaps them. No sampling, no exclusion.
"""

from __future__ import annotations

from vireid.data.datasets.base import (
    VERIFY_FILES_OPTION,
    DatasetLoader,
    IndexFormatError,
    Option,
    check_label_column,
    directions_of,
    int_in,
    parse_int,
    read_path_label_index,
    relative_parts,
)
from vireid.data.protocols import REGDB_CAMERAS, REGDB_TRIALS
from vireid.data.types import Modality, ReIDData, Sample

DIRECTIONS = ("vis->ir", "ir->vis")
"""Visible->Thermal is the direction most papers report first."""


class RegDB(DatasetLoader):
    name = "regdb"
    title = "RegDB"
    protocol = "regdb"
    aliases = ()
    EXPECTED_TREE = """\
RegDB/
  Visible/<id>/*.bmp
  Thermal/<id>/*.bmp
  idx/
      train_visible_{1..10}.txt  train_thermal_{1..10}.txt
      test_visible_{1..10}.txt   test_thermal_{1..10}.txt
          each line: <relative path> <label>, e.g. Visible/285/male_back_v_05528_285.bmp 0
"""
    OPTIONS = {
        "trial": Option(1, "which of the 10 identity splits (1..10); one model per split",
                        int_in(REGDB_TRIALS[0], REGDB_TRIALS[-1])),
        "directions": Option(None, "'vis->ir', 'ir->vis' or both (default)",
                             directions_of(DIRECTIONS)),
        "verify_files": VERIFY_FILES_OPTION,
    }

    def _index(self, part: str, modality: str) -> str:
        return f"idx/{part}_{modality}_{self.options['trial']}.txt"

    def required_paths(self) -> list[str]:
        return ["Visible/", "Thermal/"] + [
            self._index(part, modality)
            for part in ("train", "test") for modality in ("visible", "thermal")
        ]

    def _read(self, part: str, modality: str) -> tuple[list[Sample], list[tuple[str, int, int]]]:
        index_rel = self._index(part, modality)
        index_file = self.path(index_rel)
        mod = Modality.VISIBLE if modality == "visible" else Modality.INFRARED
        camera = REGDB_CAMERAS[modality]
        samples, rows = [], []
        for number, rel, label in read_path_label_index(index_file):
            where = f"{index_file}, line {number}"
            parts = relative_parts(rel)
            if len(parts) < 3:
                raise IndexFormatError(
                    f"{where}: expected <Visible|Thermal>/<id>/<file>, got {rel!r}"
                )
            pid = parse_int(parts[-2], "identity folder", where)
            samples.append(Sample(self.inside(self.path(*parts), where), pid, camera, mod))
            rows.append((where, pid, label))
        self.verify([s.path for s in samples], index_file)
        return samples, rows

    def _load(self) -> ReIDData:
        trial = self.options["trial"]
        train_vis, rows_vis = self._read("train", "visible")
        train_ir, rows_ir = self._read("train", "thermal")
        num_classes = check_label_column(rows_vis + rows_ir, f"RegDB trial {trial}")
        label_of = {pid: label for _, pid, label in rows_vis + rows_ir}
        train = [
            Sample(s.path, s.pid, s.camera, s.modality, label_of[s.pid])
            for s in train_vis + train_ir
        ]
        test_vis, _ = self._read("test", "visible")
        test_ir, _ = self._read("test", "thermal")
        overlap = sorted({s.pid for s in train} & {s.pid for s in test_vis + test_ir})
        if overlap:
            raise IndexFormatError(
                f"RegDB trial {trial}: identities {overlap[:5]} appear in both the train and "
                "the test index files"
            )
        splits = []
        for direction in self.options["directions"]:
            query, gallery = (test_vis, test_ir) if direction == "vis->ir" else (test_ir, test_vis)
            splits.append(self.split(f"{direction}/trial{trial}", query, gallery, direction, trial))
        extra = {"trial": trial}
        return ReIDData(self.name, self.root, train, splits, num_classes, extra)
