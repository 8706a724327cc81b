"""The rollout plan: a sane default, validated fields, errors that name the field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from geodesic.rollout import RolloutPlan, RolloutStep


def test_default_plan_ramps_5_10_25_50_100_and_promotes_with_a_guard_window():
    plan = RolloutPlan()
    assert [s.fraction for s in plan.steps] == [0.05, 0.10, 0.25, 0.50, 1.0]
    assert plan.green_windows == 2
    assert plan.promotion.promote and plan.promotion.guard_window_s > 0
    assert plan.checks.winrate is not None and plan.checks.winrate.alpha == 0.05


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"steps": [{"fraction": 0.5}, {"fraction": 0.2}, {"fraction": 1.0}]}, "steps"),
        ({"steps": [{"fraction": 1.5}]}, "steps.0.fraction"),
        ({"steps": [{"fraction": 0.1, "min_samples": 0}, {"fraction": 1.0}]}, "min_samples"),
        ({"steps": [{"fraction": 0.1}]}, "steps"),  # promotes but never reaches 100%
        ({"analysis_window_s": 0}, "analysis_window_s"),
        ({"checks": {"winrate": {"alpha": 0.7}}}, "checks.winrate.alpha"),
        ({"checks": {"p95_latency_ms": -1}}, "checks.p95_latency_ms"),
        ({"abort": {"failed_windows": 0}}, "abort.failed_windows"),
        ({"promotion": {"guard_window_s": -5}}, "promotion.guard_window_s"),
        ({"green_windowz": 2}, "green_windowz"),
    ],
)
def test_a_nonsense_plan_is_refused_with_the_field_named(doc, field):
    with pytest.raises(ValidationError) as err:
        RolloutPlan.model_validate(doc)
    assert field in str(err.value)


def test_a_plan_that_does_not_promote_may_stop_short_of_100_percent():
    plan = RolloutPlan.model_validate(
        {"steps": [{"fraction": 0.1}, {"fraction": 0.3}], "promotion": {"promote": False}}
    )
    assert plan.steps[-1].fraction == 0.3


def test_plan_is_frozen():
    plan = RolloutPlan()
    with pytest.raises(ValidationError):
        setattr(plan, "green_windows", 5)  # noqa: B010  (what a typo'd assignment does)


def test_plan_from_a_yaml_or_json_file(tmp_path):
    y = tmp_path / "plan.yaml"
    y.write_text(
        "steps:\n  - {fraction: 0.2, min_duration_s: 1, min_samples: 5}\n"
        "  - {fraction: 1.0, min_duration_s: 1}\nanalysis_window_s: 0.5\n"
    )
    plan = RolloutPlan.from_file(y)
    assert plan.steps == (
        RolloutStep(fraction=0.2, min_duration_s=1, min_samples=5),
        RolloutStep(fraction=1.0, min_duration_s=1),
    )
    j = tmp_path / "plan.json"
    j.write_text(json.dumps(plan.model_dump(mode="json")))
    assert RolloutPlan.from_file(j) == plan
