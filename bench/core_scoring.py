"""Core scoring benchmark: `make bench` (or `python -m bench.core_scoring --n 200000`).

Measures, in one run on this machine:
- single-event scoring latency p50/p99 (whiten -> HNSW K_cand -> Lorentz re-rank -> kernels)
  on an index of N vectors of dimension D with K_cand=128, K=32;
- batch throughput in events/s;
- exact brute-force Lorentz k-NN in numpy (float64, cancellation-free) on the same queries:
  latency ratio and recall@K of the pipeline against it;
- the ef_search the RecallTuner chose for recall >= 0.95 on the candidate stage.
Timings are noisy on a shared 2-core machine: compare the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams
from lorentzcore.scorer import Scorer
from lorentzcore.tuning import RecallTuner


def make_data(n: int, d: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    X = rng.standard_t(df=4, size=(n, d)) @ A.T
    y = (X[:, 0] + 0.5 * rng.standard_normal(n) > 0).astype(np.float32)
    return X, y


def exact_lorentz_topk(Z: np.ndarray, zq: np.ndarray, k: int) -> np.ndarray:
    """Brute-force Lorentz k-NN in numpy: cancellation-free cosh(d) - 1 over every vector."""
    zz = float(zq @ zq)
    ww = np.einsum("ij,ij->i", Z, Z)
    x0 = np.sqrt(1.0 + zz)
    y0 = np.sqrt(1.0 + ww)
    diff = Z - zq
    dt = (ww - zz) / (x0 + y0)
    s = 0.5 * (np.einsum("ij,ij->i", diff, diff) - dt * dt)
    idx = np.argpartition(s, k)[:k]
    return idx[np.argsort(s[idx])]


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--k-cand", type=int, default=128)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--exact-queries", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    X, y = make_data(args.n + args.queries, args.d)
    Xtr, ytr = X[: args.n], y[: args.n]
    Xq = X[args.n :]
    times = np.arange(args.n, dtype=np.int64)
    Tq = np.arange(args.n, args.n + args.queries, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = AnalogModel.fit(
            Xtr,
            ytr,
            times,
            directory=tmp,
            model_id="bench",
            schema_hash="bench0000",
            feature_names=tuple(f"f{i}" for i in range(args.d)),
            kernel=KernelConfig(period=390.0),
            params=ScorerParams(k=args.k, k_cand=args.k_cand),
            ef_search=16,
        )
        build_s = time.perf_counter() - t0
        Zq = model.whitener.transform(Xq.astype(np.float32))
        tuner = RecallTuner(model.index, target=0.95, k=args.k, sample_size=200)
        report = tuner.tune(Zq[:200], args.k)

        scorer = Scorer(model)
        for i in range(200):  # warm caches and numba
            scorer.score(Xq[i], int(Tq[i]))
        scorer.score_batch(Xq[:200], Tq[:200])  # the batch path's compiled passes too
        lat = []
        for i in range(args.queries):
            t = time.perf_counter_ns()
            scorer.score(Xq[i], int(Tq[i]))
            lat.append((time.perf_counter_ns() - t) / 1e3)
        t, c = time.perf_counter(), time.process_time()
        batch = scorer.score_batch(Xq, Tq)
        batch_s = time.perf_counter() - t
        batch_cpu_s = time.process_time() - c
        # where a batched event's time goes (wall us per event, this run)
        stages = {k: round(v / args.queries, 1) for k, v in batch.timings_us.items()}

        scale = float(model.spec.params.lift_scale or 1.0)
        Ztr = scale * np.asarray(model.index.vector_store, dtype=np.float64)
        ex_lat, recalls = [], []
        for i in range(args.exact_queries):
            zq = scale * Zq[i].astype(np.float64)
            t = time.perf_counter_ns()
            truth = exact_lorentz_topk(Ztr, zq, args.k)
            ex_lat.append((time.perf_counter_ns() - t) / 1e3)
            got = scorer.score(Xq[i], int(Tq[i])).neighbor_ids
            recalls.append(len(set(truth) & set(got)) / args.k)

    result = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "k_cand": args.k_cand,
        "build_s": round(build_s, 2),
        "lift_scale": round(scale, 4),
        "ef_search": report.ef_search,
        "candidate_recall": round(report.recall, 4),
        "single_p50_us": round(pct(lat, 50), 1),
        "single_p99_us": round(pct(lat, 99), 1),
        "batch_events_per_s": round(args.queries / batch_s),
        # CPU time of the process (every thread): what a batch costs on a shared machine
        "batch_events_per_cpu_s": round(args.queries / batch_cpu_s),
        "batch_us_per_event": stages,
        "exact_p50_us": round(pct(ex_lat, 50), 1),
        "speedup_vs_exact_p50": round(pct(ex_lat, 50) / pct(lat, 50), 1),
        "recall_at_k_vs_exact_lorentz": round(float(np.mean(recalls)), 4),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"core scoring, index {args.n} x {args.d}, K_cand={args.k_cand}, K={args.k}")
        print(f"  index build                     {result['build_s']} s")
        print(f"  batch, us per event by stage    {result['batch_us_per_event']}")
        print(
            f"  tuned ef_search                 {result['ef_search']} "
            f"(candidate recall@{args.k} {result['candidate_recall']})"
        )
        print(
            f"  single event p50 / p99          {result['single_p50_us']} / "
            f"{result['single_p99_us']} us"
        )
        print(
            f"  batch throughput                {result['batch_events_per_s']} events/s "
            f"({result['batch_events_per_cpu_s']} per CPU second)"
        )
        print(
            f"  exact Lorentz k-NN p50          {result['exact_p50_us']} us "
            f"({result['speedup_vs_exact_p50']}x slower than the pipeline)"
        )
        print(f"  recall@{args.k} vs exact Lorentz     {result['recall_at_k_vs_exact_lorentz']}")
    return result


if __name__ == "__main__":
    main()
