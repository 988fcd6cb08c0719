"""Helpers shared by the method tests: a tiny synthetic HITSZ-VCM and a stage set up
the way the engine sets it up."""

from __future__ import annotations

from pathlib import Path

from vireid.data.synthetic import synthesize


def synthetic_vcm(base: Path, num_ids: int = 10) -> Path:
    root = base / "HITSZ-VCM"
    synthesize("vcm", root, num_ids=num_ids, seed=0, image_size=(64, 32), frames_per_tracklet=15)
    return root


def prepare_first_stage(method):
    """The method's first stage after what the engine does at a stage start: only the
    stage's parameters require gradient, the epoch has started, train mode.
    Returns ``(stage, {group name: params}, ids of the trained parameters)``."""
    frozen = {id(p) for p in method.parameters() if not p.requires_grad}  # as the engine keeps
    stage = method.stages()[0]
    groups = {g.name: [p for p in g.params if id(p) not in frozen] for g in stage.param_groups()}
    trained = {id(p) for params in groups.values() for p in params}
    for p in method.parameters():
        p.requires_grad_(id(p) in trained)
    if stage.on_epoch_start is not None:
        stage.on_epoch_start(0)
    method.train()
    return stage, groups, trained


def assert_gradients_reach_exactly(method, trained: set[int]) -> None:
    """After ``backward``: every trained parameter has a non-zero gradient, no other one
    has a gradient at all."""
    for name, p in method.named_parameters():
        if id(p) in trained:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def tiny_video_config(example: Path, vcm: Path, *extra: str):
    """A tiny video example config on the synthetic HITSZ-VCM of :func:`synthetic_vcm`."""
    from vireid.config import load_config

    return load_config(example, [f"data.root={vcm}", "data.identities_per_batch=2",
                                 "data.video.num_frames=3", "eval.batch_size=8", *extra])
