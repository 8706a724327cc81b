"""The model card: what a registered model is, what it was tested on, how sure we are.

Written with every registered model, into its registry directory (signed with the other
files, so it cannot drift from the model it describes) and next to its offline report
(reports/<id>/model_card.md). Every figure comes from the offline report and the manifest
fields; nothing is typed in by hand. Uncertainty is shown where the report has it: the
per-fold AUCs (their spread), the date-block permutation p-value of the mean AUC, the
Hanley-McNeil standard error of the pooled AUC, the bootstrap lower bound of each lift,
and the walk-forward holdout next to the CV figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from geodesic.lifecycle.offline_report import EvaluationSection, OfflineReport

__all__ = ["MODEL_CARD", "known_limits", "render_model_card"]

MODEL_CARD = "model_card.md"
#: the forecaster the card is about (the others in a section are its baselines)
MODEL = "analog"


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _v(x: Any) -> str:
    """A parameter value: floats to 4 significant digits."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _section(sec: EvaluationSection, title: str) -> list[str]:
    lines = [
        f"### {title}: {sec.first_date} to {sec.last_date}",
        "",
        f"{sec.n_samples:,} samples in {sec.n_groups} groups; p-values from "
        f"{sec.n_permutations} date-block permutations (blocks of {sec.block_bars} bars).",
        "",
    ]
    rows = []
    for name, m in sec.forecasters.items():
        aucs = ", ".join(_f(a) for a in m.group_aucs)
        rows.append(
            (
                f"**{name}**" if name == MODEL else name,
                _f(m.auc_mean, 4),
                aucs,
                _f(m.null_p),
                _f(m.brier_skill, 4),
                _f(m.ece_quantile),
                _f(m.hit_rate),
                _f(m.trading.sharpe_net, 2),
            )
        )
    lines += _table(
        (
            "forecaster",
            "mean AUC",
            "AUC per group",
            "null p",
            "Brier skill",
            "ECE",
            "hit rate",
            "net Sharpe",
        ),
        rows,
    )
    if sec.lift_vs_baselines:
        lines += [
            "",
            f"AUC lift of {MODEL} over each baseline, with its bootstrap lower bound:",
            "",
        ]
        lines += _table(
            ("baseline", "lift", "lower bound", "quantile"),
            (
                (b, _f(lb.lift, 4), _f(lb.lower, 4), _f(lb.quantile, 2))
                for b, lb in sec.lift_vs_baselines.items()
            ),
        )
    ds = sec.deflated_sharpe
    lines += [
        "",
        f"Deflated Sharpe ratio {_f(ds.dsr)} (per-period Sharpe {_f(ds.sharpe_per_period, 4)} "
        f"against {_f(ds.sr0, 4)} expected from the best of {ds.n_trials} skill-less "
        f"configurations, {ds.n_obs} periods).",
        "",
    ]
    return lines


def known_limits(report: OfflineReport) -> list[str]:
    """What the figures do not promise, derived from the figures themselves."""
    out = []
    cv = report.cv.forecasters.get(MODEL) if report.cv else None
    ho = report.holdout.forecasters.get(MODEL) if report.holdout else None
    for label, m in (("cross-validation", cv), ("walk-forward holdout", ho)):
        if m is None:
            out.append(f"No {label} figures: the model's skill there is unknown.")
        elif m.null_p is None or m.null_p > 0.05:
            out.append(
                f"In the {label}, the mean AUC ({_f(m.auc_mean, 4)}) is not distinguishable "
                f"from chance (permutation p = {_f(m.null_p)}): no evidence of skill."
            )
        if m is not None and m.brier_skill is not None and m.brier_skill <= 0:
            out.append(
                f"Brier skill {_f(m.brier_skill, 4)} in the {label}: its probabilities are no "
                "better than the base rate; do not size positions on them."
            )
    for label, sec in (("cross-validation", report.cv), ("walk-forward holdout", report.holdout)):
        if sec is None:
            continue
        beaten = [b for b, lb in sec.lift_vs_baselines.items() if lb.lower is None or lb.lower <= 0]
        if beaten:
            out.append(
                f"In the {label}, the lift over {', '.join(beaten)} has a lower bound at or "
                "under 0: a simpler model may do as well."
            )
    failed = [g.name for g in report.gates if not g.passed]
    if failed:
        out.append(
            f"{len(failed)} of {len(report.gates)} offline gates failed ({', '.join(failed)}): "
            "`geodesic promote` refuses it without `--force`."
        )
    d = report.dataset
    out += [
        f"Trained on {', '.join(sorted(d.symbols))} from {d.first_date} to {d.last_date}: "
        "markets unlike that period (the drift guard measures it live against this model's "
        "reference histograms) void these figures.",
        "The pooled AUC's standard error assumes independent samples; symbols that move "
        "together on the same day make it optimistic (the per-group spread is the honest one).",
        "Offline trading figures assume the configured round-trip cost "
        f"({report.config.get('data', {}).get('cost_bp', 'n/a')} bp) and fills at the close.",
    ]
    return out


