"""The offline report: typed sections (JSON on disk) and a markdown rendering for people.

Models are frozen, reject unknown fields and refuse NaN/inf, so a report that loads is
complete and finite; a metric that is undefined (e.g. AUC of a one-class fold) is None.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnnAccuracy",
    "DatasetSummary",
    "FoldReport",
    "GateRecord",
    "OfflineReport",
    "OverallReport",
    "SkillMetrics",
    "load_report",
    "render_markdown",
    "write_json",
    "write_report",
]

REPORT_FORMAT = "geodesic.offline_report/1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SkillMetrics(_Frozen):
    """Skill of one forecaster on one set of test samples.

    auc / precision_at_k / ece use the samples with a 0/1 label; hit_rate is the accuracy
    of the called direction among them (abstentions and prob == 0.5 are no call); the net
    win rate covers every traded sample (|prob - 0.5| past the thresholds), band samples
    included, with the markout net of the cost exactly as the risk supervisor labels it.
    """

    n: int
    n_labeled: int
    auc: float | None
    #: Hanley-McNeil standard error of the AUC. It assumes independent samples; pooled
    #: symbols that move together on the same day make it optimistic.
    auc_se: float | None
    precision_at_k: float | None
    k: int
    ece: float | None
    hit_rate: float | None
    n_calls: int
    abstain_rate: float
    n_traded: int
    coverage: float
    win_rate_net: float | None
    mean_net_bp: float | None


class AnnAccuracy(_Frozen):
    """How close the approximate pipeline is to exact search on this fold's queries."""

    n_queries: int
    k: int
    k_cand: int
    ef_search: int
    #: Pipeline top-K (HNSW K_cand -> Lorentz re-rank) vs exact Lorentz top-K: the gate.
    pipeline_recall_vs_exact_lorentz: float
    #: HNSW's K_cand candidates vs the exact squared-L2 top-K (what the live tuner tracks).
    candidate_recall_l2: float
    #: HNSW's K_cand candidates vs the exact Lorentz top-K (can the re-rank find them?).
    candidate_recall_lorentz: float
    #: HNSW's own top-K (no re-rank, degrade level 3) vs the exact Lorentz top-K.
    hnsw_topk_recall_vs_exact_lorentz: float


class FoldReport(_Frozen):
    fold_id: int
    artifact_dir: str
    train_fingerprint: str
    n_train: int
    n_train_fit: int
    n_purged: int
    n_test: int
    test_first_time: int
    test_last_time: int
    test_first_date: str
    test_last_date: str
    lift_scale: float
    model: SkillMetrics
    #: Scorer output at degrade levels 0..3 (what live degradation would cost).
    ladder: dict[str, SkillMetrics]
    #: Same candidates and kernels, only the neighbour choice differs.
    rerank_ablation: dict[str, SkillMetrics]
    baselines: dict[str, SkillMetrics]
    ann: AnnAccuracy
    seconds: dict[str, float]


class OverallReport(_Frozen):
    """Pooled out-of-fold predictions (every sample scored once, by a model that never saw
    it) plus the spread across folds."""

    model: SkillMetrics
    ladder: dict[str, SkillMetrics]
    rerank_ablation: dict[str, SkillMetrics]
    baselines: dict[str, SkillMetrics]
    ann: AnnAccuracy
    fold_auc_mean: float | None
    fold_auc_std: float | None
    fold_auc_min: float | None
    #: Pooled AUC and hit rate differences: re-ranked pipeline minus HNSW order.
    rerank_lift_auc: float | None
    rerank_lift_hit_rate: float | None
    #: Degrade level 0 minus level 3 (also drops the periodic kernel and K_cand).
    ladder_lift_auc: float | None
    ladder_lift_hit_rate: float | None


class DatasetSummary(_Frozen):
    n_samples: int
    symbols: dict[str, int]
    first_date: str | None
    last_date: str | None
    first_time: int | None
    last_time: int | None
    up_fraction: float | None
    down_fraction: float | None
    band_fraction: float | None
    purge_horizon: int


class GateRecord(_Frozen):
    name: str
    passed: bool
    value: float | None
    limit: float
    comparison: str


class OfflineReport(_Frozen):
    format: str = REPORT_FORMAT
    model_id: str
    created_at: str
    schema_hash: str
    feature_names: tuple[str, ...]
    config: dict[str, Any]
    dataset: DatasetSummary
    folds: list[FoldReport]
    overall: OverallReport
    no_information_overlap: bool
    final_model: dict[str, Any] = Field(default_factory=dict)
    gates: list[GateRecord] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)


