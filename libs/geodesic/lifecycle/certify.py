"""Certification: the (ef_search, K_cand) sweep behind a model's ANN operating point.

For each grid point the deployed ``Scorer`` scores the same queries; we measure

* pipeline recall@K: its top-K (HNSW K_cand -> Lorentz re-rank) vs exact Lorentz top-K;
* candidate recall@K: HNSW's K_cand ids vs the exact top-K in the graph's own metric
  (squared L2 on z, or on a Lorentz-MIPS graph the exact Lorentz top-K): the quantity the
  live RecallTuner watches, so a point below target there would be bumped at once;
* latency per event (single-event ``Scorer.score``, whiten to prob_up): p50, p99,
  timed in interleaved rounds over the grid so background load is shared fairly.

The chosen point is the cheapest among those whose recalls hold the target and whose p99
is within the budget. "Hold": the lower confidence bound of the mean over the recall
queries (lorentzcore.ann.recall_lower_bound, 2 standard errors) meets the target, so a
point that only touches it on this sample is not chosen. "Cheapest": the smallest search
beam, then the fewest candidates. hnswlib searches with max(ef, K_cand), so points with
the same effective ef and K_cand are one configuration and are measured once, and the
work per event rises with that beam and with K_cand; the timed p50 says the same on an
idle machine, but on a shared one a few microseconds of noise decided between points of
very different cost, so it is reported and gates the budget but does not pick.

Queries: by default feature vectors of the bars after the model's training cutoff (label
free: recall and latency do not look at outcomes, so nothing about the forecast is tuned
on them); with no such bars, training-period vectors, which is optimistic (each query is
in the index) and is recorded as such.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from geodesic.lifecycle.config import CertifyConfig, DatasetConfig
from geodesic.lifecycle.evaluation import exact_lorentz_topk
from geodesic.lifecycle.offline_report import write_json
from geodesic.lifecycle.registry import load_manifest, load_verified, sign_model_dir
from geodesic.lifecycle.signing import SigningKey
from geodesic.lifecycle.training_data import feature_rows, holdout_series, training_series
from lorentzcore.ann import AnnIndex, recall_at_k, recall_lower_bound
from lorentzcore.hyperbolic import lorentz_distances_to_query
from lorentzcore.model import AnalogModel
from lorentzcore.scorer import Scorer

__all__ = [
    "CertifyResult",
    "OperatingPoint",
    "apply_operating_point",
    "certification_record",
    "certify_model",
    "certify_queries",
    "compare_candidate_stages",
    "render_certify_markdown",
    "search_work",
    "set_operating_point",
    "write_certify",
]

log = logging.getLogger(__name__)


class OperatingPoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    ef_search: int
    k_cand: int
    pipeline_recall: float
    candidate_recall_l2: float
    #: The recalls' lower confidence bounds (mean - 2 standard errors over the queries):
    #: what meets_recall compares with the target.
    pipeline_recall_lower: float
    candidate_recall_l2_lower: float
    p50_us: float
    p99_us: float
    mean_us: float
    meets_recall: bool
    meets_latency: bool
    pareto: bool = False


class StageRecall(BaseModel):
    """One candidate stage at one ef: its top-K before and after the Lorentz re-rank."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    metric: str
    ef_search: int
    k_cand: int
    #: HNSW's own top-K vs exact Lorentz top-K (what degrade level 3 serves).
    topk_recall: float
    #: K_cand candidates re-ranked by Lorentz distance, top-K vs exact Lorentz top-K.
    pipeline_recall: float
    served: bool  # the model's own index (the other one is built only for this comparison)


class CertifyResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model_id: str
    n_index: int
    k: int
    query_source: str
    n_recall_queries: int
    n_latency_queries: int
    config: dict[str, Any]
    points: list[OperatingPoint]
    chosen: OperatingPoint | None
    reason: str
    #: L2 vs Lorentz-MIPS candidate stages on the same store and queries, per ef.
    candidate_stages: list[StageRecall] = []


def certify_queries(
    data: DatasetConfig, warmup: int
) -> tuple[NDArray[np.float64], NDArray[np.int64], str]:
    """(X, T, source): post-cutoff feature rows, else training-period rows (see module)."""
    X, T = feature_rows(holdout_series(data, warmup), data)
    if len(X):
        return X, T, f"holdout bars on/after {data.cutoff}"
    X, T = feature_rows(training_series(data), data)
    return X, T, "training-period bars (optimistic: queries are in the index)"


