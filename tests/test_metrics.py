"""Metrics on hand-computed cases, and agreement with the per-query reference loop."""

import warnings

import numpy as np
import pytest
import torch

from vireid.data.protocols import PROTOCOLS
from vireid.evaluation import (
    DegenerateFeaturesWarning,
    compute_metrics,
    evaluate_features,
    select_splits,
    summarize,
)
from vireid.evaluation.evaluator import format_summary
from vireid.evaluation.reference import compute_metrics_loop


def test_single_query_hand_computed():
    # Ranking by distance: ids [2, 1, 3, 1, 1] -> positives at ranks 2, 4, 5 (1-based).
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    m = compute_metrics(d, [1], [2, 1, 3, 1, 1], [1], [2, 2, 2, 2, 2], "regdb")
    assert m.cmc[:5].tolist() == [0, 1, 1, 1, 1]
    assert len(m.cmc) == 5  # truncated to the gallery size
    assert m.mAP == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert m.mINP == pytest.approx(3 / 5)


def test_invalid_queries_are_skipped_in_every_mean():
    d = np.array([[0.1, 0.2], [0.2, 0.1]])
    # Query 1 has id 9, absent from the gallery.
    m = compute_metrics(d, [1, 9], [1, 2], [1, 1], [2, 2], "bupt")
    assert m.num_valid == 1 and m.num_query == 2
    assert m.cmc.tolist() == [1.0, 1.0] and m.mAP == 1.0 and m.mINP == 1.0


def test_no_valid_query_is_an_error():
    with pytest.raises(ValueError, match="no query has a positive"):
        compute_metrics(np.zeros((1, 2)), [5], [1, 2], [1], [1, 1], "regdb")


def test_sysu_cam3_query_ignores_every_cam2_item():
    # Gallery: id 7 cam2 (nearest), id 5 cam2, id 1 cam1 (true match), id 4 cam4.
    d = np.array([[0.1, 0.2, 0.3, 0.4]] * 2)
    g_ids, g_cams = [7, 5, 1, 4], [2, 2, 1, 4]
    from_cam3 = compute_metrics(d[:1], [1], g_ids, [3], g_cams, "sysu")
    assert from_cam3.rank(1) == 1.0 and from_cam3.mAP == 1.0
    from_cam6 = compute_metrics(d[:1], [1], g_ids, [6], g_cams, "sysu")
    assert from_cam6.cmc[:3].tolist() == [0, 0, 1] and from_cam6.mAP == pytest.approx(1 / 3)


def test_sysu_rule_removes_cam2_positives_too():
    d = np.array([[0.1, 0.2]])
    with pytest.raises(ValueError, match="no query has a positive"):
        compute_metrics(d, [1], [1, 2], [3], [2, 1], "sysu")


def test_same_pid_same_camera_rule_llcm_and_vcm():
    # The nearest item is the query's own id seen by the query's camera: removed.
    d = np.array([[0.1, 0.2, 0.3]])
    for protocol in ("llcm", "vcm"):
        m = compute_metrics(d, [1], [1, 2, 1], [4], [4, 1, 2], protocol)
        assert m.cmc.tolist() == [0, 1]  # two items are kept: the CMC has two entries
        assert m.mAP == pytest.approx(1 / 2)
    # Same id, other camera: kept.
    m = compute_metrics(d, [1], [1, 2, 1], [4], [3, 1, 2], "vcm")
    assert m.rank(1) == 1.0 and m.mAP == pytest.approx((1 + 2 / 3) / 2)
    # Other id, same camera: kept (it is a negative ranked first).
    m = compute_metrics(d, [1], [2, 1, 3], [4], [4, 1, 2], "vcm")
    assert m.cmc[:2].tolist() == [0, 1]


def test_dedup_cmc_counts_each_identity_once():
    # Ranked ids: 2, 2, 3, 1 -> deduplicated 2, 3, 1: first match at rank 3 (not 4).
    d = np.array([[0.1, 0.2, 0.3, 0.4]])
    args = ([1], [2, 2, 3, 1], [6], [1, 4, 5, 1])
    dedup = compute_metrics(d, *args, "sysu")
    plain = compute_metrics(d, *args, "regdb")
    assert dedup.cmc.tolist() == [0, 0, 1]  # three identities: three entries, not padded
    assert plain.cmc.tolist() == [0, 0, 0, 1]
    # mAP and mINP use the full ranking in both variants.
    assert dedup.mAP == plain.mAP == pytest.approx(1 / 4)
    assert dedup.mINP == plain.mINP == pytest.approx(1 / 4)


