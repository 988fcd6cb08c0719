"""Vectorised CMC, mAP and mINP (definitions: docs/protocols.md#metrics-v).

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

Ties: the ranking is the order of a stable sort by distance, i.e. equal
distances are ranked by gallery index, so a collapsed model (constant
features) gains nothing from them. Both counting paths detect a kept negative
at exactly a positive's distance; those rows (rare with real features) are
scored from a stable argsort instead, which also measures how many of their
distances are tied (:class:`DegenerateFeaturesWarning`).

The deduplicated CMC (SYSU-MM01, LLCM) counts the identities with a kept item
ahead of the first positive: from the few such items when they are few, else
from the per-identity minimum distance of the row (no sort, one pass).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from vireid.data.protocols import ProtocolRules, get_rules, keep_pairs

_CHUNK_ELEMENTS = 1 << 22
"""Query rows are processed in chunks of about this many (query, gallery) pairs
(a few chunk-sized temporaries stay well under the size of a float32 distance matrix)."""

_SORT_FRACTION = 4
"""A row is sorted when more than 1/4 of its gallery is closer than its farthest
positive: the candidate path costs several times more per item than a value sort
(1/2 to 1/8 measured on the problems of benchmarks/eval_speed.py; 1/4 was best)."""

_DENSE_AHEAD = 16
"""Deduplicated CMC: a chunk whose rows have more than 1/16 of their gallery ahead of
the first positive takes the per-identity minimum (one pass) instead of gathering
the items ahead."""

DEGENERATE_TIE_SHARE = 0.5
"""A query with at least this share of its gallery distances tied (equal to another
distance of its row) is reported as degenerate."""


class DegenerateFeaturesWarning(UserWarning):
    """Many distances of some queries are exactly equal (collapsed or constant features)."""


@dataclass
class Metrics:
    """Scores of one query/gallery evaluation, as fractions in [0, 1].

    ``num_tied``: valid queries with a kept negative at exactly a positive's
    distance; ``num_degenerate``: those with at least
    :data:`DEGENERATE_TIE_SHARE` of their distances tied.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_query: int
    num_tied: int = 0
    num_degenerate: int = 0

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
            "num_tied": int(self.num_tied),
            "num_degenerate": int(self.num_degenerate),
        }


