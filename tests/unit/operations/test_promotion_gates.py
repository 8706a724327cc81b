import json
import math

import pytest

from geodesic.control import ControlSnapshot, Rollout
from geodesic.operations.promotion_gates import (
    all_pass,
    failures,
    gate_table,
    live_rows,
    offline_rows,
    verification_row,
)
from geodesic.risk.guards import RolloutGuardConfig

CANARY = ControlSnapshot(active="m1", rollout=Rollout("canary", 0.2, 7, "m2"))


def _wr(wins: int, n: int) -> dict:
    return {"wins": wins, "n": n, "rate": wins / n if n else None, "lower": None, "upper": None}


def _drift(psi: float, psi_level: float = 0.1, n: int = 500) -> dict:
    return {"n": n, "psi": psi, "psi_level": psi_level, "ks": 0.01, "ks_level": 0.1}


def _status(base=(300, 500), canary=(150, 250), drift=None, parity=0.0) -> dict:
    return {
        "winrates": {"active": _wr(*base), "canary": _wr(*canary)},
        "drift": drift if drift is not None else {"ret_1": _drift(0.01), "vol_5": _drift(0.02)},
        "guards": {"parity": {"guard": "parity", "verdict": "ok", "value": parity}},
    }


def by_name(rows):
    return {r.name: r for r in rows}


def test_offline_rows_from_the_manifest_record_pass_and_fail():
    manifest = {
        "gates": [
            {
                "name": "auc_above_chance",
                "passed": True,
                "value": 0.56,
                "limit": 0.5,
                "comparison": ">",
            },
            {"name": "ece", "passed": False, "value": 0.08, "limit": 0.05, "comparison": "<"},
        ]
    }
    rows = by_name(offline_rows(manifest))
    assert rows["auc_above_chance"].passed and not rows["ece"].passed
    assert rows["ece"].detail == "recorded as failed"


def test_a_record_claiming_pass_against_its_own_numbers_fails():
    rec = {"name": "ece", "passed": True, "value": 0.08, "limit": 0.05, "comparison": "<"}
    (row,) = offline_rows({"gates": [rec]})
    assert not row.passed and row.detail == "inconsistent"
    (row,) = offline_rows({"gates": [{**rec, "value": None}]})
    assert not row.passed  # undefined metric never passes


def test_a_manifest_without_gates_fails_rather_than_passes():
    (row,) = offline_rows({"model_id": "x"})
    assert row.name == "offline_gates_recorded" and not row.passed
    assert not all_pass([])


def test_verification_row():
    assert verification_row(None, "abc").passed
    bad = verification_row("x/labels.npy: sha256 does not match the manifest")
    assert not bad.passed and "labels.npy" in failures([bad])[0]


def test_live_gates_pass_for_a_healthy_canary_with_enough_samples():
    rows = live_rows("m2", CANARY, _status(), {"parity_fail": 0})
    assert all_pass(rows), [r for r in rows if not r.passed]
    assert [r.name for r in rows] == [
        "rollout_candidate",
        "canary_samples",
        "canary_winrate",
        "no_drift_alarm",
        "parity",
    ]


def test_canary_significantly_worse_than_baseline_fails():
    rows = by_name(live_rows("m2", CANARY, _status(base=(350, 500), canary=(100, 300)), None))
    assert not rows["canary_winrate"].passed
    assert "canary win rate" in rows["canary_winrate"].detail
    assert rows["canary_samples"].passed


def test_too_few_samples_fails_both_sample_and_winrate_gates():
    rows = by_name(live_rows("m2", CANARY, _status(canary=(30, 40)), None))
    assert not rows["canary_samples"].passed and rows["canary_samples"].value == 40
    assert not rows["canary_winrate"].passed
    assert rows["canary_winrate"].detail.startswith("insufficient data")
    cfg = RolloutGuardConfig(min_samples=20)
    rows = by_name(live_rows("m2", CANARY, _status(canary=(30, 40)), None, cfg))
    assert rows["canary_samples"].passed


def test_a_model_that_is_not_the_candidate_has_no_live_evidence():
    rows = by_name(live_rows("m9", CANARY, _status(), None))
    assert not rows["rollout_candidate"].passed
    assert not rows["canary_samples"].passed and not rows["canary_winrate"].passed
    rows = by_name(live_rows("m2", ControlSnapshot(active="m1"), _status(), None))
    assert "rollout disabled" in rows["rollout_candidate"].detail


def test_drift_alarm_and_missing_drift_data_fail():
    drift = {"ret_1": _drift(0.5), "vol_5": _drift(0.4), "rsi": _drift(0.01)}
    rows = by_name(live_rows("m2", CANARY, _status(drift=drift), None))
    assert (
        not rows["no_drift_alarm"].passed and "drift on 2 features" in rows["no_drift_alarm"].detail
    )
    small = {"ret_1": _drift(0.01, n=50)}
    rows = by_name(live_rows("m2", CANARY, _status(drift=small), None))
    assert not rows["no_drift_alarm"].passed
    assert rows["no_drift_alarm"].detail.startswith("insufficient data")
    rows = by_name(live_rows("m2", CANARY, _status(drift={}), None))
    assert not rows["no_drift_alarm"].passed


def test_parity_from_the_supervisor_else_from_the_shadow():
    rows = by_name(live_rows("m2", CANARY, _status(parity=2.0), {"parity_fail": 0}))
    assert not rows["parity"].passed and "since this rollout" in rows["parity"].detail
    status = _status()
    status["guards"] = {}
    rows = by_name(live_rows("m2", CANARY, status, {"parity_fail": 3}))
    assert not rows["parity"].passed and rows["parity"].value == 3
    rows = by_name(live_rows("m2", CANARY, status, None))
    assert not rows["parity"].passed and "no parity data" in rows["parity"].detail


def test_no_risk_status_fails_every_live_gate_with_a_reason():
    rows = live_rows("m2", CANARY, None, None)
    assert [r.passed for r in rows] == [True, False, False, False, False]
    assert all(r.detail for r in rows)


@pytest.mark.parametrize("nan_value", [math.nan, math.inf])
def test_gate_table_is_strict_json(nan_value):
    rows = offline_rows(
        {
            "gates": [
                {"name": "x", "passed": False, "value": nan_value, "limit": 1, "comparison": ">"}
            ]
        }
    )
    table = gate_table("m2", rows)
    text = json.dumps(table, allow_nan=False)
    assert json.loads(text)["failed"] == ["x"] and table["passed"] is False
