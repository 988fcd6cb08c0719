"""Checkpoints: content, weights_only loading, atomic writes, RNG state, bad files."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from _engine_toy import ToyMethod, toy_config

import vireid
from vireid.config import config_from_dict
from vireid.engine import (
    LAST_CHECKPOINT,
    CheckpointError,
    Trainer,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    load_method_weights,
    restore_rng_state,
)
from vireid.engine import checkpoint as checkpoint_module
from vireid.engine.optim import build_optimizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-stage run; returns (run_dir, method, trainer)."""
    run_dir = tmp_path_factory.mktemp("run")
    method = ToyMethod()
    trainer = Trainer(method, toy_config(), run_dir, keep_epoch_checkpoints=True)
    trainer.fit()
    return run_dir, method, trainer


def test_checkpoint_files_and_content(trained):
    run_dir, method, trainer = trained
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "finetune-epoch001.pt", "finetune.pt", "last.pt", "prompt-epoch001.pt", "prompt.pt"
    ]
    raw = torch.load(folder / LAST_CHECKPOINT, weights_only=True)  # no code runs on load
    assert raw["format"] == "vireid-checkpoint" and raw["vireid_version"] == vireid.__version__
    assert raw["config"] == trainer.cfg.to_dict()
    assert config_from_dict(raw["config"]) == trainer.cfg
    assert raw["progress"] == {
        "stage": "finetune", "stage_index": 1, "epoch": 2, "step_in_epoch": 0,
        "stage_step": 6, "global_step": 12, "stage_done": True,
    }
    assert raw["world_size"] == 1 and len(raw["ranks"]) == 1
    assert raw["ranks"][0]["sampler"]["epoch"] == 1
    assert {"python", "numpy", "torch", "cuda"} <= set(raw["ranks"][0]["rng"])
    for key, value in method.state_dict().items():
        assert torch.equal(raw["method"][key], value), key
    assert raw["scaler"] is None
    assert [g["name"] for g in raw["optimizer"]["param_groups"]] == ["backbone", "classifier"]
    mid = torch.load(folder / "prompt-epoch001.pt", weights_only=True)
    assert mid["progress"]["stage"] == "prompt" and mid["progress"]["global_step"] == 3


def test_round_trip_restores_weights_and_optimizer(trained):
    run_dir, method, trainer = trained
    fresh = ToyMethod()
    with torch.no_grad():
        for param in fresh.parameters():
            param.add_(1.0)
    checkpoint = load_method_weights(fresh, run_dir / "checkpoints" / LAST_CHECKPOINT)
    for key, value in method.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    stage = fresh.stages()[1]
    optimizer = build_optimizer(fresh, stage.param_groups(), trainer.cfg.train.stages["finetune"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    original = trainer.optimizer.state_dict()["state"]
    restored = optimizer.state_dict()["state"]
    assert original.keys() == restored.keys()
    for index in original:
        for name, value in original[index].items():
            assert torch.equal(restored[index][name], value)


def test_weights_that_do_not_fit_name_the_file(trained, tmp_path):
    run_dir, _, _ = trained
    other = ToyMethod(hidden=5)
    with pytest.raises(CheckpointError, match=r"last\.pt \(method .toy.\) does not fit this ToyMethod"):
        load_method_weights(other, run_dir / "checkpoints" / LAST_CHECKPOINT)


def test_rng_state_round_trip_survives_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the legacy state
    state = capture_rng_state()
    atomic_save({"rng": state}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    assert again == expected


# --------------------------------------------------------------------------- atomic writes


def test_crash_during_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"value": torch.tensor([1.0, 2.0])}, path)
    before = path.read_bytes()

    def torn_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"value": torch.tensor([3.0])}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind

    def failing_replace(src, dst):
        raise OSError("killed before rename")

    monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="killed before rename"):
        atomic_save({"value": torch.tensor([4.0])}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.tensor([1.0, 2.0]))
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_trainer_crash_while_checkpointing_keeps_the_last_good_one(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def save_then_fail(obj, handle, *args, **kwargs):
        calls.append(obj["progress"]["global_step"])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed while writing")
        real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_fail)
    with pytest.raises(KeyboardInterrupt):
        Trainer(ToyMethod(), toy_config(), tmp_path).fit()
    monkeypatch.undo()
    assert calls == [3, 6, 9]
    last = load_checkpoint(tmp_path / "checkpoints" / LAST_CHECKPOINT)
    assert last["progress"]["global_step"] == 6 and last["progress"]["stage"] == "prompt"


# --------------------------------------------------------------------------- bad files


def _touch(path):  # called only if unpickling were allowed to run code
    open(path, "w").close()
    return path


class _Sneaky:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def test_loading_never_executes_code(tmp_path):
    marker = tmp_path / "code-ran"
    bad = tmp_path / "bad.pt"
    torch.save({"format": "vireid-checkpoint", "format_version": 1,
                "payload": _Sneaky(str(marker))}, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*weights_only"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_bad_checkpoint_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt is not a vireid training checkpoint"):
        load_checkpoint(foreign)
    future = tmp_path / "future.pt"
    torch.save({"format": "vireid-checkpoint", "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)


def test_resume_with_other_stages_is_refused(trained, tmp_path):
    run_dir, _, _ = trained
    mid = run_dir / "checkpoints" / "prompt-epoch001.pt"
    method = ToyMethod()
    original = method.stages
    method.stages = lambda: list(reversed(original()))
    cfg = toy_config()
    with pytest.raises(CheckpointError, match="written in stage 'prompt'"):
        Trainer(method, cfg, tmp_path, resume=mid).fit()
