"""Train, evaluate and demo: the library functions behind ``vireid train / eval / demo``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from vireid.config import Config, config_from_dict, load_config
from vireid.data.datasets import load_data
from vireid.data.types import ReIDData
from vireid.evaluation.evaluator import evaluate_method, format_summary, select_splits
from vireid.utils import resolve_device

__all__ = ["build", "chance_rank1", "demo", "evaluate_checkpoint", "load_data",
           "merge_trial_summaries", "train", "train_trials"]


def build(cfg: Config, rank: int = 0, world_size: int = 1):
    """(data, method) for a config."""
    from vireid.methods import build_method

    torch.manual_seed(cfg.seed)
    data = load_data(cfg)
    return data, build_method(cfg, data, rank=rank, world_size=world_size)


def evaluator_for(cfg: Config, data: ReIDData):
    """The evaluation callback the trainer calls: every split of the protocol."""
    return lambda method: evaluate_method(method, data, cfg.eval.batch_size, cfg.eval.splits,
                                          distance=cfg.eval.distance)


def train(cfg: Config) -> dict:
    """Trains ``cfg``'s method on its dataset (DDP when launched with torchrun).

    The run folder (``cfg.run_dir``) receives the resolved config, metrics.jsonl
    and checkpoints; returns the final evaluation (:func:`evaluate_method`'s summary).
    """
    from vireid.engine import Trainer
    from vireid.engine.distributed import init_distributed

    info = init_distributed()
    data, method = build(cfg, info.rank, info.world_size)
    try:  # every split name is known before the first step, not after training
        select_splits(data.splits, cfg.eval.splits)
    except ValueError as err:
        raise cfg.error("eval.splits", str(err)) from None
    trainer = Trainer(
        method, cfg, cfg.run_dir, evaluate=evaluator_for(cfg, data),
        checkpoint_every_steps=cfg.train.checkpoint_every_steps,
        keep_epoch_checkpoints=cfg.train.keep_epoch_checkpoints,
    )
    return trainer.fit()


def config_of_checkpoint(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The resolved config stored in a checkpoint, with dotted overrides applied."""
    from vireid.engine.checkpoint import load_checkpoint

    return config_from_dict(load_checkpoint(path)["config"], source=f"checkpoint {path}",
                            overrides=overrides)


def evaluate_checkpoint(
    checkpoint: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
    rerank: bool | None = None,
) -> dict:
    """Evaluates a checkpoint on its dataset's protocol (config from ``config`` or the checkpoint).

    ``rerank``: True applies k-reciprocal re-ranking with the settings of
    ``cfg.eval.rerank`` (k1, k2, lambda_value), False never does, None follows
    ``eval.rerank.enabled``.
    """
    from vireid.engine.checkpoint import load_method_weights

    cfg = load_config(config, overrides) if config else config_of_checkpoint(checkpoint, overrides)
    data, method = build(cfg)
    load_method_weights(method, checkpoint)
    method.to(resolve_device(cfg.train.device))
    use_rerank = cfg.eval.rerank.enabled if rerank is None else rerank
    return evaluate_method(method, data, cfg.eval.batch_size, cfg.eval.splits,
                           rerank=cfg.eval.rerank if use_rerank else None,
                           distance=cfg.eval.distance)


def chance_rank1(data: ReIDData) -> dict[str, float]:
    """Rank-1 of a random ranking per split setting: 1 / number of gallery identities."""
    out: dict[str, list[float]] = {}
    for split in data.splits:
        key = split.name.split("/trial")[0]
        key = key if split.direction in key else f"{key} {split.direction}".strip()
        out.setdefault(key, []).append(1.0 / len({s.pid for s in split.gallery}))
    return {k: sum(v) / len(v) for k, v in out.items()}


DEMO_CONFIG = Path(__file__).resolve().parent / "demo.yaml"


def demo(workdir: str | Path = "runs/demo", seed: int = 0, overrides: Sequence[str] = ()) -> dict:
    """Synthetic SYSU-MM01-layout people -> CLIP-ReID from the shipped synthetic ViT CLIP
    (CPU) -> protocol evaluation.

    Prints the first and last epoch loss of each stage, then the table beside chance
    level; returns the summary with the losses and timings.
    """
    from vireid.data.synthetic import synthesize
    from vireid.engine.logger import METRICS_FILE, stage_losses

    workdir = Path(workdir)
    start = time.perf_counter()
    root = workdir / "SYSU-MM01"
    cfg = load_config(DEMO_CONFIG, [f"data.root={root}", f"output_dir={workdir}", f"seed={seed}",
                                    *overrides])
    made = synthesize("sysu", root, num_ids=120, seed=seed, test_fraction=0.5, val_fraction=0.1,
                      image_size=tuple(cfg.data.image_size))
    generated = time.perf_counter() - start
    summary = train(cfg)
    chance = chance_rank1(load_data(cfg))
    losses = stage_losses(cfg.run_dir / METRICS_FILE)
    total = time.perf_counter() - start
    for stage, loss in losses.items():
        print(f"stage {stage}: loss {loss['first']:.3f} (first epoch) -> {loss['last']:.3f} "
              f"(epoch {loss['epochs']}), {100 * (1 - loss['last'] / loss['first']):.0f}% lower")
    print(format_summary({k: v for k, v in summary.items() if k != "splits"}))
    for key, value in chance.items():
        print(f"chance Rank-1 ({key}): {100 * value:.2f}%")
    report = {"generated_s": round(generated, 1), "total_s": round(total, 1),
              "dataset": {k: v for k, v in made.items() if k != "root"}, "chance_rank1": chance,
              "stage_losses": losses}
    print(json.dumps(report))
    return {"summary": summary, **report}


def train_trials(cfg: Config, trials: Sequence[int] = tuple(range(1, 11))) -> dict:
    """One model per RegDB trial (``data.options.trial``), then the average over them.

    Trial ``k`` runs in ``<output_dir>/<name>_trial<k>``. Returns the summary format
    of :func:`train` with one row per trial in each direction and the mean and
    (population) std over the trials (:func:`merge_trial_summaries`).
    """
    if cfg.data.name != "regdb":
        raise cfg.error("data.name", f"one model per trial is the RegDB protocol, not {cfg.data.name!r}")
    trials = [int(t) for t in trials]
    if not trials or len(set(trials)) != len(trials):
        raise ValueError(f"trials must be distinct trial numbers, got {trials}")
    summaries = []
    for trial in trials:
        trial_cfg = cfg.model_copy(deep=True)
        trial_cfg.data.options = {**cfg.data.options, "trial": trial}
        trial_cfg.name = f"{cfg.name}_trial{trial}"
        summaries.append(train(trial_cfg) or {})
    return merge_trial_summaries(summaries)


def merge_trial_summaries(summaries: Sequence[dict]) -> dict:
    """Summaries of separately trained models (one per trial, e.g. RegDB's ten) merged
    into one: every row of each setting, their mean and (population) std, and all
    ``"splits"`` rows."""
    import numpy as np

    rows: dict[str, list[dict]] = {}
    splits: list[dict] = []
    for summary in summaries:
        for key, group in summary.items():
            if key == "splits":
                splits += group
            else:
                rows.setdefault(key, []).extend(group["trials"])
    merged: dict = {}
    for key, group_rows in rows.items():
        cols = [c for c in group_rows[0] if c != "trial"]
        table = np.array([[r[c] for c in cols] for r in group_rows])
        merged[key] = {
            "trials": group_rows,
            "mean": dict(zip(cols, table.mean(0).tolist())),
            "std": dict(zip(cols, table.std(0).tolist())),
        }
    merged["splits"] = splits
    return merged
