"""Offline gates: the checks a model's offline report must pass before it may be promoted.

Limits come from ``GateThresholds`` (config, fixed before results are seen); a metric
that is undefined fails its gate rather than passing by default. ``geodesic train`` records
the results in the manifest; ``geodesic promote`` / ``geodesic gates`` re-run them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from geodesic.lifecycle.config import GateThresholds
from geodesic.lifecycle.reports import OfflineReport

__all__ = ["GateResult", "all_passed", "offline_gates"]

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


def _lift(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def offline_gates(
    report: OfflineReport | Mapping[str, Any], thresholds: GateThresholds | None = None
) -> list[GateResult]:
    """Evaluate every enabled gate on the pooled out-of-fold metrics of ``report``."""
    rep = report if isinstance(report, OfflineReport) else OfflineReport.model_validate(report)
    t = thresholds or GateThresholds()
    o = rep.overall
    auc = o.model.auc
    se = o.model.auc_se
    lower = None if auc is None or se is None else auc - t.auc_bound_z * se
    checks: list[tuple[str, float | None, str, float | None]] = [
        ("auc_above_chance", auc, ">", t.min_auc),
        ("auc_lower_bound", lower, ">", t.min_auc_lower_bound),
        (
            "auc_vs_logistic",
            _lift(auc, o.baselines["logistic"].auc),
            ">",
            t.min_auc_lift_over_logistic,
        ),
        (
            "auc_vs_momentum",
            _lift(auc, o.baselines["momentum"].auc),
            ">",
            t.min_auc_lift_over_momentum,
        ),
        ("ece", o.model.ece, "<", t.max_ece),
        ("ann_accuracy", o.ann.pipeline_recall_vs_exact_lorentz, ">=", t.min_ann_accuracy),
        ("abstain_rate", o.model.abstain_rate, "<=", t.max_abstain_rate),
        ("worst_fold_auc", o.fold_auc_min, ">", t.min_fold_auc),
    ]
    return [_gate(n, v, c, lim) for n, v, c, lim in checks if lim is not None]


def all_passed(results: list[GateResult]) -> bool:
    return all(r.passed for r in results)
