"""BUPTCampus: the official one-frame rule as a loader option (data.options.drop_one_frame)."""

from __future__ import annotations

import json
import warnings

from test_datasets import make_bupt

from vireid.data.datasets import load_dataset


def _with_one_frame_tracklets(root):
    paths = root / "data_paths.json"
    data = json.loads(paths.read_text())
    data["10"]["IR"]["G25"]["1"] = data["10"]["IR"]["G25"]["1"][:1]  # a train pair's IR
    data["21"]["IR"]["LS3"]["1"] = data["21"]["IR"]["LS3"]["1"][:1]  # an IR query
    paths.write_text(json.dumps(data))
    return root


def test_drop_one_frame_follows_the_official_loader(tmp_path):
    root = _with_one_frame_tracklets(make_bupt(tmp_path / "BUPTCampus"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cut RGB/IR pair
        kept = load_dataset("bupt", root)
        dropped = load_dataset("bupt", root, drop_one_frame=True)
    assert len(kept.train) == 8 and kept.extra["one_frame_dropped"] == 0
    # the pair whose IR recording has one frame goes, both samples; pid 10 had only it
    assert len(dropped.train) == 6 and {s.pid for s in dropped.train} == {2, 3}
    assert dropped.num_classes == 2
    ir_queries = {s.pid for s in dropped.splits[0].query}
    assert ir_queries == {20, 22} and {s.pid for s in kept.splits[0].query} == {20, 21, 22}
    # the test tracklets of two frames stay; the count says what was dropped
    assert dropped.extra["one_frame_dropped"] == 2
