"""`geodesic train` / `geodesic evaluate` as functions: evaluate, fit, certify, sign, register.

train = purged K-fold evaluation (reports/<id>/folds/<fold_id>, one artifact dir per fold)
      -> final model on all training samples, built in a private staging directory
      -> drift reference of the training features
      -> certification sweep; the chosen (ef_search, K_cand) is written into the model
      -> offline gates on the out-of-fold report
      -> manifest (+ gate results) signed, directory renamed to <registry>/<model_id>
      -> reports/<model_id>/offline_report.{json,md} and certify.{json,md}.
A failure anywhere leaves no model under the id. Registering is not promoting: a model
that fails a gate is still registered (so it can be inspected) but carries the failure in
its signed manifest, which promotion checks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from geodesic.contracts.model_registry import DEFAULT_MODEL_REGISTRY
from geodesic.features.compute import WARMUP_BARS
from geodesic.lifecycle.certify import (
    CertifyResult,
    certification_record,
    certify_model,
    certify_queries,
    set_operating_point,
    write_certify,
)
from geodesic.lifecycle.config import (
    DEFAULT_REPORTS_ROOT,
    CertifyConfig,
    GateThresholds,
    TrainConfig,
)
from geodesic.lifecycle.drift import DRIFT_FILE, drift_reference
from geodesic.lifecycle.evaluation import (
    CrossValidation,
    cross_validate,
    fit_analog,
    walk_forward_holdout,
)
from geodesic.lifecycle.model_card import MODEL_CARD, render_model_card
from geodesic.lifecycle.offline_gates import GateResult, offline_gates
from geodesic.lifecycle.offline_report import (
    DatasetSummary,
    EvaluationSection,
    GateRecord,
    OfflineReport,
    write_json,
    write_report,
)
from geodesic.lifecycle.registry import (
    dev_key_path_for_registry,
    discard,
    publish,
    sign_model_dir,
    staging_dir,
)
from geodesic.lifecycle.signing import SigningKey, resolve_signing_key
from geodesic.lifecycle.training_data import LabeledDataset, load_training_dataset
from lorentzcore.model import AnalogModel
from lorentzcore.scorer import Scorer

__all__ = [
    "TrainResult",
    "default_model_id",
    "describe",
    "evaluate",
    "excluded_features",
    "manifest_fields",
    "offline_report",
    "train",
]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_id: str
    model_dir: Path | None  # None for an evaluation-only run
    report: OfflineReport
    report_paths: tuple[Path, Path]
    gates: list[GateResult]
    certify: CertifyResult | None
    seconds: float


def default_model_id(cfg: TrainConfig, prefix: str = "analog") -> str:
    """<prefix>-<UTC time>-<config digest>: sortable, unique per second and per config."""
    digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:6]
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{digest}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def offline_report(
    run_id: str,
    ds: LabeledDataset,
    cfg: TrainConfig,
    cv: CrossValidation,
    seconds: dict[str, float],
    final_model: dict[str, Any] | None = None,
    holdout: EvaluationSection | None = None,
) -> OfflineReport:
    return OfflineReport(
        model_id=run_id,
        created_at=_now(),
        schema_hash=ds.schema_hash,
        feature_names=ds.feature_names,
        config=cfg.model_dump(mode="json"),
        dataset=DatasetSummary(**ds.summary(), purge_horizon=cv.purge_horizon),
        folds=cv.folds,
        overall=cv.overall,
        no_information_overlap=cv.no_information_overlap,
        cv=cv.honest,
        holdout=holdout,
        final_model=final_model or {},
        seconds=seconds,
    )


def _with_gates(report: OfflineReport, gates: list[GateResult]) -> OfflineReport:
    records = [GateRecord(**g.as_dict()) for g in gates]
    return report.model_copy(update={"gates": records})


def evaluate(
    cfg: TrainConfig,
    *,
    run_id: str | None = None,
    reports_root: Path = DEFAULT_REPORTS_ROOT,
    thresholds: GateThresholds | None = None,
) -> TrainResult:
    """Purged K-fold evaluation only (no final model, nothing registered)."""
    t0 = time.perf_counter()
    run_id = run_id or default_model_id(cfg, prefix="eval")
    out = Path(reports_root) / run_id
    ds = load_training_dataset(cfg.data)
    t_data = time.perf_counter()
    cv = cross_validate(ds, cfg, out / "folds", run_id)
    t_cv = time.perf_counter()
    holdout = walk_forward_holdout(ds, cfg, out / "holdout", run_id)
    t_hold = time.perf_counter()
    seconds = {
        "dataset": t_data - t0,
        "cross_validation": t_cv - t_data,
        "holdout_walk_forward": t_hold - t_cv,
    }
    report = offline_report(run_id, ds, cfg, cv, seconds, holdout=holdout)
    gates = offline_gates(report, thresholds)
    report = _with_gates(report, gates)
    paths = write_report(report, out)
    return TrainResult(run_id, None, report, paths, gates, None, time.perf_counter() - t0)


def excluded_features(model: AnalogModel) -> list[dict[str, str]]:
    """Features the model does not use, and why (the manifest's ``excluded_features``)."""
    mask = model.spec.feature_mask
    if mask is None:
        return []
    return [
        {"name": name, "reason": "no information in training (constant column)"}
        for name, used in zip(model.spec.feature_names, mask, strict=True)
        if not used
    ]


def _monitoring_features(ds: LabeledDataset, cfg: TrainConfig) -> np.ndarray:
    """The training features as the drift monitor should expect them live.

    Identical to ds.X except the spread column of a "constant"-spread data set: the model
    ignores that column, but live bars carry the replay's jittered quotes, so the drift
    reference takes its spread from the replay model (same bars, same seed).
    """
    if cfg.data.spread_model != "constant" or "spread_bp" not in ds.feature_names:
        return ds.X
    live = load_training_dataset(cfg.data.model_copy(update={"spread_model": "replay"}))
    j = ds.feature_names.index("spread_bp")
    X = ds.X.copy()
    X[:, j] = live.X[:, j]
    return X


def manifest_fields(
    model: AnalogModel,
    cfg: TrainConfig,
    report: OfflineReport,
    thresholds: GateThresholds,
    certification: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything the manifest says about a model besides its files and signature."""
    o = report.overall
    spec = model.spec
    return {
        "model_id": spec.model_id,
        "created_at": report.created_at,
        "schema_hash": spec.schema_hash,
        "feature_names": list(spec.feature_names),
        "excluded_features": excluded_features(model),
        "thresholds": {
            "long": spec.params.long_threshold,
            "short": spec.params.short_threshold,
        },
        "parameters": {
            "kernel": spec.kernel.model_dump(mode="json"),
            "scorer": spec.params.model_dump(mode="json"),
            "ann": {
                "M": model.index.M,
                "ef_construction": model.index.ef_construction,
                "ef_search": model.index.ef_search,
                "k_cand": spec.params.k_cand,
                "seed": cfg.seed,
            },
            "train": cfg.model_dump(mode="json"),
            "gate_thresholds": thresholds.model_dump(mode="json"),
        },
        "training": {
            "n_train": spec.n_train,
            "dataset": report.dataset.model_dump(mode="json"),
        },
        "fold_report": {
            "overall": {
                "auc": o.model.auc,
                "precision_at_k": o.model.precision_at_k,
                "ece": o.model.ece,
                "hit_rate": o.model.hit_rate,
                "abstain_rate": o.model.abstain_rate,
                "win_rate_net": o.model.win_rate_net,
                "baselines": {
                    name: {"auc": m.auc, "hit_rate": m.hit_rate, "ece": m.ece}
                    for name, m in o.baselines.items()
                },
                "ann_accuracy": o.ann.pipeline_recall_vs_exact_lorentz,
                "candidate_recall_l2": o.ann.candidate_recall_l2,
                "rerank_lift_auc": o.rerank_lift_auc,
                "ladder_lift_auc": o.ladder_lift_auc,
                "fold_auc_mean": o.fold_auc_mean,
                "fold_auc_min": o.fold_auc_min,
            },
            "folds": [
                {
                    "fold_id": f.fold_id,
                    "test_first_date": f.test_first_date,
                    "test_last_date": f.test_last_date,
                    "n_train": f.n_train_fit,
                    "n_test": f.n_test,
                    "auc": f.model.auc,
                    "hit_rate": f.model.hit_rate,
                    "ece": f.model.ece,
                    "logistic_auc": f.baselines["logistic"].auc,
                    "ann_accuracy": f.ann.pipeline_recall_vs_exact_lorentz,
                    "train_fingerprint": f.train_fingerprint,
                }
                for f in report.folds
            ],
        },
        "honest": {
            sec.kind: {
                name: {
                    "auc_mean": m.auc_mean,
                    "null_p": m.null_p,
                    "brier_skill": m.brier_skill,
                    "ece_quantile": m.ece_quantile,
                    "sharpe_net": m.trading.sharpe_net,
                }
                for name, m in sec.forecasters.items()
            }
            for sec in (report.cv, report.holdout)
            if sec is not None
        },
        "gates": [g.model_dump(mode="json") for g in report.gates],
        "gates_passed": all(g.passed for g in report.gates),
        "certification": certification,
        "drift_reference": DRIFT_FILE,
    }


def train(
    cfg: TrainConfig,
    *,
    model_id: str | None = None,
    registry_root: Path = DEFAULT_MODEL_REGISTRY,
    reports_root: Path = DEFAULT_REPORTS_ROOT,
    thresholds: GateThresholds | None = None,
    certify: CertifyConfig | None = None,
    run_certify: bool = True,
    key: SigningKey | None = None,
) -> TrainResult:
    """Evaluate, fit the final model on all training samples, certify, sign and register."""
    t0 = time.perf_counter()
    thresholds = thresholds or GateThresholds()
    registry_root = Path(registry_root)
    model_id = model_id or default_model_id(cfg)
    # Resolve the key and claim a staging dir first: fail in a second, not after the CV.
    key = key or resolve_signing_key(dev_key_path_for_registry(registry_root), create=True)
    staging = staging_dir(registry_root, model_id)
    out = Path(reports_root) / model_id
    try:
        ds = load_training_dataset(cfg.data)
        t_data = time.perf_counter()
        cv = cross_validate(ds, cfg, out / "folds", model_id)
        holdout = walk_forward_holdout(ds, cfg, out / "holdout", model_id)
        t_cv = time.perf_counter()

        labeled, y01 = ds.binary()
        model = fit_analog(
            ds,
            labeled,
            y01,
            cfg,
            directory=staging,
            model_id=model_id,
            extra={"lifecycle": "geodesic.lifecycle/1", "bar_offset": cfg.data.bar_offset},
        )
        scorer = Scorer(model)
        radius = np.linalg.norm(np.stack([scorer.whiten(x) for x in ds.X]), axis=1)
        write_json(
            staging / DRIFT_FILE,
            drift_reference(
                _monitoring_features(ds, cfg), ds.feature_names, whitened_radius=radius
            ),
        )
        t_fit = time.perf_counter()

        cert: CertifyResult | None = None
        certification: dict[str, Any] | None = None
        if run_certify:
            X, T, source = certify_queries(cfg.data, WARMUP_BARS)
            cert = certify_model(model, X, T, certify, query_source=source)
            certification = certification_record(cert)
            if cert.chosen is not None:
                model = set_operating_point(model, cert.chosen.ef_search, cert.chosen.k_cand)
            else:
                log.warning("certification chose no operating point: %s", cert.reason)
            write_certify(cert, out)
        t_cert = time.perf_counter()

        final = {
            "n_train": model.spec.n_train,
            "lift_scale": model.spec.params.lift_scale,
            "ef_search": model.index.ef_search,
            "k_cand": model.spec.params.k_cand,
            "k": model.spec.params.k,
            "registry_dir": str(registry_root / model_id),
        }
        seconds = {
            "dataset": t_data - t0,
            "cross_validation": t_cv - t_data,
            "final_fit": t_fit - t_cv,
            "certify": t_cert - t_fit,
        }
        report = offline_report(model_id, ds, cfg, cv, seconds, final, holdout)
        gates = offline_gates(report, thresholds)
        report = _with_gates(report, gates)
        fields = manifest_fields(model, cfg, report, thresholds, certification)
        # the card is one of the signed files: it cannot drift from the model it describes
        card = render_model_card(report, fields)
        (staging / MODEL_CARD).write_text(card)
        sign_model_dir(staging, {**fields, "model_card": MODEL_CARD}, key)
        model_dir = publish(staging, registry_root, model_id, key)
    except BaseException:
        discard(staging)
        raise
    total = time.perf_counter() - t0
    report = report.model_copy(update={"seconds": {**report.seconds, "total": total}})
    paths = write_report(report, out)
    (out / MODEL_CARD).write_text(card)
    log.info("registered %s in %.1fs (gates %s)", model_id, total, [str(g) for g in gates])
    return TrainResult(model_id, model_dir, report, paths, gates, cert, total)


def describe(result: TrainResult) -> str:
    """A few lines for the terminal."""
    o = result.report.overall
    lines = [
        f"model {result.model_id}" + (f" -> {result.model_dir}" if result.model_dir else ""),
        *(
            f"  {sec.kind}: "
            + "; ".join(
                f"{n} AUC {_fmt(m.auc_mean, 4)} p {_fmt(m.null_p)} BSS {_fmt(m.brier_skill, 4)}"
                for n, m in sec.forecasters.items()
            )
            for sec in (result.report.cv, result.report.holdout)
            if sec is not None
        ),
        f"  pooled AUC {_fmt(o.model.auc)} (logistic {_fmt(o.baselines['logistic'].auc)}, momentum "
        f"{_fmt(o.baselines['momentum'].auc)}); hit rate {_fmt(o.model.hit_rate)}; "
        f"ECE {_fmt(o.model.ece)}",
        f"  ANN accuracy vs exact Lorentz {_fmt(o.ann.pipeline_recall_vs_exact_lorentz, 4)}; "
        f"re-rank lift AUC {_fmt(o.rerank_lift_auc, 4)}",
        *(f"  {g}" for g in result.gates),
        f"  report: {result.report_paths[1]}",
        f"  took {result.seconds:.1f}s",
    ]
    if result.certify is not None:
        chosen = result.certify.chosen
        lines.insert(
            -2,
            "  certified: "
            + (
                f"ef_search {chosen.ef_search}, K_cand {chosen.k_cand}, recall "
                f"{chosen.pipeline_recall:.4f}, p99 {chosen.p99_us:.0f} us"
                if chosen
                else result.certify.reason
            ),
        )
    return "\n".join(lines)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