def test_dedup_ignores_removed_items():
    # LLCM: id 2 at cam 4 is a different id, kept; id 1 cam 4 (query cam) removed.
    d = np.array([[0.1, 0.2, 0.3, 0.4]])
    m = compute_metrics(d, [1], [1, 2, 2, 1], [4], [4, 4, 1, 5], "llcm")
    assert m.cmc.tolist() == [0, 1]  # identities 2 and 1


def test_minp_is_positives_over_rank_of_hardest():
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])
    g_ids = [1, 9, 1, 9, 9, 9]
    m = compute_metrics(d, [1, 1], g_ids, [1, 1], [2] * 6, "regdb")
    # Query 0: positives at ranks 1 and 3 -> INP 2/3. Query 1: ranks 4 and 6 -> 2/6.
    assert m.mINP == pytest.approx((2 / 3 + 2 / 6) / 2)


def test_ties_rank_in_gallery_order():
    # A negative and a positive at the same distance: the one earlier in the gallery wins.
    d = np.array([[0.5, 0.5, 0.9]])
    with pytest.warns(DegenerateFeaturesWarning):
        negative_first = compute_metrics(d, [1], [2, 1, 3], [1], [2, 2, 2], "regdb")
        positive_first = compute_metrics(d, [1], [1, 2, 3], [1], [2, 2, 2], "regdb")
    assert negative_first.rank(1) == 0.0 and negative_first.mAP == pytest.approx(0.5)
    assert positive_first.rank(1) == 1.0 and positive_first.mAP == 1.0
    assert negative_first.num_tied == 1


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_constant_features_score_as_a_stable_sort(protocol):
    """A collapsed model (every feature equal) gains nothing from ties, under every protocol."""
    rng = np.random.default_rng(7)
    q_ids, g_ids = rng.integers(0, 10, 41), np.repeat(np.arange(10), 4)
    q_cams, g_cams = rng.choice([3, 6], 41), np.tile([1, 2, 4, 5], 10)
    ones = torch.ones(1, 8)
    with pytest.warns(DegenerateFeaturesWarning, match="41 of 41 queries"):
        m = evaluate_features(ones.expand(41, 8), ones.expand(40, 8), q_ids, g_ids, q_cams,
                              g_cams, protocol)
    d = -(torch.nn.functional.normalize(ones.expand(41, 8)) @
          torch.nn.functional.normalize(ones.expand(40, 8)).T).numpy()
    cmc, ap, inp, valid = compute_metrics_loop(d, q_ids, g_ids, q_cams, g_cams, protocol)
    np.testing.assert_allclose(m.cmc, cmc, atol=1e-12)
    assert m.mAP == pytest.approx(ap, abs=1e-12) and m.mINP == pytest.approx(inp, abs=1e-12)
    assert m.rank(1) < 0.5 and m.mAP < 0.6  # was 1.0 and 1.0 when ties favoured positives
    assert m.num_degenerate == 41


def test_zeroed_query_features_do_not_help():
    """Zeroing some queries' features (all their distances tie) must not raise Rank-1."""
    rng = torch.Generator().manual_seed(0)
    q_ids, g_ids = torch.arange(41) % 10, torch.arange(40) % 10
    centres = torch.randn(10, 16, generator=rng)
    qf = centres[q_ids] + 1.5 * torch.randn(41, 16, generator=rng)
    gf = centres[g_ids] + 1.5 * torch.randn(40, 16, generator=rng)
    args = (q_ids, g_ids, torch.ones(41, dtype=torch.long), torch.full((40,), 2), "regdb")
    base = evaluate_features(qf, gf, *args)
    zeroed = qf.clone()
    zeroed[:5] = 0
    with pytest.warns(DegenerateFeaturesWarning, match="5 of 41 queries"):
        m = evaluate_features(zeroed, gf, *args)
    # Each zeroed query now ranks the gallery in index order: its first positive is item
    # q_id (ids cycle 0..9), so it is a hit only for identity 0.
    hits_before = base.rank(1) * 41
    expected = hits_before - _hits_of(qf[:5], gf, q_ids[:5], g_ids) + int((q_ids[:5] == 0).sum())
    assert m.rank(1) * 41 == pytest.approx(expected)


