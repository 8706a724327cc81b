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
* baselines: logistic regression on the same features, sign(logret_1) with its direction
  fitted on the training fold (momentum or reversal), the prior, and plain Euclidean k-NN
  (the ablation of the geometry).

The honest figures (``honest_section``; definitions in ``lifecycle.statistics``): per-fold
mean AUC with a date-block permutation null, bootstrap bounds on the lift over each
baseline, Brier / log-loss skill against the prior, quantile reliability, trading with
costs on position changes, regimes, per symbol, and a deflated Sharpe ratio. The same
section is computed on the holdout (data on/after the cutoff), scored walk-forward by
``walk_forward_holdout``: at each step every model is refitted on the past only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geodesic.lifecycle import statistics as st
from geodesic.lifecycle.baselines import (
    EuclideanKNN,
    LogisticRegression,
    MomentumRule,
    PriorRule,
)
from geodesic.lifecycle.config import TrainConfig
from geodesic.lifecycle.offline_report import (
    AnnAccuracy,
    DeflatedSharpe,
    EvaluationSection,
    FoldReport,
    HonestMetrics,
    LiftBound,
    OverallReport,
    ReliabilityRow,
    SkillMetrics,
    TradingMetrics,
)
from geodesic.lifecycle.training_data import LabeledDataset, build_dataset
from geodesic.marketdata.datasets import load_source
from lorentzcore.ann import recall_at_k
from lorentzcore.hyperbolic import lorentz_distances_to_query
from lorentzcore.kernels import KernelConfig, kernel_weights, shrink_to_base_rate, weighted_prob
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
    "honest_section",
    "kernel_config",
    "make_folds",
    "purge_horizon",
    "scorer_params",
    "shrink_exclude_bars",
    "skill_metrics",
    "walk_forward_holdout",
]

log = logging.getLogger(__name__)

LEVELS = (0, 1, 2, 3)
ABLATION = ("lorentz_rerank", "hnsw_order", "exact_lorentz")
BASELINES = ("logistic", "momentum", "prior", "euclidean_knn")


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
        k_cand=cfg.candidate_count,
        long_threshold=cfg.long_threshold,
        short_threshold=cfg.short_threshold,
    )


def fit_analog(
    ds: LabeledDataset,
    idx: NDArray[np.int64] | NDArray[np.bool_],
    y01: NDArray[np.float64],
    cfg: TrainConfig,
    *,
    directory: Path,
    model_id: str,
    extra: dict[str, object] | None = None,
) -> AnalogModel:
    """The analog model on rows ``idx`` of ``ds``, configured from ``cfg``: one fit for CV
    folds, walk-forward holdout steps and the registered model alike."""
    return AnalogModel.fit(
        ds.X[idx],
        y01[idx],
        ds.times[idx],
        directory=directory,
        model_id=model_id,
        feature_names=ds.feature_names,
        schema_hash=ds.schema_hash,
        kernel=kernel_config(cfg),
        params=scorer_params(cfg),
        M=cfg.M,
        ef_construction=cfg.ef_construction,
        ef_search=cfg.ef_search,
        seed=cfg.seed,
        extra=extra,
        candidate_metric=cfg.candidate_stage,
        shrink_exclude_bars=shrink_exclude_bars(ds, cfg),
    )


def purge_horizon(ds: LabeledDataset) -> int:
    """Bars from a sample's time to the end of its label window (h when calendars align).

    Computed from the data, not assumed: a symbol missing a day stretches its h-bar label
    over more calendar positions, and the purge must cover the longest stretch.
    """
    return int(np.max(ds.label_end - ds.times))


def shrink_exclude_bars(ds: LabeledDataset, cfg: TrainConfig) -> int | None:
    """Bars around a training point excluded from its own vote when the shrinkage is
    fitted (None: no shrinkage): the purge window, so no neighbour shares its label."""
    return max(cfg.embargo, purge_horizon(ds)) if cfg.shrink_to_base_rate else None


