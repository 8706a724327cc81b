"""Purged K-fold evaluation of the analog model against exact search and simple baselines.

Per fold, everything fitted (whitening, lift scale, HNSW index, baselines) sees the training
fold only; the model lives in that fold's ``FoldArtifactDir`` (which refuses reuse for any
other training set), and test labels are read only to compute metrics after every
prediction is made. The folds are checked with ``no_information_overlap`` before anything
is fitted. Nothing is tuned: every hyper-parameter comes from the config.

What is measured on each test fold:

* the deployed scorer at degrade levels 0..3 (``Scorer.score_batch``);
* the re-rank ablation: the same HNSW candidates and the same kernels, neighbours chosen
  by (a) the Lorentz re-rank (the pipeline), (b) HNSW's L2 order (no re-rank), (c) exact
  brute-force Lorentz k-NN over the whole training fold (the ideal the ANN approximates);
* ANN accuracy: recall@K of the pipeline's top-K against the exact Lorentz top-K, with the
  same float32 vector store and lift scale, plus the candidate-stage recalls;
* baselines: logistic regression on the same features, momentum sign(logret_1), prior.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geodesic.lifecycle.baselines import LogisticRegression, MomentumRule, PriorRule
from geodesic.lifecycle.config import TrainConfig
from geodesic.lifecycle.dataset import LabeledDataset
from geodesic.lifecycle.reports import AnnAccuracy, FoldReport, OverallReport, SkillMetrics
from lorentzcore.ann import recall_at_k
from lorentzcore.hyperbolic import lorentz_distances_to_query
from lorentzcore.kernels import KernelConfig, kernel_weights, weighted_prob
from lorentzcore.metrics import expected_calibration_error, precision_at_k, roc_auc
from lorentzcore.model import AnalogModel, ScorerParams
from lorentzcore.scorer import Scorer
from lorentzcore.validation import (
    Fold,
    FoldArtifactDir,
    no_information_overlap,
    purged_kfold_splits,
)

__all__ = [
    "CrossValidation",
    "LeakageError",
    "Predictions",
    "auc_standard_error",
    "cross_validate",
    "exact_lorentz_topk",
    "kernel_config",
    "make_folds",
    "purge_horizon",
    "scorer_params",
    "skill_metrics",
]

log = logging.getLogger(__name__)

LEVELS = (0, 1, 2, 3)
ABLATION = ("lorentz_rerank", "hnsw_order", "exact_lorentz")
BASELINES = ("logistic", "momentum", "prior")


class LeakageError(RuntimeError):
    """The folds would let a training sample see test information."""


@dataclass
class Predictions:
    """One forecaster's outputs per sample: what the metrics need, nothing fitted."""

    prob: NDArray[np.float64]
    abstain: NDArray[np.bool_]
    score: NDArray[np.float64] | None = None  # ranking for AUC / precision@k (default prob)
    direction: NDArray[np.float64] | None = None  # called direction (default sign(prob-.5))
    side: NDArray[np.float64] | None = None  # traded side (default from the thresholds)


def kernel_config(cfg: TrainConfig) -> KernelConfig:
    return KernelConfig(
        rbf_length_scale=cfg.rbf_length_scale,
        period=cfg.period,
        periodic_length_scale=cfg.periodic_length_scale,
        weight_floor=cfg.weight_floor,
    )


def scorer_params(cfg: TrainConfig) -> ScorerParams:
    return ScorerParams(
        k=cfg.k,
        k_cand=cfg.k_cand,
        long_threshold=cfg.long_threshold,
        short_threshold=cfg.short_threshold,
    )


def purge_horizon(ds: LabeledDataset) -> int:
    """Bars from a sample's time to the end of its label window (h when calendars align).

    Computed from the data, not assumed: a symbol missing a day stretches its h-bar label
    over more calendar positions, and the purge must cover the longest stretch.
    """
    return int(np.max(ds.label_end - ds.times))


def make_folds(ds: LabeledDataset, cfg: TrainConfig) -> list[Fold]:
    """Purged, embargoed folds, refused unless ``no_information_overlap`` holds."""
    horizon = purge_horizon(ds)
    embargo = max(cfg.embargo, horizon)
    folds = purged_kfold_splits(ds.times, cfg.folds, embargo=embargo, horizon=horizon)
    if not no_information_overlap(folds, ds.times, horizon, embargo=embargo):
        raise LeakageError("purged folds overlap in information; refusing to evaluate")
    return folds


def _sides(prob: NDArray[np.float64], abstain: NDArray[np.bool_], cfg: TrainConfig) -> NDArray:
    side = np.where(prob >= cfg.long_threshold, 1.0, np.where(prob <= cfg.short_threshold, -1, 0))
    return np.where(abstain, 0.0, side)