def _hits_of(qf, gf, q_ids, g_ids):
    qn, gn = torch.nn.functional.normalize(qf), torch.nn.functional.normalize(gf)
    return int((g_ids[(-(qn @ gn.T)).argmin(1)] == q_ids).sum())


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_tied_problems_agree_with_the_stable_loop(protocol, monkeypatch):
    """Distances with few distinct values (many ties), on both counting paths and in chunks."""
    import vireid.evaluation.metrics as metrics

    rng = np.random.default_rng(11)
    for trial in range(12):
        num_q, num_g, num_ids = rng.integers(1, 60), rng.integers(1, 120), rng.integers(1, 25)
        q_ids, g_ids = rng.integers(0, num_ids + 2, num_q), rng.integers(0, num_ids, num_g)
        q_cams, g_cams = rng.integers(1, 7, num_q), rng.integers(1, 7, num_g)
        d = rng.integers(0, rng.integers(1, 6), (num_q, num_g)).astype(np.float32)
        try:
            cmc, ap, inp, valid = compute_metrics_loop(d, q_ids, g_ids, q_cams, g_cams, protocol)
        except ValueError:
            continue
        for chunk, fraction in ((1 << 22, 4), (1 << 22, 10**9), (3 * num_g, 0)):
            monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", chunk)
            monkeypatch.setattr(metrics, "_SORT_FRACTION", fraction)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateFeaturesWarning)
                m = compute_metrics(d, q_ids, g_ids, q_cams, g_cams, protocol)
            assert m.num_valid == valid
            np.testing.assert_allclose(m.cmc, cmc, atol=1e-12, err_msg=f"trial {trial}")
            assert m.mAP == pytest.approx(ap, abs=1e-12)
            assert m.mINP == pytest.approx(inp, abs=1e-12)


def test_euclidean_distance_ranks_raw_features():
    q = torch.tensor([[1.0, 0.0]])
    # Item 0 points the same way but is far; item 1 is near but at 90 degrees.
    g = torch.tensor([[5.0, 0.0], [1.0, 1.0]])
    args = ([1], [1, 2], [1], [2, 2], "regdb")
    assert evaluate_features(q, g, *args).rank(1) == 1.0  # cosine: item 0
    assert evaluate_features(q, g, *args, distance="euclidean").rank(1) == 0.0  # item 1
    with pytest.raises(ValueError, match="distance must be one of cosine, euclidean"):
        evaluate_features(q, g, *args, distance="manhattan")


def test_short_cmc_has_the_reference_length():
    """Fewer than 20 identities: the CMC ends where the ranked list does (not padded)."""
    rng = np.random.default_rng(5)
    q_ids, g_ids = rng.integers(0, 6, 30), np.repeat(np.arange(6), 5)
    q_cams, g_cams = rng.choice([3, 6], 30), np.tile([1, 2, 4, 5, 1], 6)
    d = rng.random((30, 30))
    for protocol, length in (("sysu", 6), ("llcm", 6), ("regdb", 20), ("vcm", 20)):
        m = compute_metrics(d, q_ids, g_ids, q_cams, g_cams, protocol)
        cmc, *_ = compute_metrics_loop(d, q_ids, g_ids, q_cams, g_cams, protocol)
        assert len(m.cmc) == len(cmc) == length, protocol
        np.testing.assert_allclose(m.cmc, cmc)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_agrees_with_reference_loop(protocol, dtype):
    rng = np.random.default_rng(abs(hash((protocol, dtype.__name__))) % 2**32)
    for _ in range(15):
        num_q, num_g, num_ids = rng.integers(1, 150), rng.integers(1, 400), rng.integers(1, 40)
        q_ids, g_ids = rng.integers(0, num_ids + 2, num_q), rng.integers(0, num_ids, num_g)
        q_cams, g_cams = rng.integers(1, 7, num_q), rng.integers(1, 7, num_g)
        boost = rng.choice([0.0, 0.5, 3.0])  # from random rankings to near-perfect ones
        score = rng.random((num_q, num_g)) - boost * (q_ids[:, None] == g_ids) * rng.random((num_q, num_g))
        d = (score.argsort(1).argsort(1) - num_g / 2).astype(dtype)  # no ties
        try:
            cmc, ap, inp, valid = compute_metrics_loop(d, q_ids, g_ids, q_cams, g_cams, protocol)
        except ValueError:
            with pytest.raises(ValueError):
                compute_metrics(d, q_ids, g_ids, q_cams, g_cams, protocol)
            continue
        m = compute_metrics(d, q_ids, g_ids, q_cams, g_cams, protocol)
        assert m.num_valid == valid
        np.testing.assert_allclose(m.cmc, cmc, atol=1e-12)
        assert m.mAP == pytest.approx(ap, abs=1e-12)
        assert m.mINP == pytest.approx(inp, abs=1e-12)


