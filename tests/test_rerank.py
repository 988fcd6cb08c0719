"""k-reciprocal re-ranking: chunked torch against a plain dense implementation."""

import numpy as np
import pytest
import torch

from vireid.evaluation.evaluator import evaluate_features
from vireid.evaluation.rerank import k_reciprocal_rerank


def plain_rerank(q: np.ndarray, g: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Dense float64 loops written from the definitions of Zhong et al. (CVPR 2017)."""
    x = np.concatenate([q, g]).astype(np.float64)
    n, nq = len(x), len(q)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d = d / d.max(axis=1, keepdims=True)
    order = np.argsort(d, axis=1, kind="stable")

    def near(i, k):
        return list(order[i, : k + 1])

    def reciprocal(i, k):
        return [j for j in near(i, k) if i in near(j, k)]

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        grown = set(r)
        for c in r:
            rc = reciprocal(c, int(round(k1 / 2)))
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                grown |= set(rc)
        idx = sorted(grown)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[order[i, :k2]].mean(0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(nq, n):
            mins = np.minimum(v[i], v[j]).sum()
            maxs = np.maximum(v[i], v[j]).sum()
            out[i, j - nq] = (1 - mins / maxs) * (1 - lam) + d[i, j] * lam
    return out


def clustered(num_ids=8, per_id=6, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    ids = np.repeat(np.arange(num_ids), per_id)
    feats = centres[ids] + 0.6 * rng.normal(size=(len(ids), dim))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats.astype(np.float32), ids


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 3, 0.5), (5, 1, 0.2)])
def test_matches_plain_implementation(k1, k2, lam):
    feats, ids = clustered()
    q, g = feats[::4], np.delete(feats, np.s_[::4], axis=0)
    expected = plain_rerank(q, g, k1, k2, lam)
    got = k_reciprocal_rerank(torch.from_numpy(q), torch.from_numpy(g), k1, k2, lam)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)


def test_small_blocks_give_the_same_result():
    """Every chunked stage split into many tiny blocks: same distances."""
    feats, _ = clustered(num_ids=10, per_id=5, seed=3)
    q, g = torch.from_numpy(feats[:12]), torch.from_numpy(feats[12:])
    whole = k_reciprocal_rerank(q, g)
    tiny = k_reciprocal_rerank(q, g, block_elements=64)
    torch.testing.assert_close(tiny, whole, atol=1e-6, rtol=0)


def test_lambda_one_is_the_normalised_original_distance():
    feats, _ = clustered(seed=1)
    q, g = torch.from_numpy(feats[:5]), torch.from_numpy(feats[5:])
    out = k_reciprocal_rerank(q, g, lambda_value=1.0)
    allf = torch.cat([q, g]).double()
    d = torch.cdist(allf, allf) ** 2
    expected = (d / d.max(1, keepdim=True).values)[:5, 5:]
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


def test_rerank_improves_map_on_clustered_data():
    feats, ids = clustered(num_ids=12, per_id=8, dim=32, seed=2)
    qi = np.arange(0, len(ids), 8)
    gi = np.setdiff1d(np.arange(len(ids)), qi)
    cams_q, cams_g = np.zeros(len(qi)), np.ones(len(gi))
    base = evaluate_features(feats[qi], feats[gi], ids[qi], ids[gi], cams_q, cams_g, "regdb")
    rer = evaluate_features(feats[qi], feats[gi], ids[qi], ids[gi], cams_q, cams_g, "regdb",
                            rerank=True)
    assert rer.mAP > base.mAP


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one width"):
        k_reciprocal_rerank(torch.zeros(3, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(torch.zeros(3, 4), torch.zeros(5, 4), lambda_value=2.0)
