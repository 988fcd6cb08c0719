"""Gallery search speed: exact torch search vs faiss on a 100k-feature gallery.

Features are synthetic and L2-normalised: identity centres plus noise, of width
1280 (CLIP-ReID ViT-B/16's inference feature: 768-d class token and 512-d
projection, concatenated). Both backends are exact (cosine top-k):
:class:`vireid.retrieval.index.FeatureIndex` with ``torch`` (blocked matrix
product + top-k) and ``faiss`` (``IndexFlatIP``). Reported per backend: index
build time, queries per second (best of ``--repeats`` passes over all queries, in
one batch), the latency of one query searched alone (mean over ``--single``) and the
fraction of top-k lists identical to torch's. Also times k-reciprocal
re-ranking (:mod:`vireid.evaluation.rerank`) on a SYSU-MM01-sized problem
(3,803 queries x 301 gallery) and a HITSZ-VCM-sized one (5,000 x 5,000) for reference. Prints one JSON object.

    python benchmarks/search_speed.py [--gallery 100000] [--queries 1000] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from vireid.evaluation.rerank import k_reciprocal_rerank
from vireid.retrieval.index import FeatureIndex, faiss_available


def synthetic(n: int, dim: int, ids: int, gen: torch.Generator) -> torch.Tensor:
    centres = torch.randn(ids, dim, generator=gen)
    labels = torch.randint(0, ids, (n,), generator=gen)
    feats = centres[labels] + 1.5 * torch.randn(n, dim, generator=gen)
    return torch.nn.functional.normalize(feats, dim=1)


def time_search(index: FeatureIndex, queries: torch.Tensor, k: int, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = index.search(queries, k)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=50,
                        help="queries searched one at a time for the latency figure")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--skip-rerank", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    gallery = synthetic(args.gallery, args.dim, 5000, gen)
    queries = synthetic(args.queries, args.dim, 5000, gen)
    out: dict = {
        "gallery": args.gallery, "queries": args.queries, "dim": args.dim, "topk": args.topk,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }
    backends = ["torch"] + (["faiss"] if faiss_available() else [])
    reference = None
    for name in backends:
        start = time.perf_counter()
        index = FeatureIndex(gallery, backend=name)
        build = time.perf_counter() - start
        seconds, (_, idx) = time_search(index, queries, args.topk, args.repeats)
        row = {"build_s": round(build, 3), "search_s": round(seconds, 3),
               "queries_per_s": round(args.queries / seconds, 1)}
        singles = queries[: args.single]
        start = time.perf_counter()
        for q in singles:
            index.search(q[None], args.topk)
        row["one_query_at_a_time_ms"] = round(1000 * (time.perf_counter() - start) / len(singles), 2)
        if reference is None:
            reference = idx
        else:
            row["same_topk_as_torch"] = float((idx == reference).all(1).float().mean())
        out[name] = row
    if torch.cuda.is_available():
        index = FeatureIndex(gallery, backend="torch", device="cuda")
        time_search(index, queries[:10], args.topk, 1)  # warm-up
        torch.cuda.synchronize()
        seconds, (_, idx) = time_search(index, queries, args.topk, args.repeats)
        out["torch_cuda"] = {"search_s": round(seconds, 4),
                             "queries_per_s": round(args.queries / seconds, 1),
                             "same_topk_as_torch": float((idx == reference).all(1).float().mean())}
    if "faiss" in out:
        out["faiss_speedup_vs_torch"] = round(out["faiss"]["queries_per_s"]
                                              / out["torch"]["queries_per_s"], 2)
    else:
        out["faiss"] = "not installed (pip install faiss-cpu)"
    if not args.skip_rerank:
        for name, (nq, ng, ids) in {"sysu_3803x301": (3803, 301, 96),
                                    "vcm_5000x5000": (5000, 5000, 500)}.items():
            feats = synthetic(nq + ng, args.dim, ids, gen)
            start = time.perf_counter()
            k_reciprocal_rerank(feats[:nq], feats[nq:])
            out[f"rerank_{name}_s"] = round(time.perf_counter() - start, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