def make_folds(ds: LabeledDataset, cfg: TrainConfig) -> list[Fold]:
    """Purged, embargoed folds, refused unless ``no_information_overlap`` holds."""
    horizon = purge_horizon(ds)
    embargo = max(cfg.embargo, horizon)
    folds = purged_kfold_splits(ds.times, cfg.folds, embargo=embargo, horizon=horizon)
    if not no_information_overlap(folds, ds.times, horizon, embargo=embargo):
        raise LeakageError("purged folds overlap in information; refusing to evaluate")
    return folds


def _sides(
    prob: NDArray[np.float64], abstain: NDArray[np.bool_], cfg: TrainConfig
) -> NDArray[np.float64]:
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
    scorer = Scorer(model)  # the scorer's own float32, feature-masked whitening, row by row
    Zq = np.stack([scorer.whiten(x) for x in Xq])
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
            p, eff, abst[name][i] = weighted_prob(w, labels[ids], kernel.weight_floor)
            if not abst[name][i] and params.base_rate is not None and params.prior_strength:
                p = shrink_to_base_rate(p, eff, params.base_rate, params.prior_strength)
            probs[name][i] = p
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
    ds: LabeledDataset,
    fit_idx: NDArray[np.int64],
    test_idx: NDArray[np.int64],
    y01: NDArray[np.float64],
    cfg: TrainConfig,
) -> tuple[dict[str, Predictions], str]:
    """Every baseline fitted on fit_idx, predicting test_idx; and the sign rule's fitted
    orientation ("momentum" or "reversal")."""
    Xtr, ytr = ds.X[fit_idx], y01[fit_idx]
    Xte = ds.X[test_idx]
    lr = LogisticRegression.fit(Xtr, ytr)
    p_lr = lr.predict_proba(Xte)
    r1 = ds.feature("logret_1")
    mom = MomentumRule.fit(r1[fit_idx], ytr)
    prior = PriorRule.fit(ytr).predict_proba(len(test_idx))
    knn = EuclideanKNN.fit(
        Xtr,
        ytr,
        cfg.k,
        times=ds.times[fit_idx],
        exclude_bars=shrink_exclude_bars(ds, cfg),
        seed=cfg.seed,
    ).predict_proba(Xte)
    no_abstain = np.zeros(len(test_idx), dtype=bool)
    return {
        "logistic": Predictions(p_lr, no_abstain),
        # Its probability P(up | sign of logret_1) ranks in the fitted orientation; it
        # trades that orientation's direction.
        "momentum": Predictions(
            mom.predict_proba(r1[test_idx]),
            no_abstain,
            direction=mom.direction(r1[test_idx]),
            side=mom.direction(r1[test_idx]),
        ),
        "prior": Predictions(prior, no_abstain),
        "euclidean_knn": Predictions(knn, no_abstain),
    }, mom.name


@dataclass(frozen=True)
class EvalArrays:
    """The per-sample context of an evaluation section (aligned with the predictions)."""

    labeled: NDArray[np.bool_]
    y: NDArray[np.float64]
    fwd: NDArray[np.float64]
    times: NDArray[np.int64]
    symbols: NDArray[np.str_]
    dates: NDArray[np.datetime64]
    rvol: NDArray[np.float64]

    @classmethod
    def of(cls, ds: LabeledDataset, idx: NDArray[np.int64] | None = None) -> EvalArrays:
        labeled, y01 = ds.binary()
        sel = slice(None) if idx is None else idx
        rvol = ds.feature("rvol_20") if "rvol_20" in ds.feature_names else ds.fwd * 0
        return cls(
            labeled[sel],
            y01[sel],
            ds.fwd[sel],
            ds.times[sel],
            ds.symbols[sel],
            ds.dates[sel],
            rvol[sel],
        )


def _direction(p: Predictions) -> NDArray[np.float64]:
    d = np.sign(p.prob - 0.5) if p.direction is None else p.direction
    return np.where(p.abstain, 0.0, d)


