import json
import math

from operations_helpers import SEC, T0, Trail

from geodesic.control import ControlSnapshot, Rollout, TradingState
from geodesic.operations.history import parse_events
from geodesic.operations.status import build_status, drift_view, shadow_view, winrate_view

SNAP = ControlSnapshot(
    active="m1",
    shadow="s1",
    previous="m0",
    rollout=Rollout("canary", 0.1, 3, "m2"),
    kill_global=False,
    kill_symbols=frozenset({"NQ"}),
    symbol_states={"ES": TradingState.REDUCING},
    cooldown_until_ns=T0 + 60 * SEC,
    version=12,
)


def test_no_samples_reads_insufficient_data_not_zero():
    risk = {"winrates": {"active": {"wins": 0, "n": 0, "rate": None}, "canary": {}}}
    view = winrate_view(risk, SNAP)
    assert view["active"]["rate"] is None and view["active"]["status"] == "insufficient data"
    assert view["canary"]["model"] == "m2" and view["canary"]["status"] == "insufficient data"
    assert winrate_view(None, ControlSnapshot(active="m1"))["canary"]["model"] is None


def test_drift_rows_flag_alarms_and_small_windows():
    risk = {
        "drift": {
            "ret_1": {"n": 500, "psi": 0.3, "psi_level": 0.1, "ks": 0.05, "ks_level": 0.1},
            "vol_5": {"n": 500, "psi": 0.01, "psi_level": 0.1, "ks": 0.02, "ks_level": 0.1},
            "rsi": {"n": 50, "psi": 0.05, "psi_level": 0.4, "ks": 0.1, "ks_level": 0.3},
            "gap": {"n": 0, "psi": math.nan, "psi_level": math.inf, "ks": math.nan},
        }
    }
    view = drift_view(risk)
    status = {r["feature"]: r["status"] for r in view["features"]}
    assert status == {
        "ret_1": "ALARM",
        "vol_5": "ok",
        "rsi": "insufficient data (n < 200)",
        "gap": "insufficient data",
    }
    assert view["alarms"] == ["ret_1"]
    empty = drift_view({"guards": {"drift": {"reason": "no drift reference for model"}}})
    assert not empty["available"] and empty["note"] == "no drift reference for model"


def test_shadow_view():
    assert shadow_view(None, SNAP)["status"] == "no shadow stats published"
    v = shadow_view({"match_rate": None, "window": 0, "parity_fail": 0}, SNAP)
    assert v["status"] == "insufficient data" and v["model"] == "s1"
    v = shadow_view({"match_rate": 0.97, "window": 400, "parity_fail": 1}, SNAP)
    assert v["match_rate"] == 0.97 and v["parity_fail"] == 1


def test_build_status_holds_everything_and_is_strict_json():
    t = Trail()
    t.promote(T0, None, "m1")
    t.add("KILL_SWITCH", T0 + SEC, False, True, symbol="NQ")
    risk = {
        "winrates": {
            "active": {"wins": 60, "n": 100, "rate": 0.6, "lower": 0.5, "upper": 0.69},
            "canary": {"wins": 0, "n": 0, "rate": None},
        },
        "drift": {"ret_1": {"n": 0, "psi": math.nan, "psi_level": math.inf}},
        "guards": {"drift": {"guard": "drift", "verdict": "insufficient_data", "reason": "w"}},
        "actions": [{"action": "Rollback", "guard": "canary_winrate"}],
    }
    doc = build_status(
        SNAP, parse_events(t.records), risk, {"match_rate": 0.9, "window": 10}, T0 + 30 * SEC
    )
    parsed = json.loads(json.dumps(doc, allow_nan=False))
    assert parsed["slots"] == {"active": "m1", "shadow": "s1", "previous": "m0"}
    assert parsed["rollout"] == {
        "mode": "canary",
        "canary_fraction": 0.1,
        "seed": 3,
        "candidate": "m2",
    }
    assert parsed["kill_switches"] == {"global": False, "symbols": ["NQ"]}
    assert parsed["trading_states"] == {"global": "ACTIVE", "symbols": {"ES": "REDUCING"}}
    assert parsed["cooldown"]["active"] and parsed["cooldown"]["remaining_s"] == 30.0
    assert [e["kind"] for e in parsed["audit"]] == ["PROMOTE", "KILL_SWITCH"]
    assert parsed["winrates"]["active"]["rate"] == 0.6
    assert parsed["winrates"]["canary"]["status"] == "insufficient data"
    assert parsed["drift"]["features"][0]["psi"] is None
    assert parsed["shadow"]["match_rate"] == 0.9
    assert parsed["risk_actions"][0]["action"] == "Rollback"
    assert parsed["version"] == 12


def test_expired_cooldown_reads_none():
    doc = build_status(SNAP, [], None, None, T0 + 61 * SEC)
    assert doc["cooldown"]["active"] is False and not doc["risk_status_available"]