def skill_metrics(
    pred: Predictions,
    labeled: NDArray[np.bool_],
    y: NDArray[np.float64],
    fwd: NDArray[np.float64],
    cfg: TrainConfig,
) -> SkillMetrics:
    """Metrics of one forecaster; see ``SkillMetrics`` for each definition."""
    n = pred.prob.shape[0]
    score = pred.prob if pred.score is None else pred.score
    direction = np.sign(pred.prob - 0.5) if pred.direction is None else pred.direction
    direction = np.where(pred.abstain, 0.0, direction)
    side = _sides(pred.prob, pred.abstain, cfg) if pred.side is None else pred.side
    yl = y[labeled]
    n_lab = int(labeled.sum())
    both = n_lab > 0 and 0 < yl.sum() < n_lab
    k = max(1, round(cfg.precision_top_fraction * n_lab)) if n_lab else 0
    auc = roc_auc(yl, score[labeled]) if both else None
    n_pos = int(yl.sum()) if n_lab else 0
    prec = precision_at_k(yl, score[labeled], k) if n_lab else None
    ece = expected_calibration_error(yl, pred.prob[labeled]) if n_lab else None
    calls = labeled & (direction != 0)
    hit = float(np.mean((direction[calls] > 0) == (y[calls] == 1))) if calls.any() else None
    traded = side != 0
    # Same markout as the risk supervisor: simple return in bp, signed, minus the cost.
    net = side[traded] * np.expm1(fwd[traded]) * 1e4 - cfg.data.cost_bp
    return SkillMetrics(
        n=n,
        n_labeled=n_lab,
        auc=auc,
        auc_se=None if auc is None else auc_standard_error(auc, n_pos, n_lab - n_pos),
        precision_at_k=prec,
        k=k,
        ece=ece,
        hit_rate=hit,
        n_calls=int(calls.sum()),
        abstain_rate=float(np.mean(pred.abstain)) if n else 0.0,
        n_traded=int(traded.sum()),
        coverage=float(np.mean(traded)) if n else 0.0,
        win_rate_net=float(np.mean(net > 0)) if net.size else None,
        mean_net_bp=float(np.mean(net)) if net.size else None,
    )


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982): SE of an AUC from n_pos positives and n_neg negatives."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


