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


class TradingMetrics(_Frozen):
    """Position = called direction (0 on abstain), held one horizon, equal weight across
    symbols; cost is half the round-trip cost per unit of position change."""

    periods: int
    periods_per_year: float
    exposure: float
    #: Mean |delta position| per symbol and bar.
    turnover: float
    mean_gross_bp: float
    sharpe_gross: float | None
    #: Annualised Sharpe net of the configured round-trip cost.
    sharpe_net: float | None
    mean_net_bp: float
    #: Round-trip cost in bp -> annualised net Sharpe.
    cost_sensitivity: dict[str, float | None]


class HonestMetrics(_Frozen):
    """One forecaster on one evaluation section (CV folds or walk-forward holdout steps)."""

    #: Mean of the per-group AUCs (groups: folds or walk-forward steps), never pooled.
    auc_mean: float | None
    group_aucs: list[float | None]
    #: Date-block permutation null of auc_mean: p-value, mean and spread.
    null_p: float | None
    null_mean: float | None
    null_std: float | None
    brier: float | None
    #: 1 - Brier / Brier(prior) on the same samples (> 0: better than the base rate).
    brier_skill: float | None
    log_loss: float | None
    log_loss_skill: float | None
    #: ECE over equal-count (quantile) bins.
    ece_quantile: float | None
    hit_rate: float | None
    trading: TradingMetrics
    #: Fitted orientation of the sign rule per group ("momentum" / "reversal"), if any.
    orientation: list[str] = Field(default_factory=list)


class LiftBound(_Frozen):
    """Model minus baseline mean AUC with a paired date-block bootstrap lower bound."""

    lift: float | None
    lower: float | None
    quantile: float


class ReliabilityRow(_Frozen):
    lo: float
    hi: float
    n: int
    mean_prob: float
    observed: float


class DeflatedSharpe(_Frozen):
    sharpe_per_period: float | None
    #: Expected best per-period Sharpe of n_trials configurations with no skill.
    sr0: float
    n_trials: int
    n_obs: int
    dsr: float | None


class EvaluationSection(_Frozen):
    """Honest figures of one evaluation: the model against every baseline."""

    kind: str  # "cv" or "holdout"
    n_samples: int
    n_groups: int
    first_date: str | None
    last_date: str | None
    block_bars: int
    n_permutations: int
    forecasters: dict[str, HonestMetrics]
    lift_vs_baselines: dict[str, LiftBound]
    reliability: list[ReliabilityRow]
    #: regime kind ("vol_tercile", "year", "symbol") -> value -> forecaster -> mean AUC.
    regimes: dict[str, dict[str, dict[str, float | None]]]
    regime_counts: dict[str, dict[str, int]]
    deflated_sharpe: DeflatedSharpe


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
    #: The honest figures: per-fold CV and the walk-forward holdout (None: no holdout data).
    cv: EvaluationSection | None = None
    holdout: EvaluationSection | None = None
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
    """reports/<model_id>/offline_report.{json,md,html} (+ reliability.png)."""
    directory.mkdir(parents=True, exist_ok=True)
    js = write_json(directory / "offline_report.json", report.model_dump(mode="json"))
    md = directory / "offline_report.md"
    text = render_markdown(report)
    md.write_text(text)
    write_html(report, text, directory)
    return js, md


