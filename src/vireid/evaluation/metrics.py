"""Vectorised CMC, mAP and mINP (definitions: datasets.md, "Shared metric definitions").

Only the gallery items ranked before a query's farthest positive can change
any of its scores, and no metric needs the order of the others. So no row is
argsorted. Per query, the kept positives are gathered through an identity
table and sorted (there are few); then the number of kept negatives ranked
before each positive is counted in one of two ways, whichever is cheaper for
that row:

- few negatives closer than the farthest positive (any trained model): those
  candidates are gathered and placed among the row's sorted positives by a
  branchless binary search, vectorised over all candidates at once;
- many (an untrained model): the row's negative distances are sorted as
  values (a SIMD sort, several times cheaper than an argsort) and every
  positive is placed among them by the same binary search.

Ties between a positive and a negative at the same distance are resolved in
favour of the positive (the reference code leaves them to an unstable sort).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vireid.data.protocols import ProtocolRules, get_rules, keep_pairs

_CHUNK_ELEMENTS = 1 << 24
"""Query rows are processed in chunks of about this many (query, gallery) pairs."""

_SORT_FRACTION = 4
"""A row is sorted when more than 1/4 of its gallery is closer than its farthest
positive: the candidate path costs several times more per item than a value sort
(1/2 to 1/8 measured on the problems of benchmarks/eval_speed.py; 1/4 was best)."""


@dataclass
class Metrics:
    """Scores of one query/gallery evaluation, as fractions in [0, 1]."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_query: int

    def rank(self, k: int) -> float:
        """Rank-k accuracy (1-based k), clipped to the CMC length."""
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    def as_dict(self) -> dict:
        return {
            "cmc": [float(x) for x in self.cmc],
            "mAP": float(self.mAP),
            "mINP": float(self.mINP),
            "num_valid": int(self.num_valid),
            "num_query": int(self.num_query),
        }


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _count_below(rows, values, thresholds: np.ndarray, strict: bool = False) -> np.ndarray:
    """For each entry, how many thresholds of its row are <= its value (< if ``strict``).

    ``thresholds`` is (n, W), sorted along rows, W a power of two and the last
    column +inf; ``rows`` and ``values`` broadcast together and the binary
    search runs for all entries at once.
    """
    width = thresholds.shape[1]
    flat = thresholds.ravel()
    base = rows * width
    compare = np.less if strict else np.less_equal
    count = np.zeros(np.broadcast_shapes(np.shape(rows), np.shape(values)), dtype=np.int64)
    step = width // 2
    while step:
        count += step * compare(flat[base + count + (step - 1)], values)
        step //= 2
    return count


def _padded_sorted(values: np.ndarray) -> np.ndarray:
    """Rows sorted ascending, padded with +inf to a power-of-two width > the row length."""
    out = np.full((values.shape[0], 1 << values.shape[1].bit_length()), np.inf, dtype=values.dtype)
    out[:, : values.shape[1]] = np.sort(values, axis=1)
    return out


def _identity_table(g_ids: np.ndarray):
    """Gallery ids -> (sorted unique ids, slot of each item, (U, M) table of item indices, -1 padded)."""
    uniq, slot = np.unique(g_ids, return_inverse=True)
    counts = np.bincount(slot, minlength=len(uniq))
    order = np.argsort(slot, kind="stable")
    table = np.full((len(uniq), int(counts.max())), -1, dtype=np.int64)
    within = np.arange(len(g_ids)) - np.repeat(np.cumsum(counts) - counts, counts)
    table[slot[order], within] = order
    return uniq, slot, table


