"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification
with k-reciprocal Encoding", CVPR 2017), in chunked torch.

Definitions (paper, section 3; the reference code of the authors follows them):

- ``d(i, j)``: squared Euclidean distance between features (L2-normalise them first
  for cosine models), divided by the largest distance of row ``i`` over the
  query + gallery set;
- ``N(i, k)``: the ``k + 1`` nearest items of ``i`` (``i`` itself included);
  ``R(i, k) = {j in N(i, k) : i in N(j, k)}`` (k-reciprocal neighbours);
- ``R*(i)``: ``R(i, k1)`` united with every ``R(c, round(k1 / 2))``, ``c`` in
  ``R(i, k1)``, that shares more than 2/3 of its members with ``R(i, k1)``;
- ``V[i, j] = exp(-d(i, j)) / sum_{j' in R*(i)} exp(-d(i, j'))`` on ``R*(i)``, else 0;
- local query expansion (``k2 > 1``): ``V[i] <- mean of V[j]`` over the ``k2``
  nearest ``j`` of ``i`` (``i`` included);
- ``jaccard(i, j) = 1 - sum_f min(V[i,f], V[j,f]) / sum_f max(V[i,f], V[j,f])``, where the
  denominator is ``2 - sum_f min`` because every row of V sums to 1;
- final distance ``(1 - lambda) * jaccard + lambda * d``.

Defaults ``k1=20, k2=6, lambda=0.3`` are the paper's (section 4.2).