def _reliability_png(report: OfflineReport, path: Path) -> bool:
    """Reliability diagram (quantile bins) of the model, CV and holdout; False if no data."""
    sections = [s for s in (report.cv, report.holdout) if s is not None and s.reliability]
    if not sections:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    lo = min(min(b.mean_prob, b.observed) for s in sections for b in s.reliability)
    hi = max(max(b.mean_prob, b.observed) for s in sections for b in s.reliability)
    pad = 0.02 + 0.1 * (hi - lo)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, label="perfect")
    for s in sections:
        ax.plot(
            [b.mean_prob for b in s.reliability],
            [b.observed for b in s.reliability],
            marker="o",
            label=f"{s.kind} (ECE {_f(s.forecasters['analog'].ece_quantile, 4)})",
        )
    ax.set_xlabel("mean forecast P(up) in bin (equal-count bins)")
    ax.set_ylabel("observed up frequency")
    ax.set_title("Reliability of the analog model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_html(report: OfflineReport, markdown_text: str, directory: Path) -> Path:
    """offline_report.html: the markdown report rendered, with the reliability diagram."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown_text)
    if _reliability_png(report, directory / "reliability.png"):
        body += '<h2>Reliability diagram</h2><img src="reliability.png" alt="reliability">'
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>Offline report {report.model_id}</title><style>"
        "body{font-family:sans-serif;max-width:70em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        f"</style></head><body>{body}</body></html>"
    )
    path = directory / "offline_report.html"
    path.write_text(page)
    return path


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
        *_honest_markdown(report),
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
        "## Pooled out-of-fold (kept for comparison; pooling mixes fold score levels)",
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


def _honest_markdown(report: OfflineReport) -> list[str]:
    """The headline: per-fold CV and walk-forward holdout figures, model vs baselines."""
    lines: list[str] = []
    for sec in (report.cv, report.holdout):
        if sec is None:
            continue
        title = (
            "Cross-validation (purged folds; per-fold mean AUC)"
            if sec.kind == "cv"
            else "Holdout (data on/after the cutoff, scored walk-forward; per-step mean AUC)"
        )
        lines += [
            f"## {title}",
            "",
            f"{sec.n_samples} samples, {sec.first_date} .. {sec.last_date}, {sec.n_groups} "
            f"groups; null: {sec.n_permutations} shuffles of {sec.block_bars}-bar date blocks.",
            "",
            "| forecaster | mean AUC | null p | null sd | lift over it (lower bound) | Brier "
            "skill | log-loss skill | ECE (quantile) | hit rate | turnover | Sharpe gross "
            "| Sharpe net |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in sec.forecasters.items():
            lb = sec.lift_vs_baselines.get(name)
            lift = "" if lb is None else f"{_f(lb.lift, 4)} ({_f(lb.lower, 4)})"
            orient = f" [{', '.join(m.orientation)}]" if m.orientation else ""
            t = m.trading
            lines.append(
                f"| {name}{orient} | {_f(m.auc_mean, 4)} | {_f(m.null_p)} | "
                f"{_f(m.null_std, 4)} | {lift} | {_f(m.brier_skill, 4)} | "
                f"{_f(m.log_loss_skill, 4)} | {_f(m.ece_quantile, 4)} | {_f(m.hit_rate)} | "
                f"{_f(t.turnover)} | {_f(t.sharpe_gross, 2)} | {_f(t.sharpe_net, 2)} |"
            )
        costs = sorted(next(iter(sec.forecasters.values())).trading.cost_sensitivity, key=float)
        lines += [
            "",
            "Cost sensitivity (annualised net Sharpe; cost = round trip in bp, charged on "
            "position changes):",
            "",
            "| forecaster | " + " | ".join(f"{c} bp" for c in costs) + " |",
            "|---|" + "---|" * len(costs),
        ]
        for name, m in sec.forecasters.items():
            cs = m.trading.cost_sensitivity
            lines.append(f"| {name} | " + " | ".join(_f(cs[c], 2) for c in costs) + " |")
        names = list(sec.forecasters)
        lines += ["", "Mean AUC by regime:", "", "| regime | n | " + " | ".join(names) + " |"]
        lines.append("|---|---|" + "---|" * len(names))
        for rk, values in sec.regimes.items():
            for value, by in values.items():
                lines.append(
                    f"| {rk}={value} | {sec.regime_counts[rk][value]} | "
                    + " | ".join(_f(by[n]) for n in names)
                    + " |"
                )
        ds = sec.deflated_sharpe
        lines += [
            "",
            f"Deflated Sharpe ratio of the model: {_f(ds.dsr)} (per-period Sharpe "
            f"{_f(ds.sharpe_per_period, 4)} vs {_f(ds.sr0, 4)} expected from the best of "
            f"{ds.n_trials} no-skill configurations, {ds.n_obs} periods).",
            "",
            "Reliability (quantile bins): "
            + ", ".join(f"{r.mean_prob:.3f}->{r.observed:.3f}" for r in sec.reliability),
            "",
        ]
    return lines
