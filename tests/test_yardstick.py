"""The learning yardstick's plumbing (benchmarks/yardstick.py): rows cover every method,
every leaf resolves, one run goes through the real ``vireid train`` and is read back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from vireid.config import load_config
from vireid.data.synthetic import synthesize
from vireid.engine.logger import read_metrics
from vireid.methods import list_methods

ROOT = Path(__file__).resolve().parents[1]


def _yardstick():
    spec = importlib.util.spec_from_file_location("yardstick", ROOT / "benchmarks" / "yardstick.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["yardstick"] = module
    spec.loader.exec_module(module)
    return module


ys = _yardstick()


def test_every_registered_method_has_rows_on_every_layout_it_names():
    ys.check_coverage()
    methods = {r.method for r in ys.rows() if r.group == "main"}
    assert methods == set(list_methods())
    keys = [r.key for r in ys.rows()]
    assert len(keys) == len(set(keys))
    # --quick: one main row per method, on its first layout
    assert [(r.method, r.layout) for r in ys.rows(quick=True)] == [
        (m, layouts[0]) for m, layouts in ys.LAYOUTS_OF.items()]


@pytest.mark.parametrize("row", ys.rows(), ids=lambda r: r.key)
def test_every_row_resolves_to_a_valid_config(row):
    cfg = load_config(ROOT / row.leaf, ["data.root=/nowhere", *row.overrides])
    assert cfg.method.name == row.method
    assert cfg.data.name == row.layout
    assert tuple(cfg.data.image_size) == ys.IMAGE_SIZE
    assert cfg.model.pretrained == (None if "model.pretrained=null" in row.overrides
                                    else "synthetic")
    assert cfg.model.backbone.startswith("synth-")


def test_ablation_overrides_change_the_config():
    for row in ys.rows():
        if row.group != "ablation":
            continue
        base = load_config(ROOT / row.leaf, ["data.root=/nowhere"]).model_dump()
        ablated = load_config(ROOT / row.leaf, ["data.root=/nowhere", *row.overrides]).model_dump()
        assert base != ablated, row.key


def test_one_run_goes_through_vireid_train_and_is_read_back(tmp_path):
    root = tmp_path / "SYSU-MM01"
    synthesize("sysu", root, num_ids=12, seed=3, image_size=(64, 32))
    row = ys.Row("main", "clipreid", "sysu", "CLIP-ReID")
    tiny = ["model.backbone=tiny-vit", "model.pretrained=null", "train.stages.prompt.epochs=2",
            "train.stages.image.epochs=1", "data.identities_per_batch=2"]
    run = ys.execute(ys.Run(row, 0, ys.command_of(row, 0, root, tmp_path / "run", tiny),
                            tmp_path / "run"))
    assert run.result["returncode"] == 0, run.result
    setting, metrics = next(iter(run.result["metrics"].items()))
    assert setting.startswith("all-search") and 0.0 <= metrics["R1"] <= 1.0
    losses = run.result["losses"]
    assert losses["prompt"]["epochs"] == 2 and losses["image"]["epochs"] == 1
    table = ys.aggregate([run], {"sysu": ys.chance(row.leaf, root)})
    assert table[0]["chance_R1"] > 0 and table[0]["R1_runs"] == [100 * metrics["R1"]]
    text = ys.markdown(table, 3, 1.0)
    assert "CLIP-ReID" in text and "prompt" in text and run.command[0] == "vireid"
    # a rerun in the same folder starts clean: one run's records, not two runs' mixed
    again = ys.execute(ys.Run(row, 0, run.command, tmp_path / "run"))
    assert again.result["metrics"] == run.result["metrics"]
    records = read_metrics(next((tmp_path / "run").glob("*/metrics.jsonl")))
    starts = [r["stage"] for r in records if r["kind"] == "stage" and r["event"] == "start"]
    assert starts == ["prompt", "image"]


def test_a_failed_run_is_reported_not_hidden(tmp_path):
    row = ys.Row("main", "clipreid", "sysu", "CLIP-ReID")
    run = ys.execute(ys.Run(row, 0, ys.command_of(row, 0, tmp_path / "missing", tmp_path / "r", []),
                            tmp_path / "r"))
    assert run.result["returncode"] == 2 and "metrics" not in run.result
    table = ys.aggregate([run], {"sysu": {}})
    assert table[0]["failed"] and "1 failed" in ys.markdown(table, 0, 1.0)


def test_checks_compare_rows_beyond_two_std():
    def entry(group, method, label, r1, std, losses=None):
        return {"group": group, "method": method, "layout": "sysu", "label": label,
                "R1": (r1, std), "chance_R1": 2.0, "losses": losses or {}}

    table = [entry("main", "csdn", "CSDN", 12.0, 0.5, {"prompt": {"first": 10.0, "last": 7.0}}),
             entry("main", "clipreid", "CLIP-ReID", 9.0, 1.0),
             entry("ablation", "csdn", "CSDN without SII", 11.0, 0.5),
             entry("random start", "csdn", "CSDN from random weights", 6.0, 0.5)]
    text = "\n".join(ys.checks(table))
    assert "| CSDN | sysu | Rank-1 / chance | 6.0× | yes |" in text
    assert "| CLIP-ReID | sysu | Rank-1 / chance | 4.5× | no |" in text
    assert "`prompt` loss drop | 30% | yes |" in text
    assert "full − without SII (Rank-1) | +1.0 ± 0.7 | within 2 std |" in text
    assert "pretrained − random start (Rank-1) | +6.0 ± 0.7 | yes |" in text
    assert "| CSDN vs CLIP-ReID | sysu | Rank-1 difference | +3.0 ± 1.1 | CSDN ahead |" in text
