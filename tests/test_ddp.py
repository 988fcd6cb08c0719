"""Two gloo processes on CPU: data sharding, identical weights, parity with one process."""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from _engine_toy import ToyMethod, toy_config
from torch import nn
from torch.utils.data import default_collate

from vireid.engine import (
    GradientAverager,
    NonFiniteLossError,
    Trainer,
    TrainerHook,
    cleanup_distributed,
    init_distributed,
    read_metrics,
)
from vireid.methods.base import Stage

WORLD_SIZE = 2
# 16 identities x 4 samples, batches of 2 identities x 4: 8 global batches per epoch, 4 per rank.
# identity_order="epoch" with K = samples per identity makes the batches of an epoch disjoint.
TOY = dict(num_ids=16, per_id=4, identities_per_batch=2, instances_per_identity=4,
           num_batches=None, dropout=0.0, batchnorm=False, identity_order="epoch")
STAGES = {"prompt": {"epochs": 1}, "finetune": {"epochs": 2}}


class LossRecorder(TrainerHook):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_step(self, trainer, outputs) -> None:
        self.losses.append(float(outputs["loss"].detach()))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_averager(rank: int) -> dict:
    """A parameter used on rank 0 only is averaged with zeros; one used nowhere keeps None."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"both": nn.Linear(3, 2), "rank0": nn.Linear(3, 2),
                           "none": nn.Linear(3, 2)})
    x = torch.full((1, 3), float(rank + 1))
    loss = model["both"](x).sum() + (model["rank0"](x).sum() if rank == 0 else 0.0)
    loss.backward()
    GradientAverager(model.parameters(), bucket_mb=1e-5).average()  # tiny buckets: many
    return {name: None if p.grad is None else p.grad.clone()
            for name, p in model.named_parameters()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        info = init_distributed(timeout_minutes=2)
        assert (info.rank, info.world_size) == (rank, WORLD_SIZE)
        method = ToyMethod(rank=rank, world_size=WORLD_SIZE, **TOY)
        if rank == 1:  # a different start: rank 0's weights must win
            with torch.no_grad():
                for param in method.parameters():
                    param.add_(1.0)
        recorder = LossRecorder()
        eval_calls: list[int] = []

        def evaluate(m):
            eval_calls.append(rank)
            return {"evaluated_on": float(rank)}

        returned = Trainer(method, toy_config(stages=STAGES), out / "run", evaluate=evaluate,
                           hooks=[recorder]).fit()
        result = {"seen": method.seen, "state": method.state_dict(), "losses": recorder.losses,
                  "averager": _check_averager(rank), "eval_calls": eval_calls,
                  "returned": returned}

        poisoned = ToyMethod(rank=rank, world_size=WORLD_SIZE, **TOY)
        if rank == 1:
            poisoned.poison = lambda step: step == 2
        try:
            Trainer(poisoned, toy_config(stages=STAGES), out / "poisoned").fit()
            result["non_finite"] = "not raised"
        except NonFiniteLossError as exc:
            result["non_finite"] = str(exc)
        torch.save(result, out / f"rank{rank}.pt")
    except Exception:
        (out / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        cleanup_distributed()


class PairedLoader:
    """One process, the global batch of each step: rank 0's batch followed by rank 1's."""

    def __init__(self, method: ToyMethod) -> None:
        self.data = method.toy_data
        self.samplers = [
            ToyMethod(rank=r, world_size=WORLD_SIZE, **TOY).make_sampler()
            for r in range(WORLD_SIZE)
        ]

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samplers[0])

    def __iter__(self):
        for batches in zip(*self.samplers):
            yield default_collate([self.data[i] for batch in batches for i in batch])


def _single_process_reference(tmp_path: Path) -> tuple[ToyMethod, list[float]]:
    method = ToyMethod(**TOY)
    original = method.stages

    def paired_stages():
        stages = []
        for stage in original():
            loader = PairedLoader(method)
            stages.append(Stage(name=stage.name, param_groups=stage.param_groups, loader=loader,
                                step=stage.step, on_epoch_start=loader.set_epoch,
                                train_modules=stage.train_modules))
        return stages

    method.stages = paired_stages
    recorder = LossRecorder()
    Trainer(method, toy_config(stages=STAGES), tmp_path / "single", hooks=[recorder]).fit()
    return method, recorder.losses


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    try:
        mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    except Exception as exc:
        errors = "\n".join(p.read_text() for p in sorted(out.glob("*.error")))
        raise AssertionError(f"DDP workers failed: {exc}\n{errors}") from exc
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


def test_ranks_see_disjoint_batches_that_together_make_the_global_order(ddp_results):
    _, ranks = ddp_results
    seen = [r["seen"] for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 12  # 4 prompt steps + 2 x 4 finetune steps
    single = ToyMethod(**TOY).make_sampler()
    epochs = [0] * 4 + [0] * 4 + [1] * 4  # each stage's sampler starts at epoch 0
    for step, epoch in enumerate(epochs):
        a, b = seen[0][step], seen[1][step]
        assert not set(a) & set(b), step
        in_epoch = step % 4
        expected = single.global_batches(epoch)[2 * in_epoch : 2 * in_epoch + 2]
        assert [a, b] == expected, step


def test_ranks_end_with_identical_weights(ddp_results):
    _, ranks = ddp_results
    first, second = ranks[0]["state"], ranks[1]["state"]
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_gradient_averaging_matches_one_process_on_the_global_batches(ddp_results, tmp_path):
    _, ranks = ddp_results
    method, losses = _single_process_reference(tmp_path)
    mean_losses = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])]
    assert losses == pytest.approx(mean_losses, rel=1e-5)
    for key, value in method.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6)


def test_only_rank_zero_writes(ddp_results):
    out, _ = ddp_results
    records = read_metrics(out / "run" / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, 13))  # once each, not once per rank
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == [
        "finetune.pt", "last.pt", "prompt.pt"
    ]
    checkpoint = torch.load(out / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["ranks"]) == 2


def test_only_rank_zero_evaluates_and_every_rank_gets_the_result(ddp_results):
    _, ranks = ddp_results
    assert ranks[0]["eval_calls"] == [0] and ranks[1]["eval_calls"] == []
    assert ranks[0]["returned"] == ranks[1]["returned"] == {"evaluated_on": 0.0}


def test_gradient_averager_handles_parameters_unused_on_some_ranks(ddp_results):
    _, ranks = ddp_results
    grads = [r["averager"] for r in ranks]
    # d/dW of W x summed over 2 outputs is x on each row: x = 1 on rank 0, 2 on rank 1
    assert torch.equal(grads[0]["both.weight"], torch.full((2, 3), 1.5))
    assert torch.equal(grads[0]["rank0.weight"], torch.full((2, 3), 0.5))
    assert grads[0]["none.weight"] is None and grads[1]["none.weight"] is None
    for key in grads[0]:
        if grads[0][key] is not None:
            assert torch.equal(grads[0][key], grads[1][key])


def test_non_finite_loss_on_one_rank_stops_every_rank(ddp_results):
    _, ranks = ddp_results
    for rank in ranks:
        assert "global step 2" in rank["non_finite"]
    assert "loss=nan" in ranks[1]["non_finite"]
    assert "another rank" in ranks[0]["non_finite"]
