"""CSDN's losses on hand-computed cases: WRT triplet and MSEL."""

import math

import pytest
import torch

from vireid.losses import modality_shared_enhancement_loss, weighted_regularized_triplet_loss


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_wrt_on_a_rectangle_matches_the_hand_computation():
    # Identity 0 at (0,0) and (1,0); identity 1 at (0,2) and (1,2). Every anchor sees the
    # same distances: positives {0 (itself), 1}, negatives {2, sqrt(5)}.
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    e = math.e
    furthest = (0 * 1 + 1 * e) / (1 + e)  # softmax([0, 1]) . [0, 1]
    r5 = math.sqrt(5)
    closest = (2 * math.exp(-2) + r5 * math.exp(-r5)) / (math.exp(-2) + math.exp(-r5))
    expected = _softplus(furthest - closest)
    got = weighted_regularized_triplet_loss(features, labels)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_wrt_weights_far_positives_and_near_negatives_more():
    # Anchor 0 in 1-D: positives at distances 0 (itself), 1, 3; negatives at 4 and 10.
    features = torch.tensor([[0.0], [1.0], [3.0], [4.0], [10.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    dist = torch.tensor([0.0, 1.0, 3.0])
    w = torch.softmax(dist, 0)
    furthest = float((w * dist).sum())
    neg = torch.tensor([4.0, 10.0])
    closest = float((torch.softmax(-neg, 0) * neg).sum())
    assert furthest > dist.mean()  # weighted towards the far positive
    assert closest < neg.mean()  # weighted towards the near negative
    rows = []
    for anchor in range(5):
        d = (features - features[anchor]).abs().flatten()
        same = labels == labels[anchor]
        fp = float((torch.softmax(d[same], 0) * d[same]).sum())
        cn = float((torch.softmax(-d[~same], 0) * d[~same]).sum())
        rows.append(_softplus(fp - cn))
    assert rows[0] == pytest.approx(_softplus(furthest - closest), abs=1e-6)
    got = weighted_regularized_triplet_loss(features, labels)
    assert got.item() == pytest.approx(sum(rows) / 5, abs=1e-5)


def test_wrt_needs_two_identities():
    with pytest.raises(ValueError, match="two identities"):
        weighted_regularized_triplet_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_msel_on_one_dimensional_points_matches_the_hand_computation():
    # visible: id0 at 0, 2; id1 at 10, 13. infrared: id0 at 1, 5; id1 at 11, 7.
    vis = torch.tensor([[0.0], [2.0], [10.0], [13.0]])
    ir = torch.tensor([[1.0], [5.0], [11.0], [7.0]])
    y = torch.tensor([0, 0, 1, 1])
    # visible anchors (cross - intra): 3-2, 2-2, 2-3, 4-3 -> squares 1, 0, 1, 1 -> 0.75
    # infrared anchors: 1-4, 4-4, 1.5-4, 4.5-4 -> squares 9, 0, 6.25, 0.25 -> 3.875
    expected = (0.75 + 3.875) / 2
    got = modality_shared_enhancement_loss(vis, ir, y, y)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def _official_style_msel(features: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """MSEL as the reference code states it: both halves share one identity order, the
    intra term is the mean of the top-(k-1) same-identity distances of the row."""
    n = features.shape[0] // 2
    d = torch.cdist(features.double(), features.double())
    target = labels[:n]
    pos = target[:, None] == target[None, :]
    total = 0.0
    for intra, cross in ((d[:n, :n], d[:n, n:]), (d[n:, n:], d[n:, :n])):
        intra_mean = (intra * pos).topk(k - 1, dim=1).values.mean(1)
        cross_mean = cross[pos].view(n, -1).mean(1)
        total = total + (cross_mean - intra_mean).pow(2).mean()
    return total / 2


def test_msel_agrees_with_the_reference_formulation_and_ignores_row_order():
    torch.manual_seed(0)
    P, K = 3, 4
    labels = torch.arange(P).repeat_interleave(K)
    vis, ir = torch.randn(P * K, 5), torch.randn(P * K, 5)
    reference = _official_style_msel(torch.cat([vis, ir]), torch.cat([labels, labels]), K)
    got = modality_shared_enhancement_loss(vis, ir, labels, labels)
    assert got.item() == pytest.approx(reference.item(), rel=1e-5)
    # identities are matched by label, so shuffling one modality changes nothing
    perm = torch.randperm(P * K)
    shuffled = modality_shared_enhancement_loss(vis, ir[perm], labels, labels[perm])
    assert shuffled.item() == pytest.approx(got.item(), rel=1e-5)


def test_msel_is_zero_when_both_modalities_spread_alike_and_has_gradients():
    vis = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [6.0, 5.0]], requires_grad=True)
    ir = vis.detach().clone()  # same points: cross mean distance = (0 + 1) / 2, intra = 1
    y = torch.tensor([0, 0, 1, 1])
    loss = modality_shared_enhancement_loss(vis, ir, y, y)
    assert loss.item() == pytest.approx(0.25, abs=1e-5)  # (0.5 - 1)^2 for every anchor
    loss.backward()
    assert vis.grad is not None and torch.isfinite(vis.grad).all() and vis.grad.abs().sum() > 0


def test_msel_needs_two_samples_per_identity_and_modality():
    vis, ir = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="MSEL"):
        modality_shared_enhancement_loss(vis, ir, torch.tensor([0, 1]), torch.tensor([0, 1]))


@pytest.mark.parametrize("x, official, exact", [
    ([0.0, 1.0, 3.0, 4.0], 0.13533999, 0.13533722),
    ([0.0, 1.0, 12.0, 13.0], 3.924037e-05, 1.813296e-05),
    ([0.0, 1.0, 30.0, 31.0], 1.1240405, 2.76e-13),
])
def test_wrt_official_normaliser_collapses_the_negative_term_for_far_negatives(x, official, exact):
    """The reference normaliser (+1e-6, no shift for negatives) on hand-computed cases: once
    the negatives are far, the loss rises instead of vanishing."""
    features = torch.tensor(x)[:, None]
    labels = torch.tensor([0, 0, 1, 1])
    got = weighted_regularized_triplet_loss(features, labels, normalizer="official")
    assert got.item() == pytest.approx(official, rel=1e-4)
    got_exact = weighted_regularized_triplet_loss(features, labels)
    assert got_exact.item() == pytest.approx(exact, rel=1e-3, abs=1e-14)