def exact_lorentz_topk(
    store: NDArray[np.float32], Zq: NDArray[np.float32], scale: float, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Brute-force Lorentz top-k over every stored vector, with the scorer's arithmetic.

    The scorer lifts ``store * float32(scale)`` and ``float64(z) * scale``; doing the same
    here makes a neighbour's distance identical in both, so recall measures the search only.
    Ties are broken by the smaller id.
    """
    S = np.ascontiguousarray(store * np.float32(scale)) if scale != 1.0 else np.asarray(store)
    n = S.shape[0]
    k = min(k, n)
    ids = np.empty((Zq.shape[0], k), dtype=np.int64)
    dists = np.empty((Zq.shape[0], k))
    for i in range(Zq.shape[0]):
        zq = Zq[i].astype(np.float64) * scale if scale != 1.0 else Zq[i].astype(np.float64)
        d = lorentz_distances_to_query(zq, S)
        part = np.argpartition(d, k - 1)[:k] if k < n else np.arange(n)
        order = part[np.lexsort((part, d[part]))]
        ids[i], dists[i] = order, d[order]
    return ids, dists


@dataclass
class _NeighbourStudy:
    ann: AnnAccuracy
    ablation: dict[str, Predictions]


def _neighbour_study(
    model: AnalogModel, Xq: NDArray[np.float64], Tq: NDArray[np.int64]
) -> _NeighbourStudy:
    """Exact vs approximate neighbours on the test queries, and the re-rank ablation."""
    params = model.spec.params
    kernel = model.spec.kernel
    k, k_cand = params.k, min(params.k_cand, model.index.count)
    k = min(k, model.index.count)
    scale = float(params.lift_scale or 1.0)
    Zq = model.whitener.transform(Xq.astype(np.float32))  # the scorer's float32 path
    cand_ids, _, Zn = model.index.search_with_vectors(Zq, k_cand)
    exact_ids, exact_d = exact_lorentz_topk(model.index.vector_store, Zq, scale, k)
    exact_l2, _ = model.index.exact_search(Zq, k)
    labels = model.labels.astype(np.float64)
    n = Xq.shape[0]
    probs = {name: np.empty(n) for name in ABLATION}
    abst = {name: np.empty(n, dtype=bool) for name in ABLATION}
    rerank_ids = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        zq = Zq[i].astype(np.float64) * scale
        d_all = lorentz_distances_to_query(zq, Zn[i] * np.float32(scale))
        sel = np.argsort(d_all, kind="stable")[:k]
        rerank_ids[i] = cand_ids[i, sel]
        choices = {
            "lorentz_rerank": (cand_ids[i, sel], d_all[sel]),
            "hnsw_order": (cand_ids[i, :k], d_all[:k]),
            "exact_lorentz": (exact_ids[i], exact_d[i]),
        }
        for name, (ids, d) in choices.items():
            tau = np.abs(int(Tq[i]) - model.times[ids])
            w = kernel_weights(d, tau, kernel)
            probs[name][i], _, abst[name][i] = weighted_prob(w, labels[ids], kernel.weight_floor)
    ann = AnnAccuracy(
        n_queries=n,
        k=k,
        k_cand=k_cand,
        ef_search=model.index.ef_search,
        pipeline_recall_vs_exact_lorentz=recall_at_k(rerank_ids, exact_ids),
        candidate_recall_l2=recall_at_k(cand_ids, exact_l2),
        candidate_recall_lorentz=recall_at_k(cand_ids, exact_ids),
        hnsw_topk_recall_vs_exact_lorentz=recall_at_k(cand_ids[:, :k], exact_ids),
    )
    return _NeighbourStudy(
        ann=ann,
        ablation={name: Predictions(probs[name], abst[name]) for name in ABLATION},
    )


def _baselines(
    ds: LabeledDataset, fit_idx: NDArray[np.int64], test_idx: NDArray[np.int64], y01: NDArray
) -> dict[str, Predictions]:
    Xtr, ytr = ds.X[fit_idx], y01[fit_idx]
    Xte = ds.X[test_idx]
    lr = LogisticRegression.fit(Xtr, ytr)
    p_lr = lr.predict_proba(Xte)
    r1 = ds.feature("logret_1")
    mom = MomentumRule.fit(r1[fit_idx], ytr)
    direction = mom.direction(r1[test_idx])
    prior = PriorRule.fit(ytr).predict_proba(len(test_idx))
    no_abstain = np.zeros(len(test_idx), dtype=bool)
    return {
        "logistic": Predictions(p_lr, no_abstain),
        # The rule itself ranks and trades: score and side are sign(logret_1); its
        # probability is the training fold's up rate after an up / down bar (for ECE).
        "momentum": Predictions(
            mom.predict_proba(r1[test_idx]),
            no_abstain,
            score=direction,
            direction=direction,
            side=direction,
        ),
        "prior": Predictions(prior, no_abstain),
    }


@dataclass
class CrossValidation:
    """Fold reports, the pooled summary and the out-of-fold predictions behind them."""

    folds: list[FoldReport]
    overall: OverallReport
    no_information_overlap: bool
    purge_horizon: int
    predictions: dict[str, Predictions] = field(default_factory=dict)


def _pool(parts: list[tuple[NDArray[np.int64], Predictions]], n: int) -> Predictions:
    """Out-of-fold arrays over all n samples (every sample is in exactly one test block)."""
    prob = np.full(n, np.nan)
    abstain = np.zeros(n, dtype=bool)
    optional: dict[str, NDArray[np.float64] | None] = {
        name: np.full(n, np.nan) if any(getattr(p, name) is not None for _, p in parts) else None
        for name in ("score", "direction", "side")
    }
    for idx, p in parts:
        prob[idx], abstain[idx] = p.prob, p.abstain
        for name, arr in optional.items():
            src = getattr(p, name)
            if arr is not None and src is not None:
                arr[idx] = src
    return Predictions(prob, abstain, **optional)


def cross_validate(
    ds: LabeledDataset, cfg: TrainConfig, fold_root: Path, run_id: str
) -> CrossValidation:
    """Evaluate ``cfg`` on ``ds`` by purged K-fold; fold artifacts go to fold_root/<fold_id>."""
    folds = make_folds(ds, cfg)
    overlap_ok = True  # make_folds raised otherwise
    labeled, y01 = ds.binary()
    kernel, params = kernel_config(cfg), scorer_params(cfg)
    reports: list[FoldReport] = []
    collected: dict[str, list[tuple[NDArray[np.int64], Predictions]]] = {}
    ann_parts: list[AnnAccuracy] = []
    fingerprints: set[str] = set()
    for fold in folds:
        t0 = time.perf_counter()
        fad = FoldArtifactDir.for_fold(fold_root, fold)
        if fad.train_fingerprint in fingerprints:
            raise LeakageError(f"fold {fold.fold_id} repeats another fold's training set")
        fingerprints.add(fad.train_fingerprint)
        fit_idx = fold.train_idx[labeled[fold.train_idx]]
        test = np.asarray(fold.test_idx)
        model = AnalogModel.fit(
            ds.X[fit_idx],
            y01[fit_idx],
            ds.times[fit_idx],
            directory=fad.file("model"),
            model_id=f"{run_id}.fold{fold.fold_id}",
            feature_names=ds.feature_names,
            schema_hash=ds.schema_hash,
            kernel=kernel,
            params=params,
            M=cfg.M,
            ef_construction=cfg.ef_construction,
            ef_search=cfg.ef_search,
            seed=cfg.seed,
        )
        t_fit = time.perf_counter()
        Xt, Tt = ds.X[test], ds.times[test]
        scorer = Scorer(model)
        preds: dict[str, Predictions] = {}
        for lvl in LEVELS:
            b = scorer.score_batch(Xt, Tt, level=lvl)
            preds[f"level_{lvl}"] = Predictions(b.prob_up, b.abstain)
        study = _neighbour_study(model, Xt, Tt)
        for name, p in study.ablation.items():
            preds[f"ablation_{name}"] = p
        for name, p in _baselines(ds, fit_idx, test, y01).items():
            preds[f"baseline_{name}"] = p
        t_score = time.perf_counter()

        lab, yt, ft = labeled[test], y01[test], ds.fwd[test]
        metrics = {name: skill_metrics(p, lab, yt, ft, cfg) for name, p in preds.items()}
        for name, p in preds.items():
            collected.setdefault(name, []).append((test, p))
        ann_parts.append(study.ann)
        reports.append(
            FoldReport(
                fold_id=fold.fold_id,
                artifact_dir=str(fad.path),
                train_fingerprint=fad.train_fingerprint,
                n_train=len(fold.train_idx),
                n_train_fit=len(fit_idx),
                n_purged=len(ds) - len(fold.train_idx) - len(test),
                n_test=len(test),
                test_first_time=int(Tt.min()),
                test_last_time=int(Tt.max()),
                test_first_date=str(ds.dates[test].min()),
                test_last_date=str(ds.dates[test].max()),
                lift_scale=float(model.spec.params.lift_scale or 1.0),
                model=metrics["level_0"],
                ladder={str(lvl): metrics[f"level_{lvl}"] for lvl in LEVELS},
                rerank_ablation={a: metrics[f"ablation_{a}"] for a in ABLATION},
                baselines={b: metrics[f"baseline_{b}"] for b in BASELINES},
                ann=study.ann,
                seconds={"fit": t_fit - t0, "score": t_score - t_fit},
            )
        )
        log.info(
            "fold %d: auc %s, ann accuracy %.4f (%.1fs)",
            fold.fold_id,
            metrics["level_0"].auc,
            study.ann.pipeline_recall_vs_exact_lorentz,
            t_score - t0,
        )

    pooled = {name: _pool(parts, len(ds)) for name, parts in collected.items()}
    om = {name: skill_metrics(p, labeled, y01, ds.fwd, cfg) for name, p in pooled.items()}
    fold_aucs = [r.model.auc for r in reports if r.model.auc is not None]
    overall = OverallReport(
        model=om["level_0"],
        ladder={str(lvl): om[f"level_{lvl}"] for lvl in LEVELS},
        rerank_ablation={a: om[f"ablation_{a}"] for a in ABLATION},
        baselines={b: om[f"baseline_{b}"] for b in BASELINES},
        ann=_pool_ann(ann_parts),
        fold_auc_mean=float(np.mean(fold_aucs)) if fold_aucs else None,
        fold_auc_std=float(np.std(fold_aucs)) if fold_aucs else None,
        fold_auc_min=float(np.min(fold_aucs)) if fold_aucs else None,
        rerank_lift_auc=_diff(om["ablation_lorentz_rerank"].auc, om["ablation_hnsw_order"].auc),
        rerank_lift_hit_rate=_diff(
            om["ablation_lorentz_rerank"].hit_rate, om["ablation_hnsw_order"].hit_rate
        ),
        ladder_lift_auc=_diff(om["level_0"].auc, om["level_3"].auc),
        ladder_lift_hit_rate=_diff(om["level_0"].hit_rate, om["level_3"].hit_rate),
    )
    return CrossValidation(reports, overall, overlap_ok, purge_horizon(ds), pooled)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _pool_ann(parts: list[AnnAccuracy]) -> AnnAccuracy:
    """Query-weighted means of the per-fold recalls (each fold's queries count once)."""
    n = np.array([p.n_queries for p in parts], dtype=np.float64)

    def mean(attr: str) -> float:
        return float(np.dot(n, [getattr(p, attr) for p in parts]) / n.sum())

    first = parts[0]
    return AnnAccuracy(
        n_queries=int(n.sum()),
        k=first.k,
        k_cand=first.k_cand,
        ef_search=first.ef_search,
        pipeline_recall_vs_exact_lorentz=mean("pipeline_recall_vs_exact_lorentz"),
        candidate_recall_l2=mean("candidate_recall_l2"),
        candidate_recall_lorentz=mean("candidate_recall_lorentz"),
        hnsw_topk_recall_vs_exact_lorentz=mean("hnsw_topk_recall_vs_exact_lorentz"),
    )
