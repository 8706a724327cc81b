import csv
import json
import math

import pytest
from operations_helpers import SEC, T0, Trail
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from geodesic.control import ControlSnapshot, Rollout
from geodesic.operations.history import parse_events
from geodesic.operations.report import (
    build_report,
    histogram_quantile,
    latency_rows,
    parse_histograms,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOW = T0 + 24 * 3600 * SEC
SNAP = ControlSnapshot(active="m1", rollout=Rollout("canary", 0.1, 3, "m2"), version=5)
RISK = {
    "winrates": {
        "active": {"wins": 300, "n": 500, "rate": 0.6, "lower": 0.556, "upper": 0.642},
        "canary": {"wins": 0, "n": 0, "rate": None, "lower": None, "upper": None},
    },
    "drift": {
        "ret_1": {"n": 500, "psi": 0.31, "psi_level": 0.1, "ks": 0.2, "ks_level": 0.1},
        "vol_5": {"n": 500, "psi": 0.02, "psi_level": 0.1, "ks": 0.03, "ks_level": 0.1},
        "rsi": {"n": 0, "psi": math.nan, "psi_level": math.inf, "ks": math.nan},
    },
    "guards": {"canary_winrate": {"verdict": "insufficient_data", "reason": "need 100"}},
    "actions": [],
}
SHADOW = {"match_rate": 0.95, "window": 200, "parity_fail": 0, "mean_abs_delta": 0.01}


def scorer_metrics() -> str:
    reg = CollectorRegistry()
    h = Histogram("stage_latency_ms", "x", ["stage"], buckets=(1, 2, 5), registry=reg)
    for v, k in ((0.5, 10), (1.5, 10), (3.0, 10)):
        for _ in range(k):
            h.labels(stage="score").observe(v)
    e2e = Histogram("e2e_latency_ms", "x", buckets=(1, 2, 5), registry=reg)
    e2e.observe(4.0)
    Histogram("unrelated_ms", "x", registry=reg).observe(1.0)
    return generate_latest(reg).decode()


def trail() -> list:
    t = Trail()
    t.promote(NOW - 48 * 3600 * SEC, None, "m0")  # outside the 24 h window
    t.promote(NOW - 5 * 3600 * SEC, "m0", "m1")
    t.rollout(NOW - 3600 * SEC, Rollout(), Rollout("canary", 0.1, 3, "m2"))
    t.rollback(NOW - 1800 * SEC, "m1", "m1", "canary")
    return parse_events(t.records)


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(1.0, 10.0), (2.0, 20.0), (5.0, 30.0), (math.inf, 30.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(1.5)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(2 + 3 * 9.7 / 10)
    assert histogram_quantile(buckets, 0.1) == pytest.approx(0.3)
    tail = [(1.0, 10.0), (5.0, 10.0), (math.inf, 20.0)]
    assert histogram_quantile(tail, 0.99) == 5.0  # rank in +Inf: highest finite bound
    assert histogram_quantile([(1.0, 0.0), (math.inf, 0.0)], 0.5) is None
    assert histogram_quantile([], 0.5) is None


def test_latency_rows_from_real_prometheus_text():
    hist = parse_histograms(scorer_metrics())
    assert set(hist) == {("stage_latency_ms", "score"), ("e2e_latency_ms", "e2e")}
    rows = {(r["metric"], r["stage"]): r for r in latency_rows({"scorer": scorer_metrics()})}
    score = rows[("stage_latency_ms", "score")]
    assert score["count"] == 30 and score["service"] == "scorer"
    assert score["p50_ms"] == pytest.approx(1.5)
    assert rows[("e2e_latency_ms", "e2e")]["count"] == 1


def test_report_files_rows_and_fields(tmp_path):
    lat = latency_rows({"scorer": scorer_metrics()})
    doc = build_report(
        now_ns=NOW,
        hours=24,
        snapshot=SNAP,
        audit=trail(),
        risk_status=RISK,
        shadow_stats=SHADOW,
        latency=lat,
        source={"redis": "redis://h:1/0", "prefix": "p"},
    )
    files = write_report(doc, tmp_path / "daily")
    names = {p.name for p in files.values()}
    assert names == {
        "report.json",
        "audit_events.csv",
        "winrates.csv",
        "winrates.png",
        "drift.csv",
        "drift.png",
        "latency.csv",
        "latency.png",
    }
    for key in ("winrates_png", "drift_png", "latency_png"):
        data = files[key].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000

    report = json.loads(files["report_json"].read_text())
    assert report["format"] == "geodesic.daily_risk_report/1"
    assert report["window"]["hours"] == 24 and report["window"]["until_ns"] == NOW
    assert report["audit"]["count"] == 3 and report["audit"]["rollbacks"] == 1
    assert report["audit"]["by_kind"] == {"PROMOTE": 1, "ROLLBACK": 1, "ROLLOUT": 1}
    assert report["control"]["rollout"]["candidate"] == "m2"
    assert report["winrates"]["canary"]["status"] == "insufficient data"
    assert report["drift"]["alarms"] == ["ret_1"]
    assert report["latency"]["available"] and report["files"]["latency_png"] == "latency.png"
    assert any("win rate (canary): insufficient data" in n for n in report["notes"])

    with (tmp_path / "daily" / "audit_events.csv").open() as fh:
        audit = list(csv.DictReader(fh))
    assert [r["kind"] for r in audit] == ["PROMOTE", "ROLLOUT", "ROLLBACK"]
    assert json.loads(audit[0]["to"]) == {"active": "m1"}
    with (tmp_path / "daily" / "winrates.csv").open() as fh:
        wr = {r["route"]: r for r in csv.DictReader(fh)}
    assert wr["active"]["rate"] == "0.6" and wr["canary"]["rate"] == ""
    assert wr["canary"]["status"] == "insufficient data"
    with (tmp_path / "daily" / "drift.csv").open() as fh:
        drift = {r["feature"]: r for r in csv.DictReader(fh)}
    assert drift["ret_1"]["status"] == "ALARM" and drift["rsi"]["psi"] == ""
    with (tmp_path / "daily" / "latency.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_without_metrics_or_risk_status_the_charts_are_omitted_and_said_so(tmp_path):
    doc = build_report(
        now_ns=NOW,
        hours=1,
        snapshot=ControlSnapshot(),
        audit=[],
        risk_status=None,
        shadow_stats=None,
    )
    files = write_report(doc, tmp_path)
    assert "latency_png" not in files and "drift_png" not in files
    assert files["winrates_png"].read_bytes().startswith(PNG_MAGIC)  # says insufficient data
    report = json.loads(files["report_json"].read_text())
    notes = " | ".join(report["notes"])
    assert "latency chart omitted: no --metrics-url given" in notes
    assert "drift chart omitted" in notes and "no risk-supervisor status" in notes
    assert report["audit"]["count"] == 0 and not report["latency"]["available"]
    with (tmp_path / "audit_events.csv").open() as fh:
        assert len(list(csv.reader(fh))) == 1  # header only