def _score_of(p: Predictions) -> NDArray[np.float64]:
    return p.prob if p.score is None else p.score


def _trading(ts: st.TradingSeries, cfg: TrainConfig) -> TradingMetrics:
    net = ts.net_bp(cfg.data.cost_bp)
    return TradingMetrics(
        periods=int(ts.gross_bp.shape[0]),
        periods_per_year=float(ts.periods_per_year),
        exposure=ts.exposure,
        turnover=float(np.mean(ts.turnover)) if ts.turnover.size else 0.0,
        mean_gross_bp=float(np.mean(ts.gross_bp)) if ts.gross_bp.size else 0.0,
        sharpe_gross=ts.sharpe(0.0),
        sharpe_net=ts.sharpe(cfg.data.cost_bp),
        mean_net_bp=float(np.mean(net)) if net.size else 0.0,
        cost_sensitivity={f"{c:g}": ts.sharpe(c) for c in cfg.cost_grid_bp},
    )


def _regime_labels(ev: EvalArrays) -> dict[str, NDArray[np.str_]]:
    cuts = np.quantile(ev.rvol, [1 / 3, 2 / 3]) if ev.rvol.size else np.zeros(2)
    tercile = np.searchsorted(cuts, ev.rvol, side="right")
    names = np.array(["low", "mid", "high"])
    return {
        "vol_tercile": names[tercile],
        "year": ev.dates.astype("datetime64[Y]").astype(str),
        "symbol": ev.symbols.astype(str),
    }


