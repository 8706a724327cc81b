"""Candidate stage benchmark: L2 candidates + Lorentz re-rank vs the exact (MIPS) stage.

`python -m bench.candidate_stage --n 50000` builds both hnswlib graphs over the same
whitened, lifted data (same M, ef_construction and seed; only the metric differs) and
measures, in one run, for each ef_search:

- recall@K of HNSW's own top-K and of the K_cand candidates re-ranked by Lorentz distance,
  both against exact brute-force Lorentz k-NN (float64);
- single-query search latency p50 of each graph, and their ratio (MIPS / L2).
Timings are noisy on a shared machine: compare the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.core_scoring import exact_lorentz_topk, make_data
from lorentzcore.ann import AnnIndex, recall_at_k
from lorentzcore.hyperbolic import lorentz_distances_to_query
from lorentzcore.whitening import Whitener


def _p50_us(index: AnnIndex, Zq: np.ndarray, k: int) -> float:
    lat = []
    for i in range(Zq.shape[0]):
        t = time.perf_counter_ns()
        index.search(Zq[i : i + 1], k)
        lat.append((time.perf_counter_ns() - t) / 1e3)
    return float(np.median(lat))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="indexed vectors")
    ap.add_argument("--d", type=int, default=16, help="dimension")
    ap.add_argument("--k", type=int, default=32, help="neighbours (recall@K)")
    ap.add_argument("--k-cand", type=int, default=128, help="candidates before the re-rank")
    ap.add_argument("--queries", type=int, default=300, help="queries for recall and timing")
    ap.add_argument("--ef", default="16,32,64,128,512", help="comma-separated ef_search values")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    X, _ = make_data(args.n + args.queries, args.d)
    w = Whitener.fit(X[: args.n])
    Z = w.transform(X[: args.n]).astype(np.float32)
    Zq = w.transform(X[args.n :]).astype(np.float32)
    scale = 1.0 / float(np.median(np.linalg.norm(Z.astype(np.float64), axis=1)))
    graphs = {
        metric: AnnIndex.build(Z, metric=metric, lift_scale=scale, k_cand=args.k_cand)
        for metric in ("l2", "lorentz_mips")
    }
    Zs = scale * Z.astype(np.float64)
    truth = np.stack([exact_lorentz_topk(Zs, scale * q.astype(np.float64), args.k) for q in Zq])
    rows = []
    for ef in (int(e) for e in args.ef.split(",")):
        row: dict[str, float | int] = {"ef_search": ef}
        for metric, index in graphs.items():
            index.set_ef(ef)
            ids, _, Zn = index.search_with_vectors(Zq, args.k_cand)
            rerank = np.empty((len(Zq), args.k), dtype=np.int64)
            for i in range(len(Zq)):
                d = lorentz_distances_to_query(scale * Zq[i].astype(np.float64), Zn[i] * scale)
                rerank[i] = ids[i, np.argsort(d, kind="stable")[: args.k]]
            row[f"{metric}_topk_recall"] = round(recall_at_k(ids[:, : args.k], truth), 4)
            row[f"{metric}_rerank_recall"] = round(recall_at_k(rerank, truth), 4)
            row[f"{metric}_p50_us"] = round(_p50_us(index, Zq, args.k_cand), 1)
        row["latency_ratio_mips_over_l2"] = round(
            float(row["lorentz_mips_p50_us"]) / float(row["l2_p50_us"]), 2
        )
        rows.append(row)
    result = {"n": args.n, "d": args.d, "k": args.k, "k_cand": args.k_cand, "rows": rows}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"candidate stage, index {args.n} x {args.d}, K={args.k}, K_cand={args.k_cand}")
        print("  ef  | L2 top-K  L2+rerank | MIPS top-K  MIPS+rerank | p50 us L2 / MIPS (ratio)")
        for r in rows:
            print(
                f"  {r['ef_search']:<4}| {r['l2_topk_recall']:<8}  {r['l2_rerank_recall']:<9} | "
                f"{r['lorentz_mips_topk_recall']:<10}  {r['lorentz_mips_rerank_recall']:<11} | "
                f"{r['l2_p50_us']} / {r['lorentz_mips_p50_us']} "
                f"({r['latency_ratio_mips_over_l2']})"
            )
    return result


if __name__ == "__main__":
    main()
