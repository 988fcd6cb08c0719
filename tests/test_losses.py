"""Losses on hand-computed cases."""

import math

import pytest
import torch

from vireid.losses import batch_hard_triplet_loss, pairwise_distances, supcon_loss


def test_pairwise_distances():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = pairwise_distances(x)
    assert d[0, 1].item() == pytest.approx(5.0) and d[0, 0].item() == pytest.approx(0.0, abs=1e-5)


def test_batch_hard_triplet_by_hand():
    # 1-D points: ids A at 0 and 1, id B at 3 and 5.
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap=1, d_an=3 -> relu(1-3+0.3)=0; anchor 1: d_ap=1, d_an=2 -> 0
    # anchor 2: d_ap=2, d_an=2 -> 0.3; anchor 3: d_ap=2, d_an=4 -> 0
    assert batch_hard_triplet_loss(x, labels, 0.3).item() == pytest.approx(0.3 / 4, abs=1e-5)
    soft = batch_hard_triplet_loss(x, labels, None).item()
    expected = sum(math.log1p(math.exp(a - n)) for a, n in ((1, 3), (1, 2), (2, 2), (2, 4))) / 4
    assert soft == pytest.approx(expected, abs=1e-5)


def test_batch_hard_triplet_needs_two_identities():
    with pytest.raises(ValueError, match="two identities"):
        batch_hard_triplet_loss(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))


def test_supcon_by_hand():
    a = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    # logits [1, 0, 2]; positives: items 0 and 2 (label 7)
    loss = supcon_loss(a, c, torch.tensor([7]), torch.tensor([7, 3, 7]))
    lse = math.log(math.e + 1 + math.e**2)
    assert loss.item() == pytest.approx(-((1 - lse) + (2 - lse)) / 2, abs=1e-6)