Memory: no ``N x N`` matrix is built. Distances are computed a block of rows at a
time (float32); ``V`` is stored sparsely (at most ``(k1+1) * (round(k1/2) + 2)``
entries a row); the Jaccard term accumulates ``min`` products through the
inverted lists of the gallery rows of ``V``. The result is the ``(Q, G)``
distance matrix, in float32, on the features' device (CPU or GPU).
"""

from __future__ import annotations

import torch

K1 = 20
"""k1 of the paper (section 4.2)."""
K2 = 6
"""k2 of the paper (section 4.2)."""
LAMBDA = 0.3
"""lambda of the paper (section 4.2)."""
EXPANSION_OVERLAP = 2 / 3
"""A half-size reciprocal set joins R*(i) when more than this fraction of it lies in
R(i, k1) (paper, equation 12)."""

_BLOCK_ELEMENTS = 1 << 22
"""Rows per block are chosen so that a block holds about this many floats (16 MiB)."""


def _block_rows(width: int, budget: int = _BLOCK_ELEMENTS) -> int:
    return max(1, budget // max(1, width))


def _squared_distances(rows: torch.Tensor, feats: torch.Tensor, norms: torch.Tensor,
                       row_norms: torch.Tensor) -> torch.Tensor:
    out = torch.addmm(row_norms[:, None] + norms[None, :], rows, feats.T, alpha=-2.0)
    return out.clamp_min_(0.0)


def _member_distances(feats: torch.Tensor, norms: torch.Tensor, start: int,
                      members: torch.Tensor, budget: int) -> torch.Tensor:
    """Squared distances from rows ``start:start+b`` to their (b, m) ``members`` only."""
    b, m = members.shape
    rows = max(1, budget // max(1, m * feats.shape[1]))
    out = torch.empty(b, m, device=feats.device)
    for s in range(0, b, rows):
        idx = members[s:s + rows]
        mine = feats[start + s:start + s + idx.shape[0]]
        dots = torch.einsum("bd,bmd->bm", mine, feats[idx])
        out[s:s + rows] = (norms[start + s:start + s + idx.shape[0], None] + norms[idx]
                           - 2 * dots).clamp_min_(0.0)
    return out


def _reciprocal(nn: torch.Tensor, width: int, start: int, stop: int) -> torch.Tensor:
    """``R(i, width - 1)`` for rows ``start:stop`` as a (rows, width) index tensor, -1 padded."""
    forward = nn[start:stop, :width]
    backward = nn[forward][:, :, :width]  # (rows, width, width)
    me = torch.arange(start, stop, device=nn.device)[:, None, None]
    return torch.where((backward == me).any(-1), forward, torch.full_like(forward, -1))


def _compact(index: torch.Tensor, fill: int) -> torch.Tensor:
    """Distinct non-negative entries of each row first (ascending), ``fill`` after;
    trailing columns that are ``fill`` in every row are dropped."""
    x = torch.where(index < 0, torch.full_like(index, fill), index)
    x, _ = x.sort(dim=1)
    duplicate = torch.zeros_like(x, dtype=torch.bool)
    duplicate[:, 1:] = x[:, 1:] == x[:, :-1]
    x = torch.where(duplicate, torch.full_like(x, fill), x)
    x, _ = x.sort(dim=1)
    width = int((x < fill).sum(1).max().item()) if x.numel() else 0
    return x[:, : max(width, 1)]


def _row_coalesce(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int):
    """Sum duplicate (row, col) entries; returns entries sorted by (row, col)."""
    keys = rows * n + cols
    unique, inverse = torch.unique(keys, return_inverse=True)
    summed = torch.zeros(unique.shape[0], dtype=vals.dtype, device=vals.device)
    summed.index_add_(0, inverse, vals)
    return unique // n, unique % n, summed


def k_reciprocal_rerank(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k1: int = K1,
    k2: int = K2,
    lambda_value: float = LAMBDA,
    block_elements: int = _BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Re-ranked (Q, G) distances (smaller = closer) of ``query`` (Q, D) to ``gallery`` (G, D).

    Features are used as given (normalise them first for a cosine model). Runs on
    the device of ``query``; ``block_elements`` bounds the size of the dense blocks.
    """
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"features must be (N, D) matrices of one width; got query {tuple(query.shape)} "
            f"and gallery {tuple(gallery.shape)}"
        )
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    device = query.device
    num_q, num_g = query.shape[0], gallery.shape[0]
    if num_q == 0 or num_g == 0:
        return torch.zeros(num_q, num_g, device=device)
    feats = torch.cat([query.float(), gallery.to(device).float()])
    n = feats.shape[0]
    norms = (feats * feats).sum(1)
    block = _block_rows(n, block_elements)

    # 1. Row maxima and nearest neighbours (N(i, k) for every k needed below); the one
    #    pass over all pairs. The query x gallery block is kept for the final sum.
    k_near = min(max(k1 + 1, k2), n)
    row_max = torch.empty(n, device=device)
    nn = torch.empty(n, k_near, dtype=torch.long, device=device)
    out = torch.empty(num_q, num_g, device=device)
    for s in range(0, n, block):
        d = _squared_distances(feats[s:s + block], feats, norms, norms[s:s + block])
        row_max[s:s + block] = d.max(1).values
        nn[s:s + block] = d.topk(k_near, dim=1, largest=False, sorted=True).indices
        if s < num_q:
            out[s:s + block] = d[: num_q - s, num_q:]
    row_max.clamp_min_(torch.finfo(torch.float32).tiny)

    # 2. R*(i) and the rows of V, sparse: (N, M) column indices (n = padding) and weights.
    width = min(k1 + 1, n)
    half = min(round(k1 / 2) + 1, n)
    recip = torch.cat([_reciprocal(nn, width, s, min(s + block, n)) for s in range(0, n, block)])
    half_recip = torch.cat([_reciprocal(nn, half, s, min(s + block, n))
                            for s in range(0, n, block)])
    sub = _block_rows(max(width * half * width, n), block_elements)
    blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
    for s in range(0, n, sub):
        r = recip[s:s + sub]  # (b, width)
        cand = half_recip[r.clamp_min(0)]  # (b, width, half): R(c, k1/2) of each candidate c
        cand_valid = (cand >= 0) & (r >= 0)[:, :, None]
        inside = ((cand[:, :, :, None] == r[:, None, None, :]) & (r >= 0)[:, None, None, :]).any(-1)
        overlap = (inside & cand_valid).sum(-1)
        size = cand_valid.sum(-1)
        accept = (r >= 0) & (overlap > EXPANSION_OVERLAP * size)
        grown = torch.where(accept[:, :, None] & cand_valid, cand, torch.full_like(cand, -1))
        members = _compact(torch.cat([r, grown.flatten(1)], dim=1), fill=n)  # (b, m)
        valid = members < n
        d = _member_distances(feats, norms, s, members.clamp_max(n - 1), block_elements)
        weight = torch.exp(-d / row_max[s:s + sub, None]) * valid
        blocks.append((members, weight / weight.sum(1, keepdim=True)))
    m = max(b[0].shape[1] for b in blocks)
    v_cols = torch.cat([torch.nn.functional.pad(c, (0, m - c.shape[1]), value=n) for c, _ in blocks])
    v_vals = torch.cat([torch.nn.functional.pad(w, (0, m - w.shape[1])) for _, w in blocks])
    del blocks, recip, half_recip

    # 3. Local query expansion -> CSR rows (crow, col, val) of the final V.
    if k2 > 1:
        k_qe = min(k2, n)
        sub = _block_rows(k_qe * m, block_elements)
        rows_l, cols_l, vals_l = [], [], []
        for s in range(0, n, sub):
            near = nn[s:s + sub, :k_qe]  # (b, k2)
            cols = v_cols[near].flatten(1)  # (b, k2 * m)
            vals = v_vals[near].flatten(1) / k_qe
            rows = torch.arange(s, s + near.shape[0], device=device)[:, None].expand_as(cols)
            keep = cols < n
            r, c, v = _row_coalesce(rows[keep], cols[keep], vals[keep], n)
            rows_l.append(r)
            cols_l.append(c)
            vals_l.append(v)
        e_rows, e_cols, e_vals = torch.cat(rows_l), torch.cat(cols_l), torch.cat(vals_l)
    else:
        keep = v_cols < n
        e_rows = torch.arange(n, device=device)[:, None].expand_as(v_cols)[keep]
        e_cols, e_vals = v_cols[keep], v_vals[keep]
    del v_cols, v_vals
    counts = torch.bincount(e_rows, minlength=n)
    crow = torch.zeros(n + 1, dtype=torch.long, device=device)
    crow[1:] = counts.cumsum(0)

    # 4. Inverted lists of the gallery rows of V: for each column f, (gallery row, value).
    g_mask = e_rows >= num_q
    order = torch.argsort(e_cols[g_mask], stable=True)
    post_rows = (e_rows[g_mask] - num_q)[order]
    post_cols = e_cols[g_mask][order]
    post_vals = e_vals[g_mask][order]
    col_ptr = torch.zeros(n + 1, dtype=torch.long, device=device)
    col_ptr[1:] = torch.bincount(post_cols, minlength=n).cumsum(0)
    post_len = col_ptr[1:] - col_ptr[:-1]

    # 5. sum_f min(V[i,f], V[j,f]) for query i and gallery j, rows grouped so that each
    #    group expands to about block_elements (entry, posting) pairs.
    q_end = int(crow[num_q].item())
    q_rows, q_cols, q_vals = e_rows[:q_end], e_cols[:q_end], e_vals[:q_end]
    entry_pairs = post_len[q_cols]
    row_pairs = torch.zeros(num_q, dtype=torch.long, device=device)
    row_pairs.index_add_(0, q_rows, entry_pairs)
    cum = row_pairs.cumsum(0).tolist()
    start, done = 0, 0
    max_rows = _block_rows(num_g, block_elements)
    while start < num_q:
        stop = start + 1
        while stop < num_q and cum[stop] - done <= block_elements and stop - start < max_rows:
            stop += 1
        lo, hi = int(crow[start].item()), int(crow[stop].item())
        rows, cols, vals = q_rows[lo:hi], q_cols[lo:hi], q_vals[lo:hi]
        lengths = entry_pairs[lo:hi]
        total = int(lengths.sum().item())
        shared = torch.zeros(stop - start, num_g, device=device)
        if total:
            entry = torch.repeat_interleave(torch.arange(hi - lo, device=device), lengths)
            first = torch.cumsum(lengths, 0) - lengths
            offset = torch.arange(total, device=device) - first[entry]
            at = col_ptr[cols[entry]] + offset
            shared.index_put_(
                (rows[entry] - start, post_rows[at]),
                torch.minimum(vals[entry], post_vals[at]),
                accumulate=True,
            )
        jaccard = 1.0 - shared / (2.0 - shared)
        d = out[start:stop] / row_max[start:stop, None]
        out[start:stop] = jaccard * (1.0 - lambda_value) + d * lambda_value
        done = cum[stop - 1]
        start = stop
    return out


def rerank_distances(query: torch.Tensor, gallery: torch.Tensor, settings=None) -> torch.Tensor:
    """:func:`k_reciprocal_rerank` with ``settings``: None/True (defaults), a mapping or an
    object with ``k1``, ``k2``, ``lambda_value`` (e.g. ``cfg.eval.rerank``)."""
    if settings is None or settings is True:
        return k_reciprocal_rerank(query, gallery)
    get = settings.get if isinstance(settings, dict) else lambda k, d: getattr(settings, k, d)
    return k_reciprocal_rerank(
        query, gallery, k1=int(get("k1", K1)), k2=int(get("k2", K2)),
        lambda_value=float(get("lambda_value", LAMBDA)),
    )
