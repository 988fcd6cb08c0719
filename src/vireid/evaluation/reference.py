"""A plain per-query loop over the metric definitions, in numpy.

It mirrors the community's reference evaluation code step by step (full
argsort per query, then keep rule, then CMC / AP / INP), favouring
readability over speed. The argsort is stable (equal distances rank in gallery
order, the tie rule of the evaluator), and the CMC is as long as the shortest
ranked list when that is shorter than 20, as the reference code's would be. The test suite and ``benchmarks/eval_speed.py`` use it
to check :func:`vireid.evaluation.metrics.compute_metrics`.
"""

from __future__ import annotations

import numpy as np

from vireid.data.protocols import get_rules


def compute_metrics_loop(distances, query_ids, gallery_ids, query_cams, gallery_cams, protocol):
    """Returns ``(cmc, mAP, mINP, num_valid)`` exactly as the per-query reference loop does."""
    rules = get_rules(protocol)
    dist = np.asarray(distances)
    q_ids, g_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    q_cams, g_cams = np.asarray(query_cams), np.asarray(gallery_cams)
    num_q, num_g = dist.shape
    hits = []
    ap_sum = inp_sum = 0.0
    num_valid = 0
    for i in range(num_q):
        order = np.argsort(dist[i], kind="stable")
        ids, cams = g_ids[order], g_cams[order]
        if rules.exclusion == "sysu_cam3_cam2":
            keep = ~((q_cams[i] == 3) & (cams == 2))
        elif rules.exclusion == "same_pid_same_cam":
            keep = ~((ids == q_ids[i]) & (cams == q_cams[i]))
        else:
            keep = np.ones(num_g, dtype=bool)
        matches = (ids[keep] == q_ids[i]).astype(np.int64)
        if not matches.any():
            continue
        num_valid += 1
        if rules.dedup_cmc:
            kept_ids = ids[keep]
            _, first_index = np.unique(kept_ids, return_index=True)
            dedup = kept_ids[np.sort(first_index)]
            hit = (dedup == q_ids[i]).cumsum()
        else:
            hit = matches.cumsum()
        hits.append(np.minimum(hit, 1)[: rules.max_rank])
        positions = np.flatnonzero(matches)
        precision = np.arange(1, len(positions) + 1) / (positions + 1)
        ap_sum += precision.mean()
        inp_sum += len(positions) / (positions[-1] + 1)
    if num_valid == 0:
        raise ValueError("no query has a positive in the gallery under the protocol's keep rule")
    length = min(len(h) for h in hits)
    cmc = np.sum([h[:length] for h in hits], axis=0) / num_valid
    return cmc, ap_sum / num_valid, inp_sum / num_valid, num_valid
