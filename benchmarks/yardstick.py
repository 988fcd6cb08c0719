"""The learning yardstick: does every method learn, and does every component show its effect?

Every registered method starts from a shipped synthetic CLIP (``model.pretrained=synthetic``)
and trains on synthetic people written in every dataset layout it supports; each run is
scored with that benchmark's protocol (``vireid train --json``) beside chance, with at
least two training seeds per row (mean +- std over seeds). Besides the main rows: each
paper's ablation rows on one layout, and a random-initialised start at the same budget.
Every run is one ``vireid train`` command (printed in the results), one thread each,
``--jobs`` of them side by side.

    python benchmarks/yardstick.py                     # the whole yardstick (``make yardstick``)
    python benchmarks/yardstick.py --quick             # main rows on one layout, one seed
    python benchmarks/yardstick.py --seed 7            # a test population nobody has seen
    python benchmarks/yardstick.py --seed 1000 --only clipreid/sysu --set train.stages.image.lr=1e-4

Populations: ``--seed`` seeds the synthetic people (the layouts' identity stream, disjoint
from the CLIPs' pretraining and held-out populations). Hyperparameters were chosen on the
validation population (seed 1000, :data:`VALIDATION_POPULATION`); ``docs/results.md``
reports the test population (seed 2000, the default), which played no part in the choice.
``--markdown FILE`` writes the tables (``docs/results.md`` is one such file plus its prose).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEAVES = Path("benchmarks") / "yardstick"
"""Config leaves, one per (method, layout), relative to the repository root."""

VALIDATION_POPULATION = 1000
TEST_POPULATION = 2000
TRAIN_SEEDS = (0, 1)
IMAGE_SIZE = (64, 32)
"""The shipped CLIPs' pretraining size (vireid.models.synthetic.PRETRAIN_IMAGE_SIZE)."""

POPULATIONS: dict[str, dict] = {
    # half of the identities are test identities, so that chance Rank-1 is low (1 / gallery ids)
    "sysu": {"num_ids": 120, "test_fraction": 0.5, "val_fraction": 0.1},
    "regdb": {"num_ids": 80},  # the layout splits identities in halves itself
    "llcm": {"num_ids": 120, "test_fraction": 0.5},
    "vcm": {"num_ids": 80, "test_fraction": 0.5},
    "bupt": {"num_ids": 100, "test_fraction": 0.4, "auxiliary_fraction": 0.1},
}
"""``synthesize`` arguments per layout."""

DATASET_FOLDER = {"sysu": "SYSU-MM01", "regdb": "RegDB", "llcm": "LLCM", "vcm": "HITSZ-VCM",
                  "bupt": "BUPTCampus"}

LAYOUTS_OF: dict[str, tuple[str, ...]] = {
    "clipreid": ("sysu", "regdb", "llcm", "vcm", "bupt"),
    "csdn": ("sysu", "regdb", "llcm"),
    "xreid": ("vcm", "bupt"),
    "vld": ("vcm", "bupt"),
    "lsmrl": ("vcm", "bupt"),
}
"""Layouts each method supports (image methods: image layouts, video methods: video ones;
CLIP-ReID takes both). The first is the method's ablation and quick layout."""

LABELS = {"clipreid": "CLIP-ReID", "csdn": "CSDN", "xreid": "X-ReID", "vld": "VLD",
          "lsmrl": "LSMRL"}

