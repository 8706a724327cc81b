"""Offline gates: the checks a model's offline report must pass before it may be promoted.

Limits come from ``GateThresholds`` (config, fixed before results are seen); a metric
that is undefined fails its gate rather than passing by default. The skill gates read the
honest sections only: per-fold mean AUC, its date-block permutation p-value, the
bootstrap lower bound of the lift over every baseline (prior, fitted momentum/reversal,
logistic, Euclidean k-NN), Brier skill and quantile ECE, each in CV and on the
walk-forward holdout. ``geodesic train`` records
the results in the manifest; ``geodesic promote`` / ``geodesic gates`` re-run them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from geodesic.lifecycle.config import GateThresholds
from geodesic.lifecycle.evaluation import BASELINES
from geodesic.lifecycle.offline_report import EvaluationSection, OfflineReport

__all__ = ["GateResult", "all_passed", "failures", "offline_gates"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    passed: bool
    value: float | None
    limit: float
    comparison: str = ">"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        v = "undefined" if self.value is None else f"{self.value:.4f}"
        return (
            f"{'PASS' if self.passed else 'FAIL'} {self.name}: {v} {self.comparison} {self.limit:g}"
        )


def _gate(name: str, value: float | None, comparison: str, limit: float) -> GateResult:
    passed = value is not None and _OPS[comparison](value, limit)
    return GateResult(name, bool(passed), value, float(limit), comparison)


def _section_gates(
    sec: EvaluationSection | None, kind: str, t: GateThresholds
) -> list[tuple[str, float | None, str, float | None]]:
    """The skill gates of one section; a missing section gives undefined (failing) values."""
    m = None if sec is None else sec.forecasters.get("analog")

    def value(attr: str) -> float | None:
        return None if m is None else getattr(m, attr)

    checks: list[tuple[str, float | None, str, float | None]] = [
        (f"{kind}_auc_mean", value("auc_mean"), ">", t.min_auc),
        (f"{kind}_null_p", value("null_p"), "<", t.max_null_p),
        (f"{kind}_brier_skill", value("brier_skill"), ">", t.min_brier_skill),
        (f"{kind}_ece", value("ece_quantile"), "<", t.max_ece),
    ]
    names = BASELINES if sec is None else tuple(sec.lift_vs_baselines)
    for b in names:
        lb = None if sec is None else sec.lift_vs_baselines[b].lower
        checks.append((f"{kind}_lift_lower_vs_{b}", lb, ">", t.min_lift_lower_bound))
    return checks


def offline_gates(
    report: OfflineReport | Mapping[str, Any], thresholds: GateThresholds | None = None
) -> list[GateResult]:
    """Every enabled gate on the report's honest sections (CV and walk-forward holdout).

    A report without those sections (written before they existed) fails the skill gates.
    """
    rep = report if isinstance(report, OfflineReport) else OfflineReport.model_validate(report)
    t = thresholds or GateThresholds()
    o = rep.overall
    checks = _section_gates(rep.cv, "cv", t)
    if rep.holdout is not None or t.require_holdout:
        checks += _section_gates(rep.holdout, "holdout", t)
    checks += [
        ("ann_accuracy", o.ann.pipeline_recall_vs_exact_lorentz, ">=", t.min_ann_accuracy),
        ("abstain_rate", o.model.abstain_rate, "<=", t.max_abstain_rate),
        ("worst_fold_auc", o.fold_auc_min, ">", t.min_fold_auc),
    ]
    return [_gate(n, v, c, lim) for n, v, c, lim in checks if lim is not None]


def failures(results: list[GateResult]) -> list[str]:
    """One line per failed gate, for refusals and audit reasons."""
    return [str(r) for r in results if not r.passed]


def all_passed(results: list[GateResult]) -> bool:
    return all(r.passed for r in results)