def _with_k_cand(model: AnalogModel, k_cand: int) -> AnalogModel:
    params = model.spec.params.model_copy(update={"k_cand": k_cand})
    return dataclasses.replace(model, spec=model.spec.model_copy(update={"params": params}))


def _grid(model: AnalogModel, cfg: CertifyConfig) -> list[tuple[int, int]]:
    n, k = model.index.count, model.spec.params.k
    seen: set[tuple[int, int]] = set()
    out = []
    for m in cfg.k_cand_multiples:
        kc = min(n, m * k)
        for ef in cfg.ef_grid:
            point = (max(ef, kc), kc)  # hnswlib's effective beam width
            if point not in seen:
                seen.add(point)
                out.append(point)
    return sorted(out, key=lambda p: (p[1], p[0]))


def certify_model(
    model: AnalogModel,
    X: NDArray[np.float64],
    T: NDArray[np.int64],
    cfg: CertifyConfig | None = None,
    *,
    query_source: str = "given",
) -> CertifyResult:
    """Sweep the grid on ``model`` (its ef_search is restored afterwards)."""
    cfg = cfg or CertifyConfig()
    X = np.asarray(X, dtype=np.float64)
    T = np.asarray(T, dtype=np.int64)
    if len(X) == 0:
        raise ValueError("certify needs at least one query")
    rng = np.random.default_rng(cfg.seed)
    n_rec = min(cfg.recall_queries, len(X))
    rec_idx = np.sort(rng.choice(len(X), n_rec, replace=False))
    lat_idx = rng.choice(rec_idx, min(cfg.queries, n_rec), replace=False)
    Xr, Tr = X[rec_idx], T[rec_idx]
    k = min(model.spec.params.k, model.index.count)
    scale = float(model.spec.params.lift_scale or 1.0)
    whiten = Scorer(model).whiten  # feature mask + float32 path, exactly as served
    Zq = np.stack([whiten(x) for x in Xr])
    exact_lorentz, _ = exact_lorentz_topk(model.index.vector_store, Zq, scale, k)
    exact_l2, _ = model.index.exact_search(Zq, k)
    grid = _grid(model, cfg)
    scorers = {point: Scorer(_with_k_cand(model, point[1])) for point in grid}
    recalls: dict[tuple[int, int], tuple[float, float, float, float]] = {}
    timings: dict[tuple[int, int], list[NDArray[np.float64]]] = {point: [] for point in grid}
    original_ef = model.index.ef_search
    try:
        for point in grid:
            model.index.set_ef(point[0])
            batch = scorers[point].score_batch(Xr, Tr, level=0)
            cand, _ = model.index.search(Zq, point[1])
            recalls[point] = (
                recall_at_k(batch.neighbor_ids, exact_lorentz),
                recall_at_k(cand, exact_l2),
                recall_lower_bound(batch.neighbor_ids, exact_lorentz),
                recall_lower_bound(cand, exact_l2),
            )
        # Latency in interleaved rounds, so a burst of background load hits every point
        # alike instead of whichever one happened to be running.
        warm = max(1, cfg.warmup // cfg.rounds)
        for chunk in np.array_split(lat_idx, cfg.rounds):
            for point in grid:
                model.index.set_ef(point[0])
                timings[point].append(_latencies(scorers[point], X[chunk], T[chunk], warm))
    finally:
        model.index.set_ef(original_ef)
    points: list[OperatingPoint] = []
    for ef, kc in grid:
        lat = np.concatenate(timings[(ef, kc)])
        p_rec, c_rec, p_low, c_low = recalls[(ef, kc)]
        p99 = float(np.percentile(lat, 99))
        points.append(
            OperatingPoint(
                ef_search=ef,
                k_cand=kc,
                pipeline_recall=p_rec,
                candidate_recall_l2=c_rec,
                pipeline_recall_lower=p_low,
                candidate_recall_l2_lower=c_low,
                p50_us=float(np.percentile(lat, 50)),
                p99_us=p99,
                mean_us=float(np.mean(lat)),
                meets_recall=p_low >= cfg.target_recall and c_low >= cfg.target_recall,
                meets_latency=p99 <= cfg.latency_budget_ms * 1e3,
            )
        )
    points = _mark_pareto(points)
    ok = [p for p in points if p.meets_recall and p.meets_latency]
    chosen = min(ok, key=search_work) if ok else None
    if chosen is not None:
        reason = (
            f"smallest search beam, then K_cand, among {len(ok)} point(s) whose recall "
            f"lower bound >= {cfg.target_recall} and p99 <= {cfg.latency_budget_ms} ms"
        )
    elif any(p.meets_recall for p in points):
        reason = f"no point meets recall >= {cfg.target_recall} within {cfg.latency_budget_ms} ms"
    else:
        reason = f"no point reaches recall {cfg.target_recall} on this grid"
    return CertifyResult(
        model_id=model.spec.model_id,
        n_index=model.index.count,
        k=k,
        query_source=query_source,
        n_recall_queries=n_rec,
        n_latency_queries=len(lat_idx),
        config=cfg.model_dump(mode="json"),
        points=points,
        chosen=chosen,
        reason=reason,
        candidate_stages=compare_candidate_stages(model, Zq, exact_lorentz, cfg.ef_grid),
    )


def search_work(point: OperatingPoint) -> tuple[int, int]:
    """The order of work per event: hnswlib's beam max(ef, K_cand), then K_cand (the
    candidates gathered and re-ranked). Grid points already hold ef >= K_cand."""
    return (max(point.ef_search, point.k_cand), point.k_cand)


def compare_candidate_stages(
    model: AnalogModel,
    Zq: NDArray[np.float32],
    exact_lorentz: NDArray[np.int64],
    ef_grid: tuple[int, ...],
) -> list[StageRecall]:
    """Recall@K of both candidate stages (lorentzcore.ann) over the model's own store.

    The stage the model does not serve is built in a temporary directory with the same
    graph parameters and seed, so only the metric differs.
    """
    params = model.spec.params
    scale = float(params.lift_scale or 1.0)
    k, k_cand = min(params.k, model.index.count), min(params.k_cand, model.index.count)
    other = "l2" if model.index.metric == "lorentz_mips" else "lorentz_mips"
    alt = AnnIndex.build(
        np.asarray(model.index.vector_store),
        M=model.index.M,
        ef_construction=model.index.ef_construction,
        ef_search=model.index.ef_search,
        k_cand=k_cand,
        seed=model.index.seed,
        metric=other,
        lift_scale=scale,
    )
    out: list[StageRecall] = []
    for index, served in ((model.index, True), (alt, False)):
        original = index.ef_search
        try:
            for ef in ef_grid:
                index.set_ef(ef)
                ids, _, Zn = index.search_with_vectors(Zq, k_cand)
                rerank = np.empty((len(Zq), k), dtype=np.int64)
                for i in range(len(Zq)):
                    d = lorentz_distances_to_query(
                        Zq[i].astype(np.float64) * scale, Zn[i] * np.float32(scale)
                    )
                    rerank[i] = ids[i, np.argsort(d, kind="stable")[:k]]
                out.append(
                    StageRecall(
                        metric=index.metric,
                        ef_search=ef,
                        k_cand=k_cand,
                        topk_recall=recall_at_k(ids[:, :k], exact_lorentz),
                        pipeline_recall=recall_at_k(rerank, exact_lorentz),
                        served=served,
                    )
                )
        finally:
            index.set_ef(original)
    return out


def _latencies(
    scorer: Scorer, X: NDArray[np.float64], T: NDArray[np.int64], warmup: int
) -> NDArray[np.float64]:
    for i in range(min(warmup, len(X))):
        scorer.score(X[i], int(T[i]))
    out = np.empty(len(X))
    for i in range(len(X)):
        t0 = time.perf_counter_ns()
        scorer.score(X[i], int(T[i]))
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def _mark_pareto(points: list[OperatingPoint]) -> list[OperatingPoint]:
    """A point is Pareto-optimal when no other is at least as fast (p50, the cost the
    choice minimises) and as accurate (pipeline recall), and strictly better in one."""
    out = []
    for p in points:
        dominated = any(
            q.p50_us <= p.p50_us
            and q.pipeline_recall >= p.pipeline_recall
            and (q.p50_us < p.p50_us or q.pipeline_recall > p.pipeline_recall)
            for q in points
        )
        out.append(p.model_copy(update={"pareto": not dominated}))
    return out


def render_certify_markdown(result: CertifyResult) -> str:
    cfg = result.config
    lines = [
        f"# Certification: {result.model_id}",
        "",
        f"Index of {result.n_index} vectors, K = {result.k}; queries: {result.query_source} "
        f"({result.n_recall_queries} for recall, {result.n_latency_queries} timed one by one).",
        f"Target recall {cfg['target_recall']} (pipeline vs exact Lorentz and candidates vs "
        f"exact search in the index's metric, each as a lower bound: mean - 2 standard "
        f"errors), p99 budget {cfg['latency_budget_ms']} ms.",
        "",
        "| ef_search | K_cand | pipeline recall (lower bound) | candidate recall (L2) "
        "| p50 us | p99 us | meets | pareto | chosen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result.points:
        chosen = result.chosen is not None and (p.ef_search, p.k_cand) == (
            result.chosen.ef_search,
            result.chosen.k_cand,
        )
        meets = "yes" if p.meets_recall and p.meets_latency else "no"
        lines.append(
            f"| {p.ef_search} | {p.k_cand} | {p.pipeline_recall:.4f} "
            f"({p.pipeline_recall_lower:.4f}) | "
            f"{p.candidate_recall_l2:.4f} | {p.p50_us:.1f} | {p.p99_us:.1f} | {meets} "
            f"| {'*' if p.pareto else ''} | {'<==' if chosen else ''} |"
        )
    lines += ["", f"Decision: {result.reason}.", ""]
    if result.candidate_stages:
        lines += [
            "## Candidate stages (recall@K vs exact Lorentz k-NN, same store and queries)",
            "",
            "| metric | served | ef_search | K_cand | HNSW top-K recall | re-ranked recall |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c.metric} | {'yes' if c.served else 'no'} | {c.ef_search} | {c.k_cand} "
            f"| {c.topk_recall:.4f} | {c.pipeline_recall:.4f} |"
            for c in result.candidate_stages
        ]
        lines.append("")
    return "\n".join(lines)


def write_certify(result: CertifyResult, directory: Path) -> tuple[Path, Path]:
    """reports/<model_id>/certify.json and certify.md."""
    js = write_json(directory / "certify.json", result.model_dump(mode="json"))
    md = directory / "certify.md"
    md.write_text(render_certify_markdown(result))
    return js, md


def certification_record(result: CertifyResult) -> dict[str, Any]:
    """What the manifest keeps of a certification."""
    return {
        "chosen": None if result.chosen is None else result.chosen.model_dump(mode="json"),
        "reason": result.reason,
        "query_source": result.query_source,
        "target_recall": result.config["target_recall"],
        "latency_budget_ms": result.config["latency_budget_ms"],
    }


def set_operating_point(model: AnalogModel, ef_search: int, k_cand: int) -> AnalogModel:
    """Persist (ef_search, k_cand) in the model files (ann_meta.json, model.json)."""
    updated = model.with_operating_point(ef_search, k_cand)
    updated.save()
    return updated


def apply_operating_point(
    model_dir: Path, result: CertifyResult, key: SigningKey
) -> dict[str, Any]:
    """Write the chosen point into a registered model and re-sign its manifest.

    The model is rewritten in place: do it before the model is promoted to a live slot
    (a scorer that reloads mid-rewrite fails verification rather than loading a mix).
    """
    if result.chosen is None:
        raise ValueError(f"nothing to apply: {result.reason}")
    model = load_verified(model_dir, key=key)
    manifest = load_manifest(model_dir)
    set_operating_point(model, result.chosen.ef_search, result.chosen.k_cand)
    fields = {k: v for k, v in manifest.items() if k not in ("format", "files", "signing")}
    fields["certification"] = certification_record(result)
    params = fields.get("parameters", {})
    if isinstance(params, dict) and "ann" in params:
        params["ann"] = {
            **params["ann"],
            "ef_search": result.chosen.ef_search,
            "k_cand": result.chosen.k_cand,
        }
    return sign_model_dir(model_dir, fields, key)
