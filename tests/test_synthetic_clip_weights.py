"""The synthetic CLIP weights shipped in the package (vireid/assets/clip)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from vireid.clip_pretrain import SHIPPED, shipped_weights
from vireid.models.factory import build_clip
from vireid.models.synthetic import CONFIGS, assets_dir
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


@pytest.mark.parametrize("backbone", sorted(CONFIGS))
def test_shipped_clips_know_unseen_people_in_visible_light(backbone):
    """Zero-shot on 40 held-out identities (figures of the full check: docs/synthetic_clip.md)."""
    from vireid.clip_pretrain.zeroshot import zeroshot

    model = build_clip(backbone, (64, 32), pretrained="synthetic")
    result = zeroshot(model, num_ids=40, images_per_id=2, seed=3)
    visible, infrared = result["visible"], result["infrared"]
    ranked = visible["caption_to_identity"]
    assert ranked["rank5"] > 3 * ranked["chance_rank5"]
    colour = visible["attributes"]["colour"]
    assert colour["mAP"] > colour["chance"] + 0.1
    # the modality gap: the same captions find far fewer people in infrared
    assert infrared["caption_to_identity"]["rank1"] < ranked["rank1"]
    if backbone == "synth-rn":  # shape words reach its image features, in both modalities
        for modality in (visible, infrared):
            shape = modality["attributes"]["shape"]
            assert shape["mAP"] > shape["chance"] + 0.05


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
