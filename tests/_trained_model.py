"""A tiny CLIP-ReID trained for a few steps on synthetic data, shared by the retrieval tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from vireid.config import load_config
from vireid.data.synthetic import synthesize
from vireid.runner import train

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "tiny_synthetic.yaml"


def tiny_overrides(root: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [f"data.root={root}", f"output_dir={out}", f"name={name}", "train.max_steps=3",
            "data.workers=0", "data.image_size=[64,32]", "data.identities_per_batch=2",
            "data.instances_per_identity=2", "train.log.jsonl=false", "eval.splits=[all-search]",
            *extra]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(dataset root, run folder, checkpoint) of a tiny image model."""
    base = tmp_path_factory.mktemp("trained")
    root = base / "SYSU-MM01"
    synthesize("sysu", root, num_ids=10, seed=0, image_size=(64, 32), images_per_camera=2)
    cfg = load_config(EXAMPLE, tiny_overrides(root, base, "run", "model.backbone=tiny-vit"))
    train(cfg)
    run = base / "run"
    return root, run, run / "checkpoints" / "last.pt"


def untrained_checkpoint(cfg, path: Path) -> Path:
    """A checkpoint of a freshly built method (weights as initialised), in the engine's format."""
    from vireid.engine.checkpoint import CHECKPOINT_FORMAT, FORMAT_VERSION, atomic_save
    from vireid.runner import build

    _, method = build(cfg)
    atomic_save({"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION,
                 "config": cfg.to_dict(), "method_name": cfg.method.name,
                 "method": method.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def video_checkpoint(tmp_path_factory):
    """(dataset root, checkpoint) of an untrained tiny video model on synthetic HITSZ-VCM."""
    base = tmp_path_factory.mktemp("video")
    root = base / "HITSZ-VCM"
    synthesize("vcm", root, num_ids=6, seed=0, image_size=(64, 32), frames_per_tracklet=15)
    cfg = load_config(EXAMPLE, tiny_overrides(
        root, base, "video", "model.backbone=tiny-rn50", "data.name=vcm",
        "data.video.num_frames=3", "data.video.test_sampling=first_of_chunk",
        "data.video.train_sampling=rrs", "eval.splits=null"))
    return root, untrained_checkpoint(cfg, base / "video.pt")