def honest_section(
    kind: str,
    preds: dict[str, Predictions],
    groups: NDArray[np.int64],
    ev: EvalArrays,
    cfg: TrainConfig,
    *,
    orientation: list[str] | None = None,
    extra_trials: dict[str, Predictions] | None = None,
) -> EvaluationSection:
    """The honest figures of ``preds`` ("analog" and BASELINES) over samples in ``groups``."""
    y, lab = ev.y, ev.labeled
    blocks = st.block_ids(ev.times, groups, cfg.block_bars)
    scores = {n: _score_of(p) for n, p in preds.items()}
    null = st.block_permutation_null(y, scores, groups, lab, blocks, cfg.n_permutations, cfg.seed)
    yl = y[lab]
    prior_p = preds["prior"].prob[lab]
    b_prior = st.brier(yl, prior_p) if yl.size else None
    ll_prior = st.log_loss(yl, prior_p) if yl.size else None
    out: dict[str, HonestMetrics] = {}
    series: dict[str, st.TradingSeries] = {}
    for name, p in preds.items():
        mean, per = st.group_mean_auc(y, scores[name], groups, lab)
        nd = null[name][np.isfinite(null[name])]
        pl = p.prob[lab]
        b = st.brier(yl, pl) if yl.size else None
        ll = st.log_loss(yl, pl) if yl.size else None
        rel = st.reliability_bins(yl, pl, cfg.reliability_bins)
        d = _direction(p)
        calls = lab & (d != 0)
        ts = st.trading_series(d, ev.fwd, ev.symbols, ev.times, ev.dates)
        series[name] = ts
        out[name] = HonestMetrics(
            auc_mean=mean,
            group_aucs=per,
            null_p=st.null_p_value(mean, null[name]),
            null_mean=float(np.mean(nd)) if nd.size else None,
            null_std=float(np.std(nd)) if nd.size else None,
            brier=b,
            brier_skill=None if b is None or not b_prior else 1.0 - b / b_prior,
            log_loss=ll,
            log_loss_skill=None if ll is None or not ll_prior else 1.0 - ll / ll_prior,
            ece_quantile=st.quantile_ece(rel),
            hit_rate=float(np.mean((d[calls] > 0) == (y[calls] == 1))) if calls.any() else None,
            trading=_trading(ts, cfg),
            orientation=list(orientation or []) if name == "momentum" else [],
        )
    lifts = {}
    for i, baseline in enumerate(BASELINES):
        boot = st.paired_block_bootstrap_lift(
            y,
            scores["analog"],
            scores[baseline],
            groups,
            lab,
            blocks,
            cfg.n_bootstrap,
            cfg.seed + i,
        )
        a_m, b_m = out["analog"].auc_mean, out[baseline].auc_mean
        finite = boot[np.isfinite(boot)]
        lifts[baseline] = LiftBound(
            lift=None if a_m is None or b_m is None else a_m - b_m,
            lower=float(np.quantile(finite, cfg.bound_quantile)) if finite.size else None,
            quantile=cfg.bound_quantile,
        )
    rel = st.reliability_bins(yl, preds["analog"].prob[lab], cfg.reliability_bins)
    regimes: dict[str, dict[str, dict[str, float | None]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for rk, labels in _regime_labels(ev).items():
        regimes[rk], counts[rk] = {}, {}
        for value in np.unique(labels):
            m = labels == value
            counts[rk][str(value)] = int(np.sum(m & lab))
            regimes[rk][str(value)] = {
                n: st.group_mean_auc(y, scores[n], groups, lab & m)[0] for n in preds
            }
    # Deflated Sharpe: every forecaster evaluated here is a configuration tried.
    trial_series = dict(series)
    for name, p in (extra_trials or {}).items():
        trial_series[name] = st.trading_series(
            _direction(p), ev.fwd, ev.symbols, ev.times, ev.dates
        )
    trial_srs = np.array(
        [
            np.nan if (v := s.sharpe(cfg.data.cost_bp, annualised=False)) is None else v
            for s in trial_series.values()
        ]
    )
    net = series["analog"].net_bp(cfg.data.cost_bp)
    sr = series["analog"].sharpe(cfg.data.cost_bp, annualised=False)
    if sr is not None and net.size > 3 and np.std(net) > 0:
        z = (net - net.mean()) / net.std()
        skew, kurt = float(np.mean(z**3)), float(np.mean(z**4))
        dsr, sr0 = st.deflated_sharpe(
            sr, net.size, skew, kurt, trial_srs, len(trial_series) + cfg.prior_trials
        )
    else:
        dsr, sr0 = None, 0.0
    return EvaluationSection(
        kind=kind,
        n_samples=int(y.shape[0]),
        n_groups=int(np.unique(groups).shape[0]),
        first_date=str(ev.dates.min()) if ev.dates.size else None,
        last_date=str(ev.dates.max()) if ev.dates.size else None,
        block_bars=cfg.block_bars,
        n_permutations=cfg.n_permutations,
        forecasters=out,
        lift_vs_baselines=lifts,
        reliability=[ReliabilityRow(**vars(r)) for r in rel],
        regimes=regimes,
        regime_counts=counts,
        deflated_sharpe=DeflatedSharpe(
            sharpe_per_period=sr,
            sr0=float(sr0),
            n_trials=len(trial_series) + cfg.prior_trials,
            n_obs=int(net.size),
            dsr=dsr,
        ),
    )


def walk_forward_holdout(
    train_ds: LabeledDataset, cfg: TrainConfig, out_dir: Path, run_id: str
) -> EvaluationSection | None:
    """Score the data on/after the cutoff, retraining on the past only at each step.

    Step j covers holdout bar times [a_j, a_j + holdout_step_bars); its models are fitted
    on every sample from the training period's start whose label window ended before a_j
    (no purge needed: nothing fitted sees a label that is not yet known at a_j).
    """
    dc = cfg.data
    if not cfg.walk_forward_holdout or dc.cutoff is None:
        return None
    full_cfg = dc.model_copy(update={"cutoff": None, "max_bars": None})
    series = [load_source(n, synthetic_bars=dc.synthetic_bars, seed=dc.seed) for n in dc.datasets]
    full = build_dataset(series, full_cfg)
    cut = np.datetime64(dc.cutoff, "D")
    hold = np.flatnonzero(full.dates >= cut)
    if hold.size == 0:
        return None
    labeled, y01 = full.binary()
    first_train = train_ds.dates.min()
    t0 = int(full.times[hold].min())
    step = cfg.holdout_step_bars
    groups = (full.times[hold] - t0) // step
    parts: dict[str, list[tuple[NDArray[np.int64], Predictions]]] = {}
    orientation: list[str] = []
    for j in np.unique(groups):
        test = hold[groups == j]
        a = t0 + int(j) * step
        fit_idx = np.flatnonzero(labeled & (full.dates >= first_train) & (full.label_end < a))
        model = fit_analog(
            full,
            fit_idx,
            y01,
            cfg,
            directory=out_dir / f"step{int(j)}" / "model",
            model_id=f"{run_id}.holdout{int(j)}",
        )
        b = Scorer(model).score_batch(full.X[test], full.times[test], level=0)
        parts.setdefault("analog", []).append((test, Predictions(b.prob_up, b.abstain)))
        base, orient = _baselines(full, fit_idx, test, y01, cfg)
        orientation.append(orient)
        for name, p in base.items():
            parts.setdefault(name, []).append((test, p))
        log.info("holdout step %d: %d train, %d test", int(j), fit_idx.size, test.size)
    n = len(full)
    preds = {name: _subset(_pool(ps, n), hold) for name, ps in parts.items()}
    return honest_section(
        "holdout",
        preds,
        groups.astype(np.int64),
        EvalArrays.of(full, hold),
        cfg,
        orientation=orientation,
    )


def _subset(p: Predictions, idx: NDArray[np.int64]) -> Predictions:
    def take(a: NDArray[np.float64] | None) -> NDArray[np.float64] | None:
        return None if a is None else a[idx]

    return Predictions(p.prob[idx], p.abstain[idx], take(p.score), take(p.direction), take(p.side))


@dataclass
class CrossValidation:
    """Fold reports, the pooled summary and the out-of-fold predictions behind them."""

    folds: list[FoldReport]
    overall: OverallReport
    no_information_overlap: bool
    purge_horizon: int
    predictions: dict[str, Predictions] = field(default_factory=dict)
    honest: EvaluationSection | None = None


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
    reports: list[FoldReport] = []
    collected: dict[str, list[tuple[NDArray[np.int64], Predictions]]] = {}
    ann_parts: list[AnnAccuracy] = []
    fingerprints: set[str] = set()
    groups = np.full(len(ds), -1, dtype=np.int64)
    orientation: list[str] = []
    for fold in folds:
        t0 = time.perf_counter()
        fad = FoldArtifactDir.for_fold(fold_root, fold)
        if fad.train_fingerprint in fingerprints:
            raise LeakageError(f"fold {fold.fold_id} repeats another fold's training set")
        fingerprints.add(fad.train_fingerprint)
        fit_idx = fold.train_idx[labeled[fold.train_idx]]
        test = np.asarray(fold.test_idx)
        model = fit_analog(
            ds,
            fit_idx,
            y01,
            cfg,
            directory=fad.file("model"),
            model_id=f"{run_id}.fold{fold.fold_id}",
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
        base, orient = _baselines(ds, fit_idx, test, y01, cfg)
        orientation.append(orient)
        groups[test] = fold.fold_id
        for name, p in base.items():
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
    honest_preds = {"analog": pooled["level_0"]}
    honest_preds.update({b: pooled[f"baseline_{b}"] for b in BASELINES})
    trials = {k: v for k, v in pooled.items() if k != "level_0" and not k.startswith("baseline_")}
    honest = honest_section(
        "cv",
        honest_preds,
        groups,
        EvalArrays.of(ds),
        cfg,
        orientation=orientation,
        extra_trials=trials,
    )
    return CrossValidation(reports, overall, overlap_ok, purge_horizon(ds), pooled, honest)


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