ABLATIONS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    # CSDN (TMM 2025), ablation table: modality-specific prompts, SII, HSE, MSEL
    "csdn": (
        ("without modality-specific prompts", ("method.prompts=shared",)),
        ("without SII", ("method.fusion=visible_only", "train.stages.sii.epochs=0",
                         "train.stages.sii.warmup_epochs=0")),
        ("without HSE", ("method.i2t_visible_weight=0", "method.i2t_infrared_weight=0")),
        ("without MSEL", ("method.msel=false",)),
    ),
    # X-ReID (AAAI 2025), ablation table: CPC, SII, LII, CII
    "xreid": (
        ("without CPC", ("method.cpc=false",)),
        ("without SII", ("method.sii=false",)),
        ("without LII", ("method.lii=false",)),
        ("without CII", ("method.cii=false",)),
    ),
    # LSMRL (arXiv 2601.12062), abstract: STFL, SD, CMI, modality-level losses
    "lsmrl": (
        ("without STFL", ("method.stfl=false",)),
        ("without SD", ("method.sd=false",)),
        ("without CMI", ("method.cmi=false",)),
        ("without modality losses", ("method.center_weight=0", "method.center_text_weight=0")),
    ),
}
"""Paper ablation rows: (label, overrides), run on the method's first layout."""


@dataclass(frozen=True)
class Row:
    """One table row: a method on a layout, with overrides, over the training seeds."""

    group: str  # "main" | "ablation" | "random start"
    method: str
    layout: str
    label: str
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return "/".join([self.method, self.layout, self.label.replace(" ", "-")])

    @property
    def leaf(self) -> Path:
        return LEAVES / f"{self.method}_{self.layout}.yaml"


def rows(quick: bool = False) -> list[Row]:
    """Every row of the yardstick (``quick``: the main rows on each method's first layout)."""
    out: list[Row] = []
    for method, layouts in LAYOUTS_OF.items():
        for layout in layouts[:1] if quick else layouts:
            out.append(Row("main", method, layout, LABELS[method]))
    if quick:
        return out
    for method, ablations in ABLATIONS.items():
        layout = LAYOUTS_OF[method][0]
        out += [Row("ablation", method, layout, f"{LABELS[method]} {label}", overrides)
                for label, overrides in ablations]
    for method, layouts in LAYOUTS_OF.items():
        out.append(Row("random start", method, layouts[0], f"{LABELS[method]} from random weights",
                       ("model.pretrained=null",)))
    return out


def check_coverage() -> None:
    """Every registered method has rows and every row's leaf exists (an error otherwise,
    so that a new method cannot be left out of the yardstick unnoticed)."""
    from vireid.methods import list_methods

    missing = sorted(set(list_methods()) - set(LAYOUTS_OF))
    if missing:
        raise SystemExit(f"yardstick: no rows for registered method(s) {', '.join(missing)}; "
                         "add them to LAYOUTS_OF with a leaf per layout in benchmarks/yardstick/")
    for row in rows():
        if not (ROOT / row.leaf).is_file():
            raise SystemExit(f"yardstick: missing config leaf {row.leaf}")


# --------------------------------------------------------------------------- running
@dataclass
class Run:
    row: Row
    seed: int
    command: list[str]
    run_dir: Path
    result: dict = field(default_factory=dict)


def population_root(workdir: Path, population: int, layout: str) -> Path:
    return workdir / f"population{population}" / DATASET_FOLDER[layout]


def make_population(workdir: Path, population: int, layout: str) -> tuple[Path, dict]:
    """The layout's synthetic people of ``population`` (written once, reused)."""
    from vireid.data.synthetic import synthesize

    root = population_root(workdir, population, layout)
    stats_file = root.parent / f"{layout}.json"
    if not stats_file.is_file():
        stats = synthesize(layout, root, seed=population, image_size=IMAGE_SIZE,
                           **POPULATIONS[layout])
        stats_file.write_text(json.dumps({k: v for k, v in stats.items() if k != "root"}))
    return root, json.loads(stats_file.read_text())


def chance(leaf: Path, root: Path) -> dict[str, float]:
    """Chance Rank-1 of each protocol setting (1 / gallery identities, mean over splits)."""
    from vireid.config import load_config
    from vireid.data.datasets import load_data
    from vireid.runner import chance_rank1

    return chance_rank1(load_data(load_config(ROOT / leaf, [f"data.root={root}"])))