def test_chunking_and_both_paths_agree(monkeypatch):
    """Small chunks and every row on either counting path give the same result."""
    import vireid.evaluation.metrics as metrics

    rng = np.random.default_rng(3)
    q_ids, g_ids = rng.integers(0, 20, 300), rng.integers(0, 20, 500)
    q_cams, g_cams = rng.integers(1, 7, 300), rng.integers(1, 7, 500)
    score = rng.random((300, 500)) - 0.7 * (q_ids[:, None] == g_ids) * rng.random((300, 500))
    d = score.argsort(1).argsort(1).astype(np.float32)
    base = compute_metrics(d, q_ids, g_ids, q_cams, g_cams, "llcm")
    for chunk, fraction in ((1 << 24, 10**9), (1 << 24, 0), (7 * 500, 8)):
        monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(metrics, "_SORT_FRACTION", fraction)
        m = compute_metrics(d, q_ids, g_ids, q_cams, g_cams, "llcm")
        np.testing.assert_array_equal(m.cmc, base.cmc)
        assert m.mAP == pytest.approx(base.mAP, abs=1e-12)
        assert m.mINP == pytest.approx(base.mINP, abs=1e-12)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="gallery_ids has 2 entries"):
        compute_metrics(np.zeros((1, 3)), [1], [1, 2], [1], [1, 1, 1], "vcm")
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(np.array([[np.nan, 0.0]]), [1], [1, 2], [1], [1, 1], "vcm")
    with pytest.raises(ValueError, match="unknown protocol 'market'"):
        compute_metrics(np.zeros((1, 1)), [1], [1], [1], [1], "market")


def test_evaluate_features_normalises_and_ranks_by_cosine():
    q = torch.tensor([[1.0, 0.0]])
    # Item 0 is long but at 45 degrees; item 1 is short and nearly aligned: cosine picks item 1.
    g = torch.tensor([[10.0, 10.0], [0.1, 0.01]])
    assert evaluate_features(q, g, [1], [2, 1], [1], [2, 2], "regdb").rank(1) == 1.0
    raw = evaluate_features(q, g, [1], [2, 1], [1], [2, 2], "regdb", normalize=False)
    assert raw.rank(1) == 0.0


def test_summarize_mean_and_std_over_trials():
    def fake(r1):
        from vireid.evaluation.metrics import Metrics
        return Metrics(cmc=np.full(20, r1), mAP=r1 / 2, mINP=r1 / 4, num_valid=1, num_query=1)

    rows = [("all-search/trial0", "ir->vis", 0, fake(0.5)), ("all-search/trial1", "ir->vis", 1, fake(0.7))]
    s = summarize(rows)
    assert list(s) == ["all-search ir->vis"]
    assert s["all-search ir->vis"]["mean"]["R1"] == pytest.approx(0.6)
    assert s["all-search ir->vis"]["std"]["R1"] == pytest.approx(0.1)
    assert s["all-search ir->vis"]["mean"]["mAP"] == pytest.approx(0.3)
    # A direction already in the split name is not repeated.
    s = summarize([("ir->vis/trial0", "ir->vis", 0, fake(0.5))])
    assert list(s) == ["ir->vis"]
    assert "60.00" not in format_summary(s) and "50.00" in format_summary(s)


def test_select_splits_names_every_unknown_split():
    from vireid.data.types import EvalSplit

    def split(name):
        return EvalSplit(protocol="sysu", name=name, query=(), gallery=(), trial=0,
                         direction="ir->vis")

    available = [split("all-search/trial0"), split("all-search/trial1"), split("indoor-search/trial0")]
    assert [s.name for s in select_splits(available, ["indoor-search"])] == ["indoor-search/trial0"]
    assert len(select_splits(available, None)) == 3
    # One known and one unknown name used to pass silently (the unknown one was dropped).
    with pytest.raises(ValueError, match=r"eval.splits: no evaluation split matches \['nope'\]"):
        select_splits(available, ["all-search", "nope"])
