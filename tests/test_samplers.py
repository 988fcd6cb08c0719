"""Identity batch samplers: composition, alignment, determinism, DDP shares, resume."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vireid.data.samplers import CrossModalIdentitySampler, IdentitySampler
from vireid.data.types import Modality, Sample

P, K = 3, 4


def _toy_data():
    """12 identities with both modalities (some with fewer than K infrared samples),
    plus identity 12 with visible samples only."""
    rng = np.random.default_rng(0)
    labels, modalities = [], []
    for pid in range(12):
        n_vis = int(rng.integers(2, 9))
        n_ir = 2 if pid % 4 == 0 else int(rng.integers(4, 7))
        labels += [pid] * n_vis + [pid] * n_ir
        modalities += [Modality.VISIBLE] * n_vis + [Modality.INFRARED] * n_ir
    labels += [12] * 5
    modalities += [Modality.VISIBLE] * 5
    order = rng.permutation(len(labels))  # shuffle so positions are not grouped
    return [labels[i] for i in order], [modalities[i] for i in order]


def _sampler(**kwargs):
    labels, modalities = _toy_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CrossModalIdentitySampler(labels, modalities, P, K, **kwargs), labels, modalities


def test_batch_composition_and_alignment():
    sampler, labels, modalities = _sampler(seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    half = P * K
    for batch in batches:
        assert len(batch) == 2 * half == sampler.batch_size
        vis, ir = batch[:half], batch[half:]
        assert all(modalities[i] == Modality.VISIBLE for i in vis)
        assert all(modalities[i] == Modality.INFRARED for i in ir)
        # same identity at the same position in both halves
        assert [labels[i] for i in vis] == [labels[i] for i in ir]
        # P distinct identities, each a block of K
        block_ids = [labels[vis[p * K]] for p in range(P)]
        assert len(set(block_ids)) == P
        assert 12 not in block_ids  # visible-only identity is never sampled
        for p in range(P):
            assert {labels[i] for i in vis[p * K:(p + 1) * K]} == {block_ids[p]}
    pairs = next(iter(_sampler(seed=3)[0].iter_pairs()))
    assert pairs == list(zip(batches[0][:half], batches[0][half:]))


def test_instances_without_replacement_when_enough_and_with_when_not():
    sampler, labels, modalities = _sampler(seed=1)
    counts = {}
    for i, (lab, mod) in enumerate(zip(labels, modalities)):
        counts.setdefault((lab, mod), []).append(i)
    repeated_small = False
    for batch in sampler:
        for start in range(0, len(batch), K):
            block = batch[start:start + K]
            key = (labels[block[0]], modalities[block[0]])
            if len(counts[key]) >= K:
                assert len(set(block)) == K
            else:
                assert set(block) <= set(counts[key])
                repeated_small = True
    assert repeated_small  # identities with 2 infrared samples were drawn with replacement


def test_skipped_identities_warning_and_error_mode():
    labels, modalities = _toy_data()
    with pytest.warns(UserWarning, match="only one modality"):
        sampler = CrossModalIdentitySampler(labels, modalities, P, K)
    assert sampler.skipped_identities == (12,)
    with pytest.raises(ValueError, match="only one modality"):
        CrossModalIdentitySampler(labels, modalities, P, K, on_missing_modality="error")


def test_impossible_composition_names_the_parameter():
    labels, modalities = _toy_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="num_identities=13 exceeds the 12 identities"):
            CrossModalIdentitySampler(labels, modalities, 13, K)
        with pytest.raises(ValueError, match="num_instances"):
            CrossModalIdentitySampler(labels, modalities, P, 0)
    with pytest.raises(ValueError, match="label -1 at index 1"):
        CrossModalIdentitySampler([0, -1], [0, 1], 1, 1)
    with pytest.raises(ValueError, match="differ in length"):
        CrossModalIdentitySampler([0, 1], [0], 1, 1)


def test_determinism_and_epochs():
    a, _, _ = _sampler(seed=7)
    b, _, _ = _sampler(seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    c, _, _ = _sampler(seed=8)
    assert list(c) != first


def test_default_epoch_length_follows_reference_count():
    sampler, labels, modalities = _sampler(seed=0)
    eligible = [i for i, lab in enumerate(labels) if lab != 12]
    n_vis = sum(modalities[i] == Modality.VISIBLE for i in eligible)
    n_ir = sum(modalities[i] == Modality.INFRARED for i in eligible)
    assert len(sampler) == max(n_vis, n_ir) // (P * K) + 1


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shares_are_disjoint_and_reassemble_the_global_order(world_size):
    single, _, _ = _sampler(seed=5, num_batches=10)
    single.set_epoch(4)
    global_order = list(single)
    shares = []
    for rank in range(world_size):
        s, _, _ = _sampler(seed=5, num_batches=10, rank=rank, world_size=world_size)
        s.set_epoch(4)
        shares.append(list(s))
    steps = 10 // world_size
    assert all(len(share) == steps for share in shares)
    # rank r holds global batches r, r+W, ...: disjoint positions, union = global order
    interleaved = [shares[r][step] for step in range(steps) for r in range(world_size)]
    assert interleaved == global_order[: steps * world_size]


def test_ddp_without_drop_last_wraps_to_equal_lengths():
    single, _, _ = _sampler(seed=5, num_batches=10)
    global_order = list(single)
    shares = []
    for rank in range(3):
        s, _, _ = _sampler(seed=5, num_batches=10, rank=rank, world_size=3, drop_last=False)
        shares.append(list(s))
    assert [len(x) for x in shares] == [4, 4, 4]
    interleaved = [shares[r][step] for step in range(4) for r in range(3)]
    assert interleaved == global_order + global_order[:2]


def test_resume_mid_epoch_continues_identically():
    reference, _, _ = _sampler(seed=11, identity_order="epoch")
    reference.set_epoch(2)
    epoch2 = list(reference)
    reference.set_epoch(3)
    epoch3 = list(reference)

    interrupted, _, _ = _sampler(seed=11, identity_order="epoch")
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    consumed = [next(iterator) for _ in range(5)]
    assert consumed == epoch2[:5]
    state = interrupted.state_dict()
    assert state["epoch"] == 2 and state["position"] == 5

    resumed, _, _ = _sampler(seed=11, identity_order="epoch")
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the usual epoch-loop call keeps the resume position
    assert list(resumed) == epoch2[5:]
    resumed.set_epoch(3)
    assert list(resumed) == epoch3


def test_resume_with_explicit_consumed_count_and_mismatch_errors():
    s, _, _ = _sampler(seed=2)
    state = s.state_dict(batches_consumed=3)
    fresh, _, _ = _sampler(seed=2)
    fresh.load_state_dict(state)
    assert list(fresh) == list(_sampler(seed=2)[0])[3:]
    other, _, _ = _sampler(seed=9)
    with pytest.raises(ValueError, match="seed=2"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="lacks key 'position'"):
        other.load_state_dict({"epoch": 0})


def test_identity_order_epoch_covers_all_identities_first():
    sampler, labels, _ = _sampler(seed=4, identity_order="epoch")
    batches = list(sampler)
    first_pass = -(-12 // P)  # ceil(12 / P)
    seen = {labels[b[p * K]] for b in batches[:first_pass] for p in range(P)}
    assert seen == set(range(12))


def test_from_samples_and_dataloader_batch_sampler():
    samples = [
        Sample(f"{m}/{pid}/{i}.jpg", pid, 1, m, label=pid)
        for pid in range(4) for m in (Modality.VISIBLE, Modality.INFRARED) for i in range(3)
    ]
    sampler = CrossModalIdentitySampler.from_samples(samples, 2, 2, seed=0)
    loader = DataLoader(TensorDataset(torch.arange(len(samples))), batch_sampler=sampler)
    for (indices,), batch in zip(loader, sampler.rank_batches(0)):
        assert indices.tolist() == batch


def test_identity_sampler_blocks_and_determinism():
    labels = [i % 7 for i in range(70)]
    a = IdentitySampler(labels, 4, 3, seed=1)
    b = IdentitySampler(labels, 4, 3, seed=1)
    batches = list(a)
    assert batches == list(b)
    assert len(batches) == 70 // 12
    for batch in batches:
        assert len(batch) == 12
        ids = [labels[batch[p * 3]] for p in range(4)]
        assert len(set(ids)) == 4
        for p in range(4):
            block = batch[p * 3:(p + 1) * 3]
            assert {labels[i] for i in block} == {ids[p]} and len(set(block)) == 3
    with pytest.raises(ValueError, match="num_identities=8 exceeds the 7"):
        IdentitySampler(labels, 8, 2)


def test_shuffled_batch_sampler_covers_all_items_and_resumes():
    from vireid.data.samplers import ShuffledBatchSampler

    sampler = ShuffledBatchSampler(10, 4, seed=3)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in b) == list(range(10))
    sampler.set_epoch(2)
    assert list(sampler) != batches
    # resume after one batch of epoch 1
    state = {**sampler.state_dict(), "epoch": 1, "position": 1}
    resumed = ShuffledBatchSampler(10, 4, seed=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert list(resumed) == batches[1:]
    # two ranks: disjoint shares of the same global order
    shares = [list(ShuffledBatchSampler(10, 4, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert shares[0][0] != shares[1][0]
