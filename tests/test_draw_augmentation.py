"""Augmentation keyed by the draw: an image drawn twice in an epoch is augmented twice."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vireid.data.loaders import ImageDataset, collate_samples, seed_worker
from vireid.data.samplers import CrossModalIdentitySampler, Draw
from vireid.data.transforms import build_transforms
from vireid.data.types import Modality, Sample

SIZE = (32, 16)


@pytest.fixture()
def samples(tmp_path):
    """2 identities x 1 visible + 1 infrared image: K = 3 must repeat every image."""
    rng = np.random.default_rng(0)
    out = []
    for pid in range(2):
        for modality in (Modality.VISIBLE, Modality.INFRARED):
            path = tmp_path / f"{pid}_{int(modality)}.png"
            Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(path)
            out.append(Sample(str(path), pid, 1, modality, label=pid))
    return out


def _loader(samples, sampler, workers=0):
    transform = build_transforms(True, SIZE, recipe="clipreid")
    dataset = ImageDataset(samples, transform, seed=5)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_samples,
                      num_workers=workers, worker_init_fn=seed_worker)


def _sampler(samples):
    return CrossModalIdentitySampler.from_samples(samples, 2, 3, seed=1, num_batches=4)


def test_draw_is_an_int_that_pickles():
    d = Draw(7, draw=12)
    assert d == 7 and [d] == [7] and d.draw == 12
    back = pickle.loads(pickle.dumps(d))
    assert back == 7 and back.draw == 12


def test_sampler_marks_draws_with_their_global_position(samples):
    sampler = _sampler(samples)
    batches = list(sampler)
    assert batches == sampler.rank_batches(0)  # still the same indices
    width = sampler.batch_size
    assert [[i.draw for i in b] for b in batches] == [
        list(range(g * width, (g + 1) * width)) for g in range(len(batches))]
    # DDP: rank 1 of 2 holds global batches 1, 3: its draws are those positions
    rank1 = CrossModalIdentitySampler.from_samples(samples, 2, 3, seed=1, num_batches=4,
                                                   rank=1, world_size=2)
    assert [b[0].draw for b in rank1] == [width, 3 * width]


def test_repeated_draws_get_independent_augmentation(samples):
    batch = next(iter(_loader(samples, _sampler(samples))))
    images, index = batch["image"], batch["index"]
    # index 0 (identity 0, visible) fills the first K = 3 slots
    assert index[:3].tolist() == [0, 0, 0]
    assert not torch.equal(images[0], images[1]) or not torch.equal(images[1], images[2])
    # a plain index keys by (seed, epoch, index): the same augmentation every time
    dataset = ImageDataset(samples, build_transforms(True, SIZE, recipe="clipreid"), seed=5)
    assert torch.equal(dataset[0]["image"], dataset[0]["image"])


def test_draw_streams_are_deterministic_across_workers_and_resume(samples):
    reference = [b["image"] for b in _loader(samples, _sampler(samples))]
    with_workers = [b["image"] for b in _loader(samples, _sampler(samples), workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(reference, with_workers))
    # stop after 2 batches, resume from the sampler state: the same images follow
    interrupted = _sampler(samples)
    state = interrupted.state_dict(batches_consumed=2)
    resumed = _sampler(samples)
    resumed.load_state_dict(state)
    rest = [b["image"] for b in _loader(samples, resumed)]
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(reference[2:], rest))
