"""Core scoring benchmark: `make bench` (or `python -m bench.core_scoring --n 200000`).

Measures, in one run on this machine, on an index of N x D (default 200k x 16), K = 32:

- the model built as `geodesic train` builds it by default: Lorentz-MIPS candidate stage
  (lorentzcore.ann), its operating point (ef_search, K_cand) chosen by
  ``RecallTuner.calibrate`` on held-out queries (the cheapest point whose recall@K lower
  bound holds 0.95); ``--metric``, ``--ef`` and ``--k-cand`` override;
- single-event latency (whiten -> HNSW -> Lorentz re-rank -> kernels) p50 / p99, both wall
  clock and CPU time of the scoring thread (the CPU figure is what a shared machine still
  measures honestly; the wall figure only on an idle one: the load average is printed);
- batch throughput: events per wall second and per CPU second (process time, every
  thread), with hnswlib on one thread and on ``--threads``;
- recall@K of the served top K against exact brute-force Lorentz k-NN (numpy, float64,
  cancellation-free), and how much slower that exact search is per event (p50 ratios);
- with ``--baseline``: the same for the previous default (L2 stage, K_cand 128, ef tuned
  by ``RecallTuner.tune``), so the before / after ratio comes from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lorentzcore.ann import recall_at_k
from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams
from lorentzcore.scorer import Scorer
from lorentzcore.tuning import RecallTuner, TuneReport

TARGET_RECALL = 0.95


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


def pct(a: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(a), q))


def fit_model(
    X: np.ndarray, y: np.ndarray, directory: Path, metric: str, k: int, k_cand: int
) -> AnalogModel:
    return AnalogModel.fit(
        X,
        y,
        np.arange(len(X), dtype=np.int64),
        directory=directory,
        model_id="bench",
        schema_hash="bench0000",
        feature_names=tuple(f"f{i}" for i in range(X.shape[1])),
        kernel=KernelConfig(period=390.0),
        params=ScorerParams(k=k, k_cand=k_cand),
        ef_search=16,
        candidate_metric=metric,
    )


def operating_point(
    model: AnalogModel, Zt: np.ndarray, k: int, ef: int | None, k_cand: int | None, legacy: bool
) -> tuple[AnalogModel, TuneReport | None]:
    """The served (ef_search, K_cand): as given, else calibrated (legacy: ``tune`` upward
    from ef 16 at the fitted K_cand, the previous bench's procedure)."""
    if ef is not None and k_cand is not None:
        return model.with_operating_point(ef, k_cand), None
    tuner = RecallTuner(model.index, target=TARGET_RECALL, k=k, sample_size=len(Zt))
    report = tuner.tune(Zt, k) if legacy else tuner.calibrate(Zt, k, k_cand=k_cand)
    chosen_ef = report.ef_search if ef is None else ef
    return model.with_operating_point(chosen_ef, report.k_cand), report


def measure(
    model: AnalogModel,
    Xq: np.ndarray,
    Tq: np.ndarray,
    truth: np.ndarray,
    threads: int,
) -> dict[str, Any]:
    """Single-event latency, batch throughput and recall of one served model."""
    scorer = Scorer(model)
    n = len(Xq)
    for i in range(min(200, n)):  # warm caches and numba
        scorer.score(Xq[i], int(Tq[i]))
    scorer.score_batch(Xq[:200], Tq[:200])  # the batch path's compiled passes too
    wall, cpu = np.empty(n), np.empty(n)
    for i in range(n):
        c, t = time.thread_time_ns(), time.perf_counter_ns()
        scorer.score(Xq[i], int(Tq[i]))
        wall[i] = (time.perf_counter_ns() - t) / 1e3
        cpu[i] = (time.thread_time_ns() - c) / 1e3
    out: dict[str, Any] = {
        "ef_search": model.index.ef_search,
        "k_cand": model.spec.params.k_cand,
        "metric": model.index.metric,
        "single_p50_us": round(pct(wall, 50), 1),
        "single_p99_us": round(pct(wall, 99), 1),
        "single_cpu_p50_us": round(pct(cpu, 50), 1),
        "single_cpu_p99_us": round(pct(cpu, 99), 1),
    }
    for label, nt in (("1t", 1), (f"{threads}t", threads)):
        model.index.num_threads = nt
        scorer.score_batch(Xq[:200], Tq[:200])
        t, c = time.perf_counter(), time.process_time()
        batch = scorer.score_batch(Xq, Tq)
        out[f"batch_{label}_events_per_s"] = round(n / (time.perf_counter() - t))
        out[f"batch_{label}_events_per_cpu_s"] = round(n / (time.process_time() - c))
        if nt == 1:
            # where a batched event's time goes (wall us per event, this run)
            out["batch_us_per_event"] = {k: round(v / n, 1) for k, v in batch.timings_us.items()}
            out["recall_at_k_vs_exact_lorentz"] = round(
                recall_at_k(batch.neighbor_ids[: len(truth)], truth), 4
            )
    model.index.num_threads = 1
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="indexed vectors")
    ap.add_argument("--d", type=int, default=16, help="dimension")
    ap.add_argument("--k", type=int, default=32, help="neighbours (recall@K)")
    ap.add_argument("--metric", choices=("l2", "lorentz_mips"), default="lorentz_mips")
    ap.add_argument("--k-cand", type=int, help="candidates (default: calibrated)")
    ap.add_argument("--ef", type=int, help="ef_search (default: calibrated)")
    ap.add_argument("--queries", type=int, default=2000, help="scored events")
    ap.add_argument("--tune-queries", type=int, default=500, help="held-out calibration queries")
    ap.add_argument("--exact-queries", type=int, default=300, help="events checked exactly")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="batch threads")
    ap.add_argument("--baseline", action="store_true", help="also the L2 / K_cand 128 model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    X, y = make_data(args.n + args.tune_queries + args.queries, args.d)
    Xtr, ytr = X[: args.n], y[: args.n]
    Xt = X[args.n : args.n + args.tune_queries]
    Xq = X[args.n + args.tune_queries :]
    Tq = np.arange(args.n, args.n + args.queries, dtype=np.int64)
    configs: list[tuple[str, str, int | None, int | None, bool]] = [
        ("served", args.metric, args.ef, args.k_cand, False)
    ]
    if args.baseline:
        configs.append(("baseline", "l2", None, 4 * args.k, True))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, metric, ef, k_cand, legacy in configs:
            t0 = time.process_time()
            fit_kc = k_cand or (args.k if metric == "lorentz_mips" else 4 * args.k)
            model = fit_model(Xtr, ytr, Path(tmp) / name, metric, args.k, fit_kc)
            build_cpu_s = time.process_time() - t0
            whiten = Scorer(model).whiten
            Zt = np.stack([whiten(x) for x in Xt])
            model, report = operating_point(model, Zt, args.k, ef, k_cand, legacy)
            scale = float(model.spec.params.lift_scale or 1.0)
            Ztr = scale * np.asarray(model.index.vector_store, dtype=np.float64)
            ex_wall, ex_cpu, truth = [], [], []
            for x in Xq[: args.exact_queries]:
                zq = scale * whiten(x).astype(np.float64)
                c, t = time.thread_time_ns(), time.perf_counter_ns()
                truth.append(exact_lorentz_topk(Ztr, zq, args.k))
                ex_wall.append((time.perf_counter_ns() - t) / 1e3)
                ex_cpu.append((time.thread_time_ns() - c) / 1e3)
            r = measure(model, Xq, Tq, np.stack(truth), args.threads)
            r["build_cpu_s"] = round(build_cpu_s, 1)
            r["lift_scale"] = round(scale, 4)
            if report is not None:
                r["tuned"] = [(s.ef_search, s.k_cand, round(s.recall, 4)) for s in report.history]
            r["exact_p50_us"] = round(pct(ex_wall, 50), 1)
            r["exact_cpu_p50_us"] = round(pct(ex_cpu, 50), 1)
            r["exact_over_pipeline_p50"] = round(pct(ex_wall, 50) / r["single_p50_us"], 1)
            r["exact_over_pipeline_cpu_p50"] = round(pct(ex_cpu, 50) / r["single_cpu_p50_us"], 1)
            results[name] = r
    result: dict[str, Any] = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "queries": args.queries,
        "threads": args.threads,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **results,
    }
    if "baseline" in results:
        s, b = results["served"], results["baseline"]
        result["served_over_baseline"] = {
            "batch_events_per_cpu_s": round(
                s["batch_1t_events_per_cpu_s"] / b["batch_1t_events_per_cpu_s"], 2
            ),
            "single_cpu_p50": round(s["single_cpu_p50_us"] / b["single_cpu_p50_us"], 2),
            "single_cpu_p99": round(s["single_cpu_p99_us"] / b["single_cpu_p99_us"], 2),
        }
    if args.json:
        print(json.dumps(result))
    else:
        _print(result, args)
    return result