def command_of(row: Row, seed: int, root: Path, run_dir: Path, extra: list[str]) -> list[str]:
    return ["vireid", "train", "-c", str(row.leaf), "--json", f"data.root={root}",
            f"output_dir={run_dir}", f"seed={seed}", *row.overrides, *extra]


def execute(run: Run) -> Run:
    """Runs one ``vireid train`` on one thread; reads its summary and loss history."""
    from vireid.engine.logger import stage_losses

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    exe = str(Path(sys.executable).with_name("vireid"))
    # the yardstick owns its run folders: a rerun starts clean (vireid train appends to the
    # metrics.jsonl of a fresh run in an existing folder, which would mix the two runs)
    shutil.rmtree(run.run_dir, ignore_errors=True)
    run.run_dir.mkdir(parents=True)
    start = time.perf_counter()
    with open(run.run_dir / "stdout.json", "w+") as out, open(run.run_dir / "stderr.txt", "w+") as err:
        proc = subprocess.Popen([exe, *run.command[1:]], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, whatever runs beside it
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    run.result = {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
                  "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}
    if proc.returncode != 0:
        run.result["error"] = stderr.strip().splitlines()[-1:] or ["(no message)"]
        return run
    summary = json.loads(stdout)
    run.result["metrics"] = {k: v["mean"] for k, v in summary.items() if k != "splits"}
    run.result["losses"] = stage_losses(next(run.run_dir.glob("*/metrics.jsonl")))  # first/last epoch
    return run


# --------------------------------------------------------------------------- tables
def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: list[Run], chances: dict[str, dict[str, float]]) -> list[dict]:
    """One entry per row: headline setting, Rank-1 / mAP mean and std over seeds, chance,
    CPU seconds per run, first/last loss of each stage (mean over seeds), commands."""
    table = []
    by_row: dict[Row, list[Run]] = {}
    for run in runs:
        by_row.setdefault(run.row, []).append(run)
    for row, group in by_row.items():
        ok = [r for r in group if "metrics" in r.result]
        setting = next(iter(ok[0].result["metrics"])) if ok else ""
        r1 = [100 * r.result["metrics"][setting]["R1"] for r in ok]
        mAP = [100 * r.result["metrics"][setting]["mAP"] for r in ok]
        losses: dict[str, dict[str, float]] = {}
        for r in ok:
            for stage, entry in r.result["losses"].items():
                acc = losses.setdefault(stage, {"first": 0.0, "last": 0.0, "epochs": entry["epochs"]})
                acc["first"] += entry["first"] / len(ok)
                acc["last"] += entry["last"] / len(ok)
        table.append({
            "group": row.group, "method": row.method, "layout": row.layout, "label": row.label,
            "key": row.key, "setting": setting, "seeds": [r.seed for r in ok],
            "failed": [{"seed": r.seed, "error": r.result.get("error")} for r in group
                       if "metrics" not in r.result],
            "R1": _mean_std(r1), "mAP": _mean_std(mAP), "R1_runs": r1,
            "chance_R1": 100 * chances[row.layout].get(setting, math.nan) if setting else math.nan,
            "cpu_s": statistics.fmean(r.result["cpu_s"] for r in group),
            "losses": losses,
            "commands": [shlex.join(r.command) for r in group],
        })
    return table


TEXT_STAGES = ("prompt", "sii")
"""Stages that train the text side only (prompts; CSDN's fusion of the two prompts' features)."""

TARGET_CHANCE_RATIO = 5.0
TARGET_TEXT_LOSS_DROP = 0.20


def _difference(a: dict, b: dict) -> tuple[float, float, bool]:
    """Rank-1 of a minus b, the std of that difference (sqrt(std_a^2 + std_b^2)), and whether
    it counts (beyond two of those std)."""
    diff = a["R1"][0] - b["R1"][0]
    std = math.hypot(a["R1"][1], b["R1"][1])
    return diff, std, abs(diff) > 2 * std


def checks(table: list[dict]) -> list[str]:
    """The targets, row by row: Rank-1 >= 5x chance, text-side stage loss down >= 20%,
    pretrained vs random start, each ablation vs its full method (beyond 2 std or not)."""
    main = {(e["method"], e["layout"]): e for e in table if e["group"] == "main"}
    lines = ["#### checks", "",
             f"Targets: Rank-1 at least {TARGET_CHANCE_RATIO:.0f}x chance; the loss of every "
             f"text-side stage ({', '.join(TEXT_STAGES)}) at least "
             f"{100 * TARGET_TEXT_LOSS_DROP:.0f}% below its first epoch; a difference of "
             "Rank-1 counts only beyond 2 std of the difference.", "",
             "| row | layout | check | value | met |", "|---|---|---|---|---|"]
    for e in table:
        if e["group"] == "main":
            ratio = e["R1"][0] / e["chance_R1"] if e["chance_R1"] else math.nan
            lines.append(f"| {e['label']} | {e['layout']} | Rank-1 / chance | {ratio:.1f}× | "
                         f"{'yes' if ratio >= TARGET_CHANCE_RATIO else 'no'} |")
            for stage in TEXT_STAGES:
                if stage in e["losses"]:
                    v = e["losses"][stage]
                    drop = 1 - v["last"] / v["first"]
                    lines.append(f"| {e['label']} | {e['layout']} | `{stage}` loss drop | "
                                 f"{100 * drop:.0f}% | "
                                 f"{'yes' if drop >= TARGET_TEXT_LOSS_DROP else 'no'} |")
        else:
            full = main.get((e["method"], e["layout"]))
            if full is None:
                continue
            diff, std, counts = _difference(full, e)
            what = ("pretrained − random start" if e["group"] == "random start"
                    else f"full − {e['label'].split(' ', 1)[1]}")
            if e["group"] == "random start":
                verdict = ("yes" if diff > 0 else "no (random ahead)") if counts \
                    else "no (within 2 std)"
            else:
                verdict = ("full ahead" if diff > 0 else "ablation ahead") if counts \
                    else "within 2 std"
            lines.append(f"| {e['label']} | {e['layout']} | {what} (Rank-1) | "
                         f"{diff:+.1f} ± {std:.1f} | {verdict} |")
    for method, base in (("vld", "clipreid"), ("lsmrl", "vld"), ("xreid", "clipreid"),
                         ("csdn", "clipreid")):
        for (m, layout), e in main.items():
            if m == method and (base, layout) in main:
                diff, std, counts = _difference(e, main[(base, layout)])
                verdict = (f"{LABELS[method]} ahead" if diff > 0 else f"{LABELS[base]} ahead") \
                    if counts else "within 2 std"
                lines.append(f"| {LABELS[method]} vs {LABELS[base]} | {layout} | Rank-1 "
                             f"difference | {diff:+.1f} ± {std:.1f} | {verdict} |")
    return lines + [""]


def _command_template(command: str) -> str:
    """A run's command with paths relative to the repository and the seed as S."""
    command = command.replace(f"{ROOT}/", "")
    return re.sub(r"seed(=|)\d+", r"seed\1S", command)


def _fmt(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.1f} ± {ms[1]:.1f}"


def markdown(table: list[dict], population: int, total_s: float) -> str:
    """The results tables (Markdown), as docs/results.md carries them."""
    lines = [f"Test population {population}; training seeds "
             f"{', '.join(map(str, sorted({s for e in table for s in e['seeds']})))}; "
             f"{total_s / 60:.0f} minutes in all.", ""]
    for group in ("main", "ablation", "random start"):
        entries = [e for e in table if e["group"] == group]
        if not entries:
            continue
        lines += [f"#### {group}", "",
                  "| row | layout | setting | Rank-1 (%) | mAP (%) | chance R1 | R1 / chance "
                  "| CPU s / run | stage losses, first → last epoch (epochs) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in entries:
            stages = "; ".join(f"{s} {v['first']:.2f} → {v['last']:.2f} ({v['epochs']})"
                               for s, v in e["losses"].items())
            ratio = e["R1"][0] / e["chance_R1"] if e["chance_R1"] else math.nan
            failed = f" ({len(e['failed'])} failed)" if e["failed"] else ""
            lines.append(f"| {e['label']}{failed} | {e['layout']} | {e['setting']} | "
                         f"{_fmt(e['R1'])} | {_fmt(e['mAP'])} | {e['chance_R1']:.1f} | "
                         f"{ratio:.1f}× | {e['cpu_s']:.0f} | {stages} |")
        lines.append("")
    lines += checks(table)
    lines += ["#### commands", "", "Every row, from the repository root (one thread: "
              "`OMP_NUM_THREADS=1`), once per training seed S; the data roots are written by "
              "`benchmarks/yardstick.py` (`vireid.data.synthetic.synthesize` with "
              "`POPULATIONS[layout]`, seed = population, 64×32).", "", "```"]
    lines += [_command_template(e["commands"][0]) for e in table]
    lines += ["```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def _write(text: str, path: Path | None) -> None:
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=TEST_POPULATION,
                        help=f"population seed (test {TEST_POPULATION}, validation "
                             f"{VALIDATION_POPULATION})")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=list(TRAIN_SEEDS))
    parser.add_argument("--quick", action="store_true",
                        help="main rows on each method's first layout, first training seed")
    parser.add_argument("--only", nargs="+", default=None,
                        help="rows with one of these keys or key prefixes (csdn, csdn/sysu, "
                             "csdn/sysu/CSDN)")
    parser.add_argument("--set", dest="extra", nargs="+", default=[],
                        help="KEY=VALUE overrides for every run (validation sweeps)")
    parser.add_argument("--tag", default=None,
                        help="name of this set of runs under the workdir (default: quick / full)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "yardstick")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                        help="only print (and --markdown) the tables of an earlier run")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        _write(markdown(saved["rows"], saved["population"], saved["total_s"]), args.markdown)
        return 0

    check_coverage()
    selected = [r for r in rows(args.quick)
                if args.only is None or any(r.key == p or r.key.startswith(p.rstrip("/") + "/")
                                            for p in args.only)]
    if not selected:
        print(f"yardstick: no row matches --only {' '.join(args.only)}", file=sys.stderr)
        return 2
    seeds = args.train_seeds[:1] if args.quick else args.train_seeds
    tag = args.tag or ("quick" if args.quick else "full")
    out_dir = args.workdir / f"population{args.seed}" / tag
    start = time.perf_counter()
    chances, runs = {}, []
    for layout in sorted({r.layout for r in selected}):
        root, stats = make_population(args.workdir, args.seed, layout)
        leaf = next(r.leaf for r in selected if r.layout == layout)
        chances[layout] = chance(leaf, root)
        print(f"population {args.seed} {layout}: {stats}", flush=True)
    for row in selected:
        root = population_root(args.workdir, args.seed, row.layout)
        for seed in seeds:
            run_dir = out_dir / row.key / f"seed{seed}"
            runs.append(Run(row, seed, command_of(row, seed, root, run_dir, args.extra), run_dir))
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for run in pool.map(execute, runs):
            done += 1
            metrics = run.result.get("metrics", {})
            head = next(iter(metrics.items()), ("", {}))
            r1 = f"R1 {100 * head[1]['R1']:.1f}%" if head[1] else f"FAILED: {run.result['error']}"
            print(f"[{done}/{len(runs)}] {run.row.key} seed {run.seed}: {head[0]} {r1} "
                  f"({run.result['cpu_s']:.0f} CPU s)", flush=True)
    total = time.perf_counter() - start
    table = aggregate(runs, chances)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(
        {"population": args.seed, "train_seeds": seeds, "extra": args.extra,
         "total_s": round(total, 1), "rows": table}, indent=1))
    _write(markdown(table, args.seed, total), args.markdown)
    failed = sum(len(e["failed"]) for e in table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