def write_json(path: Path, payload: Any) -> Path:
    """Pretty, sorted, strict JSON (NaN refused), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def load_report(path: str | os.PathLike[str]) -> OfflineReport:
    return OfflineReport.model_validate(json.loads(Path(path).read_text()))


def write_report(report: OfflineReport, directory: Path) -> tuple[Path, Path]:
    """reports/<model_id>/offline_report.json and offline_report.md."""
    directory.mkdir(parents=True, exist_ok=True)
    js = write_json(directory / "offline_report.json", report.model_dump(mode="json"))
    md = directory / "offline_report.md"
    md.write_text(render_markdown(report))
    return js, md


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _row(name: str, m: SkillMetrics) -> str:
    return (
        f"| {name} | {_f(m.auc)} | {_f(m.precision_at_k)} | {_f(m.ece)} | {_f(m.hit_rate)} "
        f"| {_f(m.abstain_rate)} | {m.n_traded} | {_f(m.win_rate_net)} | {_f(m.mean_net_bp, 2)} |"
    )


_HEADER = (
    "| forecaster | AUC | prec@k | ECE | hit rate | abstain | traded | net win | net bp |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def render_markdown(report: OfflineReport) -> str:
    """A one-page summary: overall vs baselines, ANN accuracy, re-rank lift, folds, gates."""
    o = report.overall
    ds = report.dataset
    cfg = report.config
    lines = [
        f"# Offline report: {report.model_id}",
        "",
        f"Created {report.created_at}; schema_hash `{report.schema_hash}`.",
        "",
        f"Data: {', '.join(f'{s} ({n})' for s, n in ds.symbols.items())}; "
        f"{ds.first_date} .. {ds.last_date}; {ds.n_samples} samples; up "
        f"{_f(ds.up_fraction)}, down {_f(ds.down_fraction)}, in cost band "
        f"{_f(ds.band_fraction)}.",
        f"Purged K-fold: {cfg.get('folds')} folds, embargo {cfg.get('embargo')} bars, "
        f"purge horizon {ds.purge_horizon} bars; no information overlap: "
        f"{report.no_information_overlap}.",
        "",
        "## Overall (pooled out-of-fold)",
        "",
        _HEADER,
        _row("analog model (level 0)", o.model),
        *(_row(f"baseline: {name}", m) for name, m in o.baselines.items()),
        "",
        f"Model AUC standard error (Hanley-McNeil, independent samples): "
        f"{_f(o.model.auc_se, 4)}. Fold AUC mean {_f(o.fold_auc_mean)} +- "
        f"{_f(o.fold_auc_std)}, worst {_f(o.fold_auc_min)}.",
        "",
        "## ANN accuracy (exact Lorentz k-NN over each fold's training set)",
        "",
        f"- pipeline top-{o.ann.k} recall vs exact Lorentz: "
        f"**{_f(o.ann.pipeline_recall_vs_exact_lorentz, 4)}** "
        f"({o.ann.n_queries} queries, K_cand {o.ann.k_cand}, ef_search {o.ann.ef_search}; "
        f"hnswlib searches with max(ef_search, K_cand))",
        f"- candidate recall (L2 top-{o.ann.k} in K_cand): {_f(o.ann.candidate_recall_l2, 4)}",
        f"- candidate recall (Lorentz top-{o.ann.k} in K_cand): "
        f"{_f(o.ann.candidate_recall_lorentz, 4)}",
        f"- HNSW top-{o.ann.k} without re-rank vs exact Lorentz: "
        f"{_f(o.ann.hnsw_topk_recall_vs_exact_lorentz, 4)}",
        "",
        "## Re-rank lift and degrade ladder",
        "",
        "Same candidates and kernels; only the neighbour choice differs:",
        "",
        _HEADER,
        *(_row(name, m) for name, m in o.rerank_ablation.items()),
        "",
        f"Lorentz re-rank minus HNSW order: AUC {_f(o.rerank_lift_auc, 4)}, "
        f"hit rate {_f(o.rerank_lift_hit_rate, 4)}.",
        "",
        "Scorer at each degrade level (1: K_cand/2, 2: + no periodic kernel, 3: + no re-rank):",
        "",
        _HEADER,
        *(_row(f"level {lvl}", m) for lvl, m in o.ladder.items()),
        "",
        f"Level 0 minus level 3: AUC {_f(o.ladder_lift_auc, 4)}, "
        f"hit rate {_f(o.ladder_lift_hit_rate, 4)}.",
        "",
        "## Folds",
        "",
        "| fold | test span | train | purged | test | AUC | logistic AUC | momentum AUC "
        "| hit | ANN acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in report.folds:
        lines.append(
            f"| {f.fold_id} | {f.test_first_date} .. {f.test_last_date} | {f.n_train_fit} "
            f"| {f.n_purged} | {f.n_test} | {_f(f.model.auc)} "
            f"| {_f(f.baselines['logistic'].auc)} | {_f(f.baselines['momentum'].auc)} "
            f"| {_f(f.model.hit_rate)} | {_f(f.ann.pipeline_recall_vs_exact_lorentz, 4)} |"
        )
    if report.gates:
        lines += [
            "",
            "## Offline gates",
            "",
            "| gate | value | limit | result |",
            "|---|---|---|---|",
        ]
        for g in report.gates:
            verdict = "pass" if g.passed else "FAIL"
            lines.append(
                f"| {g.name} | {_f(g.value, 4)} | {g.comparison} {g.limit:g} | {verdict} |"
            )
    if report.final_model:
        fm = report.final_model
        lines += ["", "## Final model", ""]
        lines += [f"- {key}: {value}" for key, value in fm.items() if not isinstance(value, dict)]
    lines.append("")
    return "\n".join(lines)