def compute_metrics(
    distances,
    query_ids,
    gallery_ids,
    query_cams,
    gallery_cams,
    protocol: str | ProtocolRules,
) -> Metrics:
    """CMC / mAP / mINP of a (Q, G) distance matrix (smaller = closer) under ``protocol``.

    ``protocol`` is a name of :data:`vireid.data.protocols.PROTOCOLS` or a
    :class:`ProtocolRules`; it selects the keep rule and the CMC variant.
    Queries with no kept positive are invalid and skipped in every mean.
    The CMC has ``min(20, G)`` entries, as in the reference code.
    """
    rules = get_rules(protocol)
    dist = _to_numpy(distances)
    if dist.ndim != 2:
        raise ValueError(f"distances must be a (queries, gallery) matrix, got shape {dist.shape}")
    if not np.issubdtype(dist.dtype, np.floating):
        dist = dist.astype(np.float64)
    num_q, num_g = dist.shape
    q_ids, g_ids, q_cams, g_cams = (
        _to_numpy(a).reshape(-1).astype(np.int64)
        for a in (query_ids, gallery_ids, query_cams, gallery_cams)
    )
    for what, n, expected in (
        ("query_ids", len(q_ids), num_q), ("query_cams", len(q_cams), num_q),
        ("gallery_ids", len(g_ids), num_g), ("gallery_cams", len(g_cams), num_g),
    ):
        if n != expected:
            raise ValueError(f"{what} has {n} entries but the distance matrix implies {expected}")
    if num_q == 0 or num_g == 0:
        raise ValueError(f"cannot evaluate an empty problem ({num_q} queries x {num_g} gallery)")
    if not np.isfinite(dist.sum(dtype=np.float64)):  # one cheap pass; the exact check on failure
        if not np.isfinite(dist).all():
            raise ValueError("the distance matrix contains NaN or infinite values")

    max_rank = min(rules.max_rank, num_g)
    uniq, g_slot, table = _identity_table(g_ids)
    q_slot = np.minimum(np.searchsorted(uniq, q_ids), len(uniq) - 1)
    q_in_gallery = uniq[q_slot] == q_ids

    first_hist = np.zeros(max_rank + 1, dtype=np.int64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    chunk = max(1, _CHUNK_ELEMENTS // num_g)
    for start in range(0, num_q, chunk):
        rows_of_chunk = slice(start, start + chunk)
        d = dist[rows_of_chunk]
        n = d.shape[0]
        qi, qc = q_ids[rows_of_chunk], q_cams[rows_of_chunk]

        def kept_negatives(rr, cc, qi=qi, qc=qc):
            neg = g_ids[cc] != qi[rr]
            keep = keep_pairs(rules.exclusion, qi[rr], qc[rr], g_ids[cc], g_cams[cc])
            return neg if keep is None else neg & keep

        # Kept positives, gathered through the identity table: (n, M).
        cand = table[q_slot[rows_of_chunk]]
        is_pos = (cand >= 0) & q_in_gallery[rows_of_chunk, None]
        cols = np.where(is_pos, cand, 0)
        keep = keep_pairs(rules.exclusion, qi[:, None], qc[:, None], g_ids[cols], g_cams[cols])
        if keep is not None:
            is_pos &= keep
        num_pos = is_pos.sum(1)
        valid = num_pos > 0
        if not valid.any():
            continue
        pos_d = np.where(is_pos, np.take_along_axis(d, cols, 1), np.inf)
        pos_sorted = _padded_sorted(pos_d)
        max_pos = int(num_pos.max())
        farthest = pos_sorted[np.arange(n), np.maximum(num_pos - 1, 0)]

        # Kept negatives ranked before each positive.
        neg_before = np.zeros((n, max_pos), dtype=np.int64)
        close = d < farthest[:, None]
        deep = np.count_nonzero(close, axis=1) * _SORT_FRACTION > num_g
        if deep.any():  # sort these rows' negative distances, place the positives among them
            rows = np.flatnonzero(deep)
            negs = np.where(kept_negatives(rows[:, None], np.arange(num_g)), d[rows], np.inf)
            neg_before[rows] = _count_below(
                np.arange(len(rows))[:, None], pos_sorted[rows, :max_pos], _padded_sorted(negs),
                strict=True,  # positives first on ties
            )
            close[rows] = False
        # Other rows: place each close negative among the row's sorted positives.
        rr, cc = np.divmod(np.flatnonzero(close), num_g)
        keep = kept_negatives(rr, cc)
        rr, cc = rr[keep], cc[keep]
        place = _count_below(rr, d[rr, cc], pos_sorted)  # positives first on ties
        width = pos_sorted.shape[1] + 1
        hist = np.bincount(rr * width + place, minlength=n * width).reshape(n, width)
        shallow = np.flatnonzero(~deep)
        neg_before[shallow] = np.cumsum(hist[shallow, :max_pos], axis=1)

        j = np.arange(max_pos)
        pos_rank = neg_before + j  # 0-based rank of each positive among kept items
        real = j[None, :] < num_pos[:, None]
        num_pos_v = num_pos[valid]
        ap = np.where(real, (j + 1) / (pos_rank + 1), 0.0).sum(1)[valid] / num_pos_v
        last_rank = pos_rank[np.arange(n), np.maximum(num_pos - 1, 0)][valid]
        ap_sum += float(ap.sum())
        inp_sum += float((num_pos_v / (last_rank + 1)).sum())
        num_valid += int(valid.sum())

        if rules.dedup_cmc:
            # First correct place in the identity-deduplicated list = number of other
            # identities with a kept item ranked before the first positive.
            rr, cc = np.divmod(np.flatnonzero(d < pos_sorted[:, :1]), num_g)
            ahead = kept_negatives(rr, cc)
            keys = np.unique(rr[ahead] * len(uniq) + g_slot[cc[ahead]])
            first_rank = np.bincount(keys // len(uniq), minlength=n)[valid]
        else:
            first_rank = pos_rank[valid, 0]
        first_hist += np.bincount(np.minimum(first_rank, max_rank), minlength=max_rank + 1)

    if num_valid == 0:
        raise ValueError("no query has a positive in the gallery under the protocol's keep rule")
    cmc = np.cumsum(first_hist[:max_rank]) / num_valid
    return Metrics(cmc=cmc, mAP=ap_sum / num_valid, mINP=inp_sum / num_valid,
                   num_valid=num_valid, num_query=num_q)
