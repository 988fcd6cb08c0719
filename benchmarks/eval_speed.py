"""Evaluation speed: the vectorised evaluator vs a plain per-query numpy loop.

Problems of the real benchmarks' sizes (docs/quality.md#benchmarks): SYSU-MM01 all-search
(3,803 infrared queries x ~301 visible gallery, 10 trials, dedup CMC, cam3/cam2
rule) and HITSZ-VCM (5,000 x 5,000 tracklets, same-id-same-camera rule).
Features are synthetic: identity centre + a modality offset + noise whose
scale varies per sample (some samples are easy, some hard). The evaluator's
cost grows with how deep the positives sit in the rankings, so each size is
run at several difficulties: ``strong`` (a well-trained model), ``published``
(the noise at which the HITSZ-VCM-sized problem's mAP matches X-ReID's
published 60.5; the SYSU-sized problem then scores mAP ~0.77) and ``random``
(an untrained model, the worst case).

Both sides get the same distance matrix (cosine of L2-normalised features,
computed once); ``metrics_*_s`` times the metric computation alone and
``end_to_end_s`` adds the feature normalisation and matrix product that
:func:`vireid.evaluation.evaluate_features` does.

``scale_*`` rows: square N x N problems (N = 5,000, 10,000, 20,000; about 12
gallery items per identity, cameras 1..6) at ``strong`` and ``random``
difficulty (:data:`SCALE_DIFFICULTY`), scored under each keep rule / CMC variant: ``regdb`` (plain CMC, no
rule), ``vcm`` (plain CMC, same-id-same-camera rule), ``sysu`` and ``llcm``
(deduplicated CMC). Each entry gives the time, the peak memory the evaluator
allocates (tracemalloc) and its ratio to the float32 distance matrix, and
``dedup_vs_plain``: the slower dedup rule over the slower plain rule. Prints one
JSON object.

    python benchmarks/eval_speed.py [--threads 1] [--sizes 5000 10000 20000]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
import torch

from vireid.evaluation import compute_metrics, evaluate_features
from vireid.evaluation.reference import compute_metrics_loop

DIFFICULTY = {"strong": 3.0, "published": 3.4, "random": 1e4}
"""Noise scale around the identity centres (of unit norm) for each difficulty."""

SCALE_DIFFICULTY = {"strong": 1.5, "random": 1e4}
"""Noise of the square scale rows: ``strong`` gives Rank-1 ~0.95, mAP ~0.83 at N = 5,000."""


def _features(rng, ids, modality, centres, noise):
    dim = centres.shape[1]
    scale = noise * rng.lognormal(0.0, 0.35, size=(len(ids), 1))
    gap = (0.6 if modality else -0.6) * np.ones(dim) / np.sqrt(dim)  # a modality offset
    f = centres[ids] + gap + scale * rng.standard_normal((len(ids), dim)) / np.sqrt(dim)
    return f.astype(np.float32)


def sysu_problem(rng, noise, dim=2048):
    """96 test ids, query = cams 3/6 (3,803 images), gallery = one image per (id, cam 1/2/4/5)."""
    centres = rng.standard_normal((96, dim)) / np.sqrt(dim)
    q_ids = rng.integers(0, 96, 3803)
    q_cams = rng.choice([3, 6], 3803)
    qf = _features(rng, q_ids, 1, centres, noise)
    problems = []
    for _ in range(10):
        seen = rng.random((96, 4)) < 301 / 384  # not every id is seen by every camera
        g_ids, cam_index = np.nonzero(seen)
        g_cams = np.array([1, 2, 4, 5])[cam_index]
        problems.append((qf, _features(rng, g_ids, 0, centres, noise), q_ids, g_ids, q_cams, g_cams))
    return problems


def vcm_problem(rng, noise, dim=2048):
    centres = rng.standard_normal((427, dim)) / np.sqrt(dim)
    q_ids, g_ids = rng.integers(0, 427, 5000), rng.integers(0, 427, 5000)
    q_cams, g_cams = rng.integers(1, 13, 5000), rng.integers(1, 13, 5000)
    return [(_features(rng, q_ids, 1, centres, noise), _features(rng, g_ids, 0, centres, noise),
             q_ids, g_ids, q_cams, g_cams)]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(problems, protocol):
    _, end_to_end = _timed(lambda: [evaluate_features(*p, protocol) for p in problems])
    dists = [evaluate_distance(p) for p in problems]
    ours, t_ours = _timed(lambda: [
        compute_metrics(d, qi, gi, qc, gc, protocol)
        for d, (_, _, qi, gi, qc, gc) in zip(dists, problems)
    ])
    loop, t_loop = _timed(lambda: [
        compute_metrics_loop(d, qi, gi, qc, gc, protocol)
        for d, (_, _, qi, gi, qc, gc) in zip(dists, problems)
    ])
    diff = 0.0
    for m, (cmc, ap, inp, valid) in zip(ours, loop):
        if m.num_valid != valid:
            raise AssertionError(f"valid queries differ: {m.num_valid} vs {valid}")
        diff = max(diff, float(np.abs(m.cmc - cmc).max()), abs(m.mAP - ap), abs(m.mINP - inp))
    return {
        "queries": int(problems[0][0].shape[0]),
        "gallery_mean": round(float(np.mean([p[1].shape[0] for p in problems])), 1),
        "trials": len(problems),
        "metrics_vectorised_s": round(t_ours, 4),
        "metrics_loop_s": round(t_loop, 4),
        "speedup": round(t_loop / t_ours, 1),
        "end_to_end_s": round(end_to_end, 4),
        "max_abs_diff": diff,
        "R1": round(float(np.mean([m.rank(1) for m in ours])), 4),
        "mAP": round(float(np.mean([m.mAP for m in ours])), 4),
        "mINP": round(float(np.mean([m.mINP for m in ours])), 4),
    }


def evaluate_distance(problem) -> np.ndarray:
    qf, gf = (torch.nn.functional.normalize(torch.from_numpy(x), dim=1) for x in problem[:2])
    return (-(qf @ gf.T)).numpy()


def square_problem(rng, size, noise, dim=256):
    """N queries x N gallery items, about 12 gallery items per identity, cameras 1..6."""
    num_ids = max(1, size // 12)
    centres = rng.standard_normal((num_ids, dim)) / np.sqrt(dim)
    q_ids, g_ids = rng.integers(0, num_ids, size), rng.integers(0, num_ids, size)
    q_cams, g_cams = rng.integers(1, 7, size), rng.integers(1, 7, size)
    qf = _features(rng, q_ids, 1, centres, noise)
    gf = _features(rng, g_ids, 0, centres, noise)
    return evaluate_distance((qf, gf)), q_ids, g_ids, q_cams, g_cams


SCALE_PROTOCOLS = {"regdb": "plain", "vcm": "plain", "sysu": "dedup", "llcm": "dedup"}


def scale_row(compute, problem) -> dict:
    """Time and peak allocated memory of ``compute`` under each protocol of SCALE_PROTOCOLS."""
    dist, q_ids, g_ids, q_cams, g_cams = problem
    row = {"distance_matrix_mb": round(dist.nbytes / 2**20, 1)}
    for protocol in SCALE_PROTOCOLS:
        tracemalloc.start()
        metrics, seconds = _timed(lambda p=protocol: compute(dist, q_ids, g_ids, q_cams, g_cams, p))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        row[protocol] = {"s": round(seconds, 3), "peak_mb": round(peak / 2**20, 1),
                         "peak_vs_matrix": round(peak / dist.nbytes, 2),
                         "R1": round(metrics.rank(1), 4), "mAP": round(metrics.mAP, 4)}
    slowest = {kind: max(row[p]["s"] for p, k in SCALE_PROTOCOLS.items() if k == kind)
               for kind in ("plain", "dedup")}
    row["dedup_vs_plain"] = round(slowest["dedup"] / slowest["plain"], 2)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs="*", default=[5000, 10000, 20000],
                        help="sizes N of the N x N scale rows (none: skip them)")
    parser.add_argument("--skip-real", action="store_true",
                        help="only the scale rows (not the SYSU/HITSZ-VCM-sized problems)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    report = {"threads": args.threads}
    if not args.skip_real:
        for level, noise in DIFFICULTY.items():
            report[f"sysu_all_search_{level}"] = run(sysu_problem(rng, noise), "sysu")
            report[f"hitsz_vcm_{level}"] = run(vcm_problem(rng, noise), "vcm")
    for size in args.sizes:
        for level in ("strong", "random"):
            report[f"scale_{size}_{level}"] = scale_row(
                compute_metrics, square_problem(rng, size, SCALE_DIFFICULTY[level]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
