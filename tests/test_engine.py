"""Training engine: freezing, optimiser groups, schedules, resume, non-finite loss, logging."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _engine_toy import ToyMethod, toy_config
from torch import nn
from torch.utils.data import DataLoader

from vireid.config import ConfigError, StageConfig
from vireid.engine import (
    LAST_CHECKPOINT,
    NonFiniteLossError,
    Trainer,
    TrainerHook,
    build_optimizer,
    load_checkpoint,
    lr_at,
    move_to_device,
    read_metrics,
)
from vireid.methods.base import ParamGroup


class Recorder(TrainerHook):
    """Per-step losses and lrs, and anything a test wants to look at after each step."""

    def __init__(self, check=None, crash_at: int | None = None) -> None:
        self.losses: dict[int, float] = {}
        self.lrs: dict[int, dict[str, float]] = {}
        self.stages: dict[int, str] = {}
        self.check = check
        self.crash_at = crash_at

    def after_step(self, trainer, outputs) -> None:
        step = trainer.global_step
        self.losses[step] = float(outputs["loss"].detach())
        self.lrs[step] = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
        self.stages[step] = trainer.stage.name
        if self.check is not None:
            self.check(trainer)
        if self.crash_at is not None and step == self.crash_at:
            raise KeyboardInterrupt(f"simulated kill after step {step}")


def named_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- stages


def test_each_stage_trains_exactly_its_parameters_and_frozen_modules_stay_in_eval(tmp_path):
    method = ToyMethod()
    expected = {
        "prompt": {"prompt", "head.weight", "head.bias"},
        "finetune": {"backbone.0.weight", "backbone.0.bias", "backbone.1.weight",
                     "backbone.1.bias", "head.weight", "head.bias"},
    }
    seen_stages = []
    before: dict[str, dict[str, torch.Tensor]] = {}

    class Check(TrainerHook):
        def before_stage(self, trainer, stage):
            before[stage.name] = named_snapshot(method)

        def after_step(self, trainer, outputs):
            name = trainer.stage.name
            seen_stages.append(name)
            with_grad = {n for n, p in method.named_parameters() if p.grad is not None}
            assert with_grad == expected[name]
            trainable = {n for n, p in method.named_parameters() if p.requires_grad}
            assert trainable == expected[name]
            if name == "prompt":
                assert not method.backbone.training
                assert not method.backbone[1].training
                assert method.head.training
            else:
                assert method.backbone.training and method.head.training

        def after_stage(self, trainer, stage):
            after = named_snapshot(method)
            for key, value in before[stage.name].items():
                changed = not torch.equal(value, after[key])
                # parameters change iff they train; BN statistics only when the BN trains
                should_change = key in expected[stage.name] or (
                    stage.name == "finetune" and key.startswith("backbone.1.running")
                )
                if key.endswith("num_batches_tracked"):
                    should_change = stage.name == "finetune"
                assert changed == should_change, (stage.name, key)

    Trainer(method, toy_config(), tmp_path, hooks=[Check()]).fit()
    assert seen_stages == ["prompt"] * 6 + ["finetune"] * 6


def test_stage_with_zero_epochs_is_skipped(tmp_path):
    method = ToyMethod()
    prompt_before = method.prompt.detach().clone()
    recorder = Recorder()
    Trainer(method, toy_config(stages={"prompt": {"epochs": 0}}), tmp_path,
            hooks=[recorder]).fit()
    assert set(recorder.stages.values()) == {"finetune"}
    assert torch.equal(method.prompt.detach(), prompt_before)
    skipped = [r for r in read_metrics(tmp_path / "metrics.jsonl")
               if r["kind"] == "stage" and r.get("event") == "skipped"]
    assert [r["stage"] for r in skipped] == ["prompt"]


def test_config_stages_must_match_the_method(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.stages\.finetune"):
        Trainer(ToyMethod(), toy_config(stages={"finetune": None}), tmp_path).fit()
    with pytest.raises(ConfigError, match=r"train\.stages\.extra.*no stage 'extra'"):
        Trainer(ToyMethod(), toy_config(stages={"extra": {"epochs": 1}}), tmp_path).fit()
    assert not (tmp_path / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- optimiser


def test_optimizer_groups_get_multipliers_bias_factor_and_decay():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    groups = [
        ParamGroup("backbone", list(model[0].parameters()) + list(model[1].parameters())),
        ParamGroup("classifier", list(model[2].parameters()), weight_decay=0.0),
    ]
    cfg = StageConfig(epochs=1, lr=0.1, weight_decay=5e-4, weight_decay_bias=1e-5,
                      bias_lr_factor=2.0, lr_multipliers={"classifier": 10.0}, optimizer="sgd")
    optimizer = build_optimizer(model, groups, cfg, "main")
    table = {g["name"]: (g["lr"], g["weight_decay"], len(g["params"]))
             for g in optimizer.param_groups}
    assert table == {
        "backbone": (0.1, 5e-4, 1),            # linear weight
        "backbone.bias": (0.2, 1e-5, 2),       # linear bias, LayerNorm bias
        "backbone.norm": (0.1, 1e-5, 1),       # LayerNorm weight
        "classifier": (1.0, 0.0, 1),
        "classifier.bias": (2.0, 1e-5, 1),
    }
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9

    plain = build_optimizer(model, groups, StageConfig(epochs=1, lr=0.1, optimizer="adamw",
                                                       lr_multipliers={"classifier": 2.0}))
    assert isinstance(plain, torch.optim.AdamW)
    assert {g["name"]: g["lr"] for g in plain.param_groups} == {"backbone": 0.1, "classifier": 0.2}


def test_optimizer_rejects_bad_groups():
    model = nn.Linear(2, 2)
    cfg = StageConfig(epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="lr_multipliers names \\['head'\\]"):
        build_optimizer(model, [ParamGroup("all", list(model.parameters()))],
                        StageConfig(epochs=1, lr=0.1, lr_multipliers={"head": 2.0}), "main")
    with pytest.raises(ValueError, match="'weight' is in groups 'a' and 'b'"):
        build_optimizer(model, [ParamGroup("a", [model.weight]), ParamGroup("b", [model.weight])],
                        cfg, "main")
    stray = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="not registered in the method"):
        build_optimizer(model, [ParamGroup("a", [stray])], cfg, "main")
    with pytest.raises(ValueError, match="no parameters to train"):
        build_optimizer(model, [ParamGroup("a", [])], cfg, "main")


# --------------------------------------------------------------------------- schedules


def test_warmup_multistep_per_epoch_in_training(tmp_path):
    stage = {"epochs": 6, "lr": 0.01, "warmup_epochs": 2, "warmup_factor": 0.1,
             "milestones": [3, 5], "gamma": 0.1, "lr_multipliers": {"classifier": 2.0}}
    cfg = toy_config(stages={"prompt": {"epochs": 0}, "finetune": stage})
    recorder = Recorder()
    Trainer(ToyMethod(), cfg, tmp_path, hooks=[recorder]).fit()
    # epoch 0: 0.1*lr; epoch 1: half-way to lr; 2: lr; 3-4: lr*0.1; 5: lr*0.01
    per_epoch = [0.001, 0.0055, 0.01, 0.001, 0.001, 0.0001]
    for step, lrs in recorder.lrs.items():
        epoch = (step - 1) // 3
        assert lrs["backbone"] == pytest.approx(per_epoch[epoch], rel=1e-12)
        assert lrs["classifier"] == pytest.approx(2 * per_epoch[epoch], rel=1e-12)
    assert len(recorder.lrs) == 18


def test_warmup_cosine_per_step_in_training(tmp_path):
    stage = {"epochs": 2, "lr": 0.1, "warmup_epochs": 1, "warmup_start_lr": 0.01,
             "scheduler": "cosine", "min_lr": 0.001, "schedule_by": "step"}
    cfg = toy_config(stages={"prompt": {"epochs": 0}, "finetune": stage})
    recorder = Recorder()
    Trainer(ToyMethod(), cfg, tmp_path, hooks=[recorder]).fit()
    # t = 0, 1/3, 2/3 (warm-up 0.01 -> 0.1), then cosine over 2 epochs at t = 1, 4/3, 5/3
    expected = [0.01, 0.04, 0.07, 0.0505, 0.02575, 0.001 + 0.099 * (1 - math.sqrt(3) / 2) / 2]
    got = [recorder.lrs[s]["backbone"] for s in sorted(recorder.lrs)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_lr_at_constant_and_cosine_end():
    constant = StageConfig(epochs=4, lr=0.5, scheduler="constant", warmup_epochs=2,
                           warmup_factor=0.5)
    assert [lr_at(constant, t) for t in (0, 1, 2, 3)] == [0.25, 0.375, 0.5, 0.5]
    cosine = StageConfig(epochs=10, lr=1.0, scheduler="cosine", min_lr=0.1)
    assert lr_at(cosine, 0) == 1.0
    assert lr_at(cosine, 5) == pytest.approx(0.55)
    assert lr_at(cosine, 10) == pytest.approx(0.1)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    ("workers", "checkpoint_every", "crash_at", "resumed_from"),
    [(0, 0, 10, 8), (2, 0, 5, 4), (0, 1, 11, 9)],
    ids=["stage2-mid-epoch-workers0", "stage1-mid-epoch-workers2", "epoch-end"],
)
def test_resume_continues_exactly(tmp_path, workers, checkpoint_every, crash_at, resumed_from):
    """Kill after ``crash_at`` steps (3 per epoch, 6 per stage), resume from ``last.pt``:
    the same batches, losses and final weights as an uninterrupted run."""
    stages = {"finetune": {"warmup_epochs": 1, "schedule_by": "step", "scheduler": "cosine"}}
    straight = Recorder()
    reference = ToyMethod(workers=workers)
    Trainer(reference, toy_config(stages=stages), tmp_path / "a", hooks=[straight]).fit()
    assert len(straight.losses) == 12

    first = Recorder(crash_at=crash_at)
    cfg = toy_config(stages=stages, checkpoint_every=checkpoint_every)
    with pytest.raises(KeyboardInterrupt):
        Trainer(ToyMethod(workers=workers), cfg, tmp_path / "b", checkpoint_every_steps=4,
                hooks=[first]).fit()
    checkpoint = tmp_path / "b" / "checkpoints" / LAST_CHECKPOINT
    assert load_checkpoint(checkpoint)["progress"]["global_step"] == resumed_from

    second = Recorder()
    fresh = ToyMethod(workers=workers)
    with torch.no_grad():  # a different start: everything must come from the checkpoint
        for param in fresh.parameters():
            param.normal_()
    Trainer(fresh, cfg, tmp_path / "b", resume=checkpoint, hooks=[second]).fit()
    assert sorted(second.losses) == list(range(resumed_from + 1, 13))
    for step, loss in second.losses.items():
        assert loss == straight.losses[step], step
    assert reference.seen[resumed_from:] == fresh.seen
    final_a, final_b = reference.state_dict(), fresh.state_dict()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def shuffled_loader_method() -> ToyMethod:
    """ToyMethod whose stages read a plain shuffling DataLoader (no resumable sampler)."""
    method = ToyMethod()
    original = method.stages

    def stages():
        out = []
        for stage in original():
            stage.loader = DataLoader(method.toy_data, batch_size=5, shuffle=True, drop_last=True)
            stage.sampler = None
            out.append(stage)
        return out

    method.stages = stages
    return method


def test_resume_mid_epoch_without_a_sampler_replays_the_shuffle(tmp_path):
    """A loader without sampler state: the epoch's shuffle is rebuilt from the RNG saved at
    the epoch start and the batches already trained on are read and dropped."""
    straight = Recorder()
    reference = shuffled_loader_method()
    Trainer(reference, toy_config(), tmp_path / "a", hooks=[straight]).fit()
    assert len(straight.losses) == 16  # 24 samples // 5 = 4 batches per epoch
    cfg = toy_config(checkpoint_every=0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(shuffled_loader_method(), cfg, tmp_path / "b", checkpoint_every_steps=3,
                hooks=[Recorder(crash_at=11)]).fit()
    second = Recorder()
    resumed = shuffled_loader_method()
    Trainer(resumed, cfg, tmp_path / "b", resume=tmp_path / "b" / "checkpoints" / LAST_CHECKPOINT,
            hooks=[second]).fit()
    # from step 9: stage finetune, epoch 0, one of its 4 batches done
    assert sorted(second.losses) == list(range(10, 17))
    assert all(second.losses[s] == straight.losses[s] for s in second.losses)
    assert resumed.seen == reference.seen[9:]


def test_resume_from_end_of_stage_checkpoint_starts_next_stage(tmp_path):
    straight = Recorder()
    Trainer(ToyMethod(), toy_config(), tmp_path / "a", hooks=[straight]).fit()
    first = Trainer(ToyMethod(), toy_config(), tmp_path / "b", hooks=[Recorder(crash_at=7)])
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    stage_end = tmp_path / "b" / "checkpoints" / "prompt.pt"
    assert load_checkpoint(stage_end)["progress"]["stage_done"]
    second = Recorder()
    cfg = toy_config(resume=str(stage_end))  # train.resume in the config this time
    Trainer(ToyMethod(), cfg, tmp_path / "b", hooks=[second]).fit()
    assert sorted(second.losses) == list(range(7, 13))
    assert all(second.losses[s] == straight.losses[s] for s in second.losses)


# --------------------------------------------------------------------------- failures, limits


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    method = ToyMethod()
    method.poison = lambda step: step == 5
    trainer = Trainer(method, toy_config(), tmp_path)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    assert "stage 'prompt'" in message and "epoch 1" in message and "global step 5" in message
    assert "loss=nan" in message and "ce=" in message
    last = tmp_path / "checkpoints" / LAST_CHECKPOINT
    assert str(last) in message
    assert load_checkpoint(last)["progress"]["global_step"] == 3  # end of epoch 0
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[-1]["kind"] == "error" and records[-1]["step"] == 5
    assert max(r["step"] for r in records if r["kind"] == "train") == 4


def test_max_steps_caps_every_stage(tmp_path):
    recorder = Recorder()
    trainer = Trainer(ToyMethod(), toy_config(max_steps=2), tmp_path, hooks=[recorder])
    trainer.fit()
    assert list(recorder.stages.values()) == ["prompt", "prompt", "finetune", "finetune"]
    progress = load_checkpoint(tmp_path / "checkpoints" / LAST_CHECKPOINT)["progress"]
    assert progress["global_step"] == 4 and progress["stage"] == "finetune"
    assert progress["stage_done"]


def test_step_outputs_are_checked(tmp_path):
    method = ToyMethod()
    method._step = lambda stage, batch: {"ce": torch.tensor(1.0)}
    with pytest.raises(TypeError, match="'prompt'.*'loss'"):
        Trainer(method, toy_config(), tmp_path).fit()


# --------------------------------------------------------------------------- logging, eval


def test_metrics_jsonl_records(tmp_path):
    cfg = toy_config(log={"every_steps": 2, "progress": False})
    Trainer(ToyMethod(), cfg, tmp_path).fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10, 12]
    for record in train:
        assert {"loss", "ce", "reg", "lr", "step_time", "data_time", "samples_per_s"} <= set(record)
        assert record["loss"] == pytest.approx(record["ce"] + record["reg"], rel=1e-5)
        assert record["step_time"] > 0 and record["samples_per_s"] > 0
    epochs = [(r["stage"], r["epoch"]) for r in records if r["kind"] == "epoch"]
    assert epochs == [("prompt", 0), ("prompt", 1), ("finetune", 0), ("finetune", 1)]
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize(("eval_every", "expected"), [(2, [2, 4]), (3, [3, 4]), (0, [4])])
def test_eval_every_calls_the_callback_at_the_right_epochs(tmp_path, eval_every, expected):
    method = ToyMethod()
    calls = []

    def evaluate(m):
        assert m is method and not m.training and not m.head.training
        assert not torch.is_grad_enabled()
        epochs_done = (trainer.global_step - 6) // 3  # after the 6 prompt steps
        calls.append(epochs_done)
        return {"rank1": float(epochs_done)}

    cfg = toy_config(stages={"finetune": {"epochs": 4}}, eval_every=eval_every)
    trainer = Trainer(method, cfg, tmp_path, evaluate=evaluate)
    result = trainer.fit()
    assert calls == expected  # never during the prompt stage, never twice at the end
    assert result == {"rank1": 4.0}
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["metrics"]["rank1"] for r in evals] == [float(c) for c in expected]


def test_evaluation_does_not_change_training(tmp_path):
    """Evaluation runs with its RNG use undone: training with or without it is identical."""
    plain, evaluated = Recorder(), Recorder()
    Trainer(ToyMethod(), toy_config(), tmp_path / "a", hooks=[plain]).fit()

    def evaluate(m):
        torch.rand(10)  # consumes RNG
        return {"x": 1.0}

    Trainer(ToyMethod(), toy_config(eval_every=1), tmp_path / "b", evaluate=evaluate,
            eval_stages=["prompt", "finetune"], hooks=[evaluated]).fit()
    assert plain.losses == evaluated.losses


def test_tensorboard_switch(tmp_path):
    cfg = toy_config(log={"tensorboard": True, "progress": False})
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            Trainer(ToyMethod(), cfg, tmp_path).fit()
    else:
        Trainer(ToyMethod(), cfg, tmp_path).fit()
        assert any((tmp_path / "tensorboard").iterdir())


# --------------------------------------------------------------------------- AMP, compile, devices


def test_amp_bf16_on_cpu(tmp_path):
    dtypes = []
    method = ToyMethod()
    method.observe = lambda stage, batch: dtypes.append(
        (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
    )
    recorder = Recorder()
    Trainer(method, toy_config(amp=True, amp_dtype="bf16"), tmp_path, hooks=[recorder]).fit()
    assert dtypes and all(d == (True, torch.bfloat16) for d in dtypes)
    assert all(math.isfinite(v) for v in recorder.losses.values())
    assert method.head.weight.dtype == torch.float32


def recording_backend(graphs: list):
    """A torch.compile backend that records the graphs dynamo hands it and runs them eagerly."""

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    return backend


def test_compile_switch_compiles_the_step(tmp_path):
    """cfg.train.compile puts stage.step through torch.compile. A recording backend proves
    dynamo traced it (inductor needs ~20 s to compile on 2 CPU cores: too slow here)."""
    eager, compiled, graphs = Recorder(), Recorder(), []
    Trainer(ToyMethod(dropout=0.0), toy_config(max_steps=2), tmp_path / "a", hooks=[eager]).fit()
    torch._dynamo.reset()
    Trainer(ToyMethod(dropout=0.0), toy_config(max_steps=2, compile=True), tmp_path / "b",
            compile_backend=recording_backend(graphs), hooks=[compiled]).fit()
    assert graphs, "dynamo produced no graph"
    assert list(compiled.losses) == list(eager.losses)
    for step in eager.losses:
        assert compiled.losses[step] == pytest.approx(eager.losses[step], rel=1e-5)


def test_compile_modules_are_compiled_in_place(tmp_path):
    method = ToyMethod(dropout=0.0)
    method.compile_modules = lambda: [method.backbone]
    graphs: list = []
    torch._dynamo.reset()
    Trainer(method, toy_config(max_steps=1, compile=True), tmp_path,
            compile_backend=recording_backend(graphs)).fit()
    assert graphs, "the backbone was not compiled"
    # only the backbone: its graph has no classifier weights
    assert all("head" not in str(g.graph) for g in graphs)
    keys = set(load_checkpoint(tmp_path / "checkpoints" / LAST_CHECKPOINT)["method"])
    assert keys == set(ToyMethod().state_dict())  # no _orig_mod prefixes


def test_move_to_device_walks_containers():
    batch = {"x": torch.ones(2), "meta": [torch.zeros(1), ("a", torch.ones(1))], "n": 3}
    moved = move_to_device(batch, torch.device("meta"))
    assert moved["x"].device.type == "meta"
    assert moved["meta"][0].device.type == "meta" and moved["meta"][1][1].device.type == "meta"
    assert moved["meta"][1][0] == "a" and moved["n"] == 3 and isinstance(moved["meta"][1], tuple)


def test_metrics_after_a_resume_hold_each_step_once(tmp_path, caplog):
    """The steps a killed run logged after its last checkpoint are logged again by the
    resumed run: metrics.jsonl keeps one record per step, equal to an uninterrupted run's.
    Checkpoint frequency is not a training setting: changing it draws no warning."""
    straight_dir, run = tmp_path / "a", tmp_path / "b"
    Trainer(ToyMethod(), toy_config(), straight_dir).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(ToyMethod(), toy_config(checkpoint_every=0, checkpoint_every_steps=4), run,
                hooks=[Recorder(crash_at=7)]).fit()
    caplog.clear()
    with caplog.at_level("WARNING"):
        Trainer(ToyMethod(), toy_config(checkpoint_every=0, checkpoint_every_steps=2), run,
                resume=run / "checkpoints" / LAST_CHECKPOINT).fit()
    assert "differs" not in caplog.text

    def train_losses(folder):
        rows = [r for r in read_metrics(folder / "metrics.jsonl") if r["kind"] == "train"]
        return [(r["step"], r["loss"]) for r in rows]

    resumed = train_losses(run)
    assert [s for s, _ in resumed] == list(range(1, 13))
    assert resumed == train_losses(straight_dir)  # bit-exact resume: identical losses
