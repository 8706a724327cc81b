"""Candidate stage benchmark: L2 candidates + Lorentz re-rank vs the exact (MIPS) stage.

`python -m bench.candidate_stage --n 200000` builds both hnswlib graphs over the same
whitened, lifted data (same M, ef_construction and seed; only the metric differs) and
measures, in one run, for each (ef_search, K_cand) and each graph:

- recall@K of HNSW's own top-K and of the K_cand candidates re-ranked by Lorentz distance,
  both against exact brute-force Lorentz k-NN (float64);
- the search's CPU time per query (hnswlib searches with max(ef, K_cand)): a batch of all
  queries on one thread, the minimum over ``--rounds`` rounds that visit every point in
  turn, so background load on a shared machine hits every point alike and the minimum
  keeps the least disturbed round.

``--M`` / ``--ef-construction`` take comma-separated lists to compare graph parameters at
equal recall. Compare the ratios and recalls, which come from one run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.core_scoring import exact_lorentz_topk, make_data
from lorentzcore.ann import AnnIndex, recall_at_k
from lorentzcore.hyperbolic import lorentz_distances_to_query
from lorentzcore.whitening import Whitener


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _search_cpu_us(index: AnnIndex, Zq: np.ndarray, k_cand: int) -> float:
    c = time.process_time()
    index.search(Zq, k_cand)
    return (time.process_time() - c) / len(Zq) * 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="indexed vectors")
    ap.add_argument("--d", type=int, default=16, help="dimension")
    ap.add_argument("--k", type=int, default=32, help="neighbours (recall@K)")
    ap.add_argument("--k-cand", type=_ints, default=[32, 64, 128], help="candidate counts")
    ap.add_argument("--queries", type=int, default=500, help="queries for recall and timing")
    ap.add_argument("--ef", type=_ints, default=[32, 40, 48, 56, 64, 80, 96, 128])
    ap.add_argument("--M", type=_ints, default=[16], help="graph degree(s)")
    ap.add_argument("--ef-construction", type=_ints, default=[200])
    ap.add_argument("--metrics", default="l2,lorentz_mips")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    X, _ = make_data(args.n + args.queries, args.d)
    w = Whitener.fit(X[: args.n])
    Z = w.transform(X[: args.n]).astype(np.float32)
    Zq = w.transform(X[args.n :]).astype(np.float32)
    scale = 1.0 / float(np.median(np.linalg.norm(Z.astype(np.float64), axis=1)))
    graphs: dict[tuple[str, int, int], AnnIndex] = {}
    build_cpu_s: dict[str, float] = {}
    for metric in args.metrics.split(","):
        for M in args.M:
            for efc in args.ef_construction:
                c = time.process_time()
                graphs[(metric, M, efc)] = AnnIndex.build(
                    Z, M=M, ef_construction=efc, metric=metric, lift_scale=scale
                )
                build_cpu_s[f"{metric}/M{M}/efc{efc}"] = round(time.process_time() - c, 1)
    Zs = scale * Z.astype(np.float64)
    truth = np.stack([exact_lorentz_topk(Zs, scale * q.astype(np.float64), args.k) for q in Zq])
    # hnswlib's beam is max(ef, K_cand): points below K_cand repeat the ef = K_cand point
    points = [(g, ef, kc) for g in graphs for kc in args.k_cand for ef in args.ef if ef >= kc]
    rows: dict[tuple[tuple[str, int, int], int, int], dict[str, Any]] = {}
    for g, ef, kc in points:
        index = graphs[g]
        index.set_ef(ef)
        ids, _, Zn = index.search_with_vectors(Zq, kc)
        rerank = np.empty((len(Zq), args.k), dtype=np.int64)
        for i in range(len(Zq)):
            d = lorentz_distances_to_query(scale * Zq[i].astype(np.float64), Zn[i] * scale)
            rerank[i] = ids[i, np.argsort(d, kind="stable")[: args.k]]
        rows[(g, ef, kc)] = {
            "metric": g[0],
            "M": g[1],
            "ef_construction": g[2],
            "ef_search": ef,
            "k_cand": kc,
            "topk_recall": round(recall_at_k(ids[:, : args.k], truth), 4),
            "rerank_recall": round(recall_at_k(rerank, truth), 4),
            "search_cpu_us": float("inf"),
        }
    for _ in range(args.rounds):
        for g, ef, kc in points:
            graphs[g].set_ef(ef)
            row = rows[(g, ef, kc)]
            row["search_cpu_us"] = min(row["search_cpu_us"], _search_cpu_us(graphs[g], Zq, kc))
    for row in rows.values():
        row["search_cpu_us"] = round(row["search_cpu_us"], 1)
    result = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "queries": args.queries,
        "build_cpu_s": build_cpu_s,
        "rows": list(rows.values()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"candidate stage, index {args.n} x {args.d}, K={args.k}, {args.queries} queries")
        print("  metric        M   efc  ef   K_cand | top-K  re-ranked | search CPU us/query")
        for r in result["rows"]:
            print(
                f"  {r['metric']:<12}  {r['M']:<3} {r['ef_construction']:<4} "
                f"{r['ef_search']:<4} {r['k_cand']:<6} | {r['topk_recall']:<6} "
                f"{r['rerank_recall']:<9} | {r['search_cpu_us']}"
            )
        print(f"  build CPU s: {build_cpu_s}")
    return result


if __name__ == "__main__":
    main()