def _print(result: dict[str, Any], args: argparse.Namespace) -> None:
    nt = args.threads
    print(
        f"core scoring, index {args.n} x {args.d}, K={args.k}, {args.queries} events; "
        f"load average {result['load_avg_1m'][0]} -> {result['load_avg_1m'][1]}"
    )
    for name in ("served", "baseline"):
        if name not in result:
            continue
        r = result[name]
        print(f"{name}: {r['metric']}, ef_search {r['ef_search']}, K_cand {r['k_cand']}")
        if "tuned" in r:
            print(f"  tuning steps (ef, K_cand, recall)   {r['tuned']}")
        print(f"  batch, us per event by stage        {r['batch_us_per_event']}")
        print(
            f"  single event p50 / p99, wall        {r['single_p50_us']} / {r['single_p99_us']} us"
        )
        print(
            f"  single event p50 / p99, CPU         {r['single_cpu_p50_us']} / "
            f"{r['single_cpu_p99_us']} us"
        )
        print(
            f"  batch, 1 thread                     {r['batch_1t_events_per_s']} events/s, "
            f"{r['batch_1t_events_per_cpu_s']} per CPU second"
        )
        print(
            f"  batch, {nt} threads                   {r[f'batch_{nt}t_events_per_s']} "
            f"events/s, {r[f'batch_{nt}t_events_per_cpu_s']} per CPU second"
        )
        print(
            f"  exact Lorentz k-NN p50, wall / CPU  {r['exact_p50_us']} / "
            f"{r['exact_cpu_p50_us']} us ({r['exact_over_pipeline_p50']}x / "
            f"{r['exact_over_pipeline_cpu_p50']}x the pipeline)"
        )
        print(f"  recall@{args.k} vs exact Lorentz        {r['recall_at_k_vs_exact_lorentz']}")
    if "served_over_baseline" in result:
        print(f"served / baseline                     {result['served_over_baseline']}")


if __name__ == "__main__":
    main()