def render_model_card(report: OfflineReport, manifest: Mapping[str, Any]) -> str:
    """The card as Markdown, from the offline report (with its gates) and manifest fields."""
    d = report.dataset
    data_cfg = report.config.get("data", {})
    params = manifest.get("parameters", {})
    gates_passed = sum(g.passed for g in report.gates)
    pooled = report.overall.model
    lines = [
        f"# Model card: {report.model_id}",
        "",
        f"Created {report.created_at}; feature schema `{report.schema_hash}`. Offline gates: "
        f"**{gates_passed} of {len(report.gates)} passed**"
        + (" (promotable)." if gates_passed == len(report.gates) else " (not promotable as is)."),
        "",
        "## Data and period",
        "",
        f"- Samples: {d.n_samples:,} ({', '.join(f'{s}: {n:,}' for s, n in d.symbols.items())}), "
        f"{d.first_date} to {d.last_date}; labels up {_f(d.up_fraction)}, down "
        f"{_f(d.down_fraction)}, flat band {_f(d.band_fraction)}.",
        f"- Label: sign of the {data_cfg.get('horizon', 'n/a')}-bar forward log return, flat "
        f"within the {data_cfg.get('cost_bp', 'n/a')} bp round-trip cost; "
        + (
            f"training data before {data_cfg['cutoff']}"
            if data_cfg.get("cutoff")
            else "no cutoff (all data in training)"
        )
        + f"; purge horizon {d.purge_horizon} bar(s).",
        f"- Evaluation: {len(report.folds)} purged folds with embargo; walk-forward holdout "
        + (
            f"{report.holdout.first_date} to {report.holdout.last_date}."
            if report.holdout
            else "none."
        ),
        "",
        "## Features",
        "",
        f"Model order: {', '.join(f'`{n}`' for n in manifest.get('feature_names', []))}.",
    ]
    for ex in manifest.get("excluded_features", []):
        lines.append(f"Excluded: `{ex['name']}` ({ex['reason']}).")
    kernel, scorer, ann = params.get("kernel", {}), params.get("scorer", {}), params.get("ann", {})
    lines += [
        "",
        "## Parameters",
        "",
        *_table(
            ("group", "values"),
            (
                ("kernel", ", ".join(f"{k} {_v(v)}" for k, v in kernel.items())),
                ("scorer", ", ".join(f"{k} {_v(v)}" for k, v in scorer.items())),
                ("ANN", ", ".join(f"{k} {_v(v)}" for k, v in ann.items())),
            ),
        ),
        "",
        "## Offline figures",
        "",
        f"Pooled out-of-fold AUC {_f(pooled.auc, 4)} ± {_f(pooled.auc_se, 4)} (Hanley-McNeil "
        f"SE); per-fold AUC mean {_f(report.overall.fold_auc_mean, 4)}, std "
        f"{_f(report.overall.fold_auc_std, 4)}, min {_f(report.overall.fold_auc_min, 4)}; "
        f"ANN pipeline recall vs exact Lorentz "
        f"{_f(report.overall.ann.pipeline_recall_vs_exact_lorentz, 4)}.",
        "",
    ]
    if report.cv is not None:
        lines += _section(report.cv, "Cross-validation (per fold)")
    if report.holdout is not None:
        lines += _section(report.holdout, "Walk-forward holdout (per step)")
    lines += [
        "## Gates",
        "",
        *_table(
            ("gate", "value", "rule", "outcome"),
            (
                (
                    g.name,
                    _f(g.value, 4),
                    f"{g.comparison} {g.limit:g}",
                    "pass" if g.passed else "**FAIL**",
                )
                for g in report.gates
            ),
        ),
        "",
        "## Known limits",
        "",
        *(f"- {x}" for x in known_limits(report)),
        "",
    ]
    return "\n".join(lines)
