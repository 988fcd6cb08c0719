"""The synthetic CLIP weights shipped in the package (vireid/assets/clip)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from vireid.clip_pretrain import SHIPPED, shipped_weights
from vireid.clip_pretrain.backbones import CONFIGS, assets_dir
from vireid.models.factory import build_clip
from vireid.models.weights import WeightsError, sha256_file

MAX_SHIPPED_BYTES = 30 * 1024 * 1024


def test_shipped_files_match_their_checksums_and_fit_the_budget():
    assert set(SHIPPED) == set(CONFIGS)
    total = 0
    for backbone, (name, digest) in SHIPPED.items():
        path = shipped_weights(backbone)
        assert path.parent == assets_dir() and path.name == name
        assert sha256_file(path) == digest, backbone
        assert (path.parent / f"{name}.sha256").read_text().split()[0] == digest
        total += path.stat().st_size
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        assert meta["backbone"] == backbone and json.loads(meta["architecture"]) == CONFIGS[backbone]
    assert total <= MAX_SHIPPED_BYTES


@pytest.mark.parametrize("backbone", sorted(CONFIGS))
def test_pretrained_synthetic_builds_offline(backbone):
    model = build_clip(backbone, (128, 64), pretrained="synthetic")
    assert model.weights_report.missing == [] and model.weights_report.unexpected == []
    assert model.visual.image_size == (128, 64)


def test_unknown_synthetic_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="no 'synthetic' weights are shipped for backbone 'RN50'"):
        build_clip("RN50", pretrained="synthetic")


def test_shipped_vit_knows_attributes_of_unseen_people():
    from vireid.clip_pretrain.zeroshot import zeroshot

    model = build_clip("synth-vit-p8", (64, 32), pretrained="synthetic")
    result = zeroshot(model, num_ids=40, images_per_id=2, seed=3)
    visible = result["visible"]
    assert visible["caption_to_identity"]["rank5"] > 3 * visible["caption_to_identity"][
        "chance_rank5"]
    assert visible["attributes"]["shape"]["mAP"] > visible["attributes"]["shape"]["chance"] + 0.05


def test_damaged_shipped_file_is_refused(tmp_path):
    backbone = sorted(SHIPPED)[0]
    source = shipped_weights(backbone)
    copy = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    (tmp_path / f"{source.name}.sha256").write_text(f"{SHIPPED[backbone][1]}  {source.name}\n")
    with pytest.raises(WeightsError, match="does not match its checksum"):
        build_clip(backbone, (64, 32), weights=copy)