def warn_degenerate(metrics: Metrics, where: str = "") -> None:
    """A :class:`DegenerateFeaturesWarning` saying how many queries have mostly tied distances."""
    if metrics.num_degenerate:
        prefix = f"{where}: " if where else ""
        warnings.warn(
            f"{prefix}{metrics.num_degenerate} of {metrics.num_query} queries have at least "
            f"{DEGENERATE_TIE_SHARE:.0%} of their gallery distances tied (degenerate features?); "
            "tied items are ranked by gallery order, which gives them no advantage",
            DegenerateFeaturesWarning, stacklevel=3,
        )


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
    """Gallery ids -> (sorted unique ids, slot of each item, (U, M) table of item indices
    (-1 padded), item indices grouped by slot, start of each group)."""
    uniq, slot = np.unique(g_ids, return_inverse=True)
    counts = np.bincount(slot, minlength=len(uniq))
    order = np.argsort(slot, kind="stable")
    table = np.full((len(uniq), int(counts.max())), -1, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    within = np.arange(len(g_ids)) - np.repeat(starts, counts)
    table[slot[order], within] = order
    return uniq, slot, table, order, starts


class _Problem:
    """The gallery side of an evaluation and the keep rule, shared by the helpers."""

    def __init__(self, rules: ProtocolRules, g_ids: np.ndarray, g_cams: np.ndarray):
        self.rules, self.g_ids, self.g_cams = rules, g_ids, g_cams
        self.uniq, self.slot, self.table, self.by_slot, self.starts = _identity_table(g_ids)

    def keep(self, qi, qc, cols=None):
        """Keep mask of (rows of queries ``qi``/``qc``, columns ``cols``), or None (keep all)."""
        if cols is None:
            return keep_pairs(self.rules.exclusion, qi, qc, self.g_ids, self.g_cams)
        return keep_pairs(self.rules.exclusion, qi, qc, self.g_ids[cols], self.g_cams[cols])

    def kept_negatives(self, qi, qc, cols):
        neg = self.g_ids[cols] != qi
        keep = self.keep(qi, qc, cols)
        return neg if keep is None else neg & keep

    def identities_ahead(self, d, first, qi, qc, q_slot) -> np.ndarray:
        """Per row: other identities with a kept item closer than ``first`` (the first positive)."""
        n, num_g = d.shape
        ahead = d < first[:, None]
        if np.count_nonzero(ahead) * _DENSE_AHEAD <= n * num_g:
            rr, cc = np.divmod(np.flatnonzero(ahead), num_g)
            keep = self.kept_negatives(qi[rr], qc[rr], cc)
            keys = np.unique(rr[keep] * len(self.uniq) + self.slot[cc[keep]])
            return np.bincount(keys // len(self.uniq), minlength=n)
        keep = self.keep(qi[:, None], qc[:, None])
        masked = d if keep is None else np.where(keep, d, np.inf)
        nearest = np.minimum.reduceat(np.take(masked, self.by_slot, axis=1), self.starts, axis=1)
        near = nearest < first[:, None]
        near[np.arange(n), q_slot] = False  # the query's own identity is not "another"
        return np.count_nonzero(near, axis=1)

    def sorted_rows(self, d, qi, qc):
        """Exact scores of rows with ties, from a stable argsort: (AP, INP, first plain rank,
        first deduplicated rank, share of tied distances), one entry per row."""
        n, num_g = d.shape
        order = np.argsort(d, axis=1, kind="stable")
        ids = self.g_ids[order]
        keep = keep_pairs(self.rules.exclusion, qi[:, None], qc[:, None], ids, self.g_cams[order])
        keep = np.ones(order.shape, dtype=bool) if keep is None else keep
        match = keep & (ids == qi[:, None])
        kept_rank = np.cumsum(keep, axis=1) - 1
        hits = np.cumsum(match, axis=1)
        num_pos = hits[:, -1]
        ap = np.where(match, hits / np.maximum(kept_rank + 1, 1), 0.0).sum(1) / num_pos
        inp = num_pos / (np.where(match, kept_rank, -1).max(1) + 1)
        first_col = np.argmax(match, axis=1)
        first_plain = kept_rank[np.arange(n), first_col]
        rr, cc = np.nonzero(keep & (np.arange(num_g) < first_col[:, None]))
        marks = np.zeros((n, len(self.uniq)), dtype=bool)
        marks[rr, self.slot[order[rr, cc]]] = True
        first_dedup = marks.sum(1)
        values = np.take_along_axis(d, order, axis=1)
        same = values[:, 1:] == values[:, :-1]
        tied = np.zeros(values.shape, dtype=bool)
        tied[:, 1:] |= same
        tied[:, :-1] |= same
        return ap, inp, first_plain, first_dedup, tied.mean(1)

    def ranked_length(self, qi, qc) -> int:
        """Shortest ranked list over the given (valid) queries: kept items, or kept
        identities for the deduplicated CMC. The keep rule depends on the query's and the
        item's (identity, camera) only, so it is evaluated once per distinct pair of each."""
        dedup = self.rules.dedup_cmc
        full = len(self.uniq) if dedup else len(self.g_ids)
        if keep_pairs(self.rules.exclusion, qi[:1], qc[:1], self.g_ids[:1], self.g_cams[:1]) is None:
            return full
        queries = np.unique(np.stack([qi, qc], axis=1), axis=0)
        groups, counts = np.unique(np.stack([self.g_ids, self.g_cams], axis=1), axis=0,
                                   return_counts=True)  # sorted by identity, then camera
        first_of_id = np.flatnonzero(np.r_[True, groups[1:, 0] != groups[:-1, 0]])
        shortest = full
        rows = max(1, _CHUNK_ELEMENTS // len(groups))
        for start in range(0, len(queries), rows):
            p = queries[start:start + rows]
            keep = keep_pairs(self.rules.exclusion, p[:, :1], p[:, 1:], groups[:, 0], groups[:, 1])
            if dedup:
                kept = np.count_nonzero(np.logical_or.reduceat(keep, first_of_id, axis=1), axis=1)
            else:
                kept = keep.astype(np.int64) @ counts
            shortest = min(shortest, int(kept.min()))
        return shortest


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
    Equal distances rank in gallery order (a stable sort). The CMC has as many
    entries as the reference code gives: 20, or the length of the shortest
    ranked list (kept items; kept identities for a deduplicated CMC) when shorter.
    Warns (:class:`DegenerateFeaturesWarning`) when queries have mostly tied distances.
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

    g = _Problem(rules, g_ids, g_cams)
    q_slot_all = np.minimum(np.searchsorted(g.uniq, q_ids), len(g.uniq) - 1)
    q_in_gallery = g.uniq[q_slot_all] == q_ids

    valid_all = np.zeros(num_q, dtype=bool)
    first_all = np.zeros(num_q, dtype=np.int64)
    ap_sum = inp_sum = 0.0
    num_tied = num_degenerate = 0
    chunk = max(1, _CHUNK_ELEMENTS // num_g)
    for start in range(0, num_q, chunk):
        rows_of_chunk = slice(start, start + chunk)
        d = dist[rows_of_chunk]
        n = d.shape[0]
        qi, qc, q_slot = q_ids[rows_of_chunk], q_cams[rows_of_chunk], q_slot_all[rows_of_chunk]

        # Kept positives, gathered through the identity table: (n, M).
        cand = g.table[q_slot]
        is_pos = (cand >= 0) & q_in_gallery[rows_of_chunk, None]
        cols = np.where(is_pos, cand, 0)
        keep = g.keep(qi[:, None], qc[:, None], cols)
        if keep is not None:
            is_pos &= keep
        num_pos = is_pos.sum(1)
        valid = num_pos > 0
        if not valid.any():
            continue
        pos_d = np.where(is_pos, np.take_along_axis(d, cols, 1), np.inf)
        pos_sorted = _padded_sorted(pos_d)
        max_pos = int(num_pos.max())
        farthest = np.where(valid, pos_sorted[np.arange(n), np.maximum(num_pos - 1, 0)], -np.inf)
        j = np.arange(max_pos)
        real = j[None, :] < num_pos[:, None]
        tied = np.zeros(n, dtype=bool)  # a kept negative at exactly a positive's distance

        # Kept negatives ranked before each positive.
        neg_before = np.zeros((n, max_pos), dtype=np.int64)
        close = d <= farthest[:, None]
        deep = np.count_nonzero(close, axis=1) * _SORT_FRACTION > num_g
        if deep.any():  # sort these rows' negative distances, place the positives among them
            rows = np.flatnonzero(deep)
            negs = np.where(g.kept_negatives(qi[rows, None], qc[rows, None], np.arange(num_g)),
                            d[rows], np.inf)
            neg_sorted = _padded_sorted(negs)
            below = _count_below(np.arange(len(rows))[:, None], pos_sorted[rows, :max_pos],
                                 neg_sorted, strict=True)
            at = np.take_along_axis(neg_sorted, below, 1) == pos_sorted[rows, :max_pos]
            tied[rows] = (at & real[rows]).any(1)
            neg_before[rows] = below
            close[rows] = False
        # Other rows: place each close negative among the row's sorted positives.
        rr, cc = np.divmod(np.flatnonzero(close), num_g)
        keep = g.kept_negatives(qi[rr], qc[rr], cc)
        rr, cc = rr[keep], cc[keep]
        values = d[rr, cc]
        place = _count_below(rr, values, pos_sorted)
        hit = place > 0
        at = np.zeros(len(rr), dtype=bool)
        at[hit] = pos_sorted[rr[hit], place[hit] - 1] == values[hit]
        tied[rr[at]] = True
        width = pos_sorted.shape[1] + 1
        hist = np.bincount(rr * width + place, minlength=n * width).reshape(n, width)
        shallow = np.flatnonzero(~deep)
        neg_before[shallow] = np.cumsum(hist[shallow, :max_pos], axis=1)

        pos_rank = neg_before + j  # 0-based rank of each positive among kept items
        ap = np.where(real, (j + 1) / np.maximum(pos_rank + 1, 1), 0.0).sum(1) / np.maximum(num_pos, 1)
        inp = num_pos / (pos_rank[np.arange(n), np.maximum(num_pos - 1, 0)] + 1)
        if rules.dedup_cmc:
            first = np.zeros(n, dtype=np.int64)
            plain = valid & ~tied
            if plain.any():
                first[plain] = g.identities_ahead(d[plain], pos_sorted[plain, 0], qi[plain],
                                                  qc[plain], q_slot[plain])
        else:
            first = pos_rank[:, 0]
        if tied.any():  # exact scores of these rows from a stable sort
            rows = np.flatnonzero(tied)
            t_ap, t_inp, t_plain, t_dedup, share = g.sorted_rows(d[rows], qi[rows], qc[rows])
            ap[rows], inp[rows] = t_ap, t_inp
            first[rows] = t_dedup if rules.dedup_cmc else t_plain
            num_tied += len(rows)
            num_degenerate += int(np.count_nonzero(share >= DEGENERATE_TIE_SHARE))
        ap_sum += float(ap[valid].sum())
        inp_sum += float(inp[valid].sum())
        valid_all[rows_of_chunk] = valid
        first_all[rows_of_chunk] = first

    num_valid = int(valid_all.sum())
    if num_valid == 0:
        raise ValueError("no query has a positive in the gallery under the protocol's keep rule")
    length = min(rules.max_rank, g.ranked_length(q_ids[valid_all], q_cams[valid_all]))
    first_hist = np.bincount(np.minimum(first_all[valid_all], length), minlength=length + 1)
    cmc = np.cumsum(first_hist[:length]) / num_valid
    metrics = Metrics(cmc=cmc, mAP=ap_sum / num_valid, mINP=inp_sum / num_valid,
                      num_valid=num_valid, num_query=num_q, num_tied=num_tied,
                      num_degenerate=num_degenerate)
    warn_degenerate(metrics)
    return metrics
