"""The sustained-load bench runs end to end and reconciles (slow: run with -m slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import fit_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_load_bench_reports_throughput_lag_memory_latency_and_reconciles(tmp_path: Path):
    registry = tmp_path / "registry"
    fit_model(registry, "m-bench", seed=2, n=1500)
    out = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "bench.load_sustained", "--rates", "50", "--phase-s", "10",
         "--sample-s", "2", "--registry", str(registry), "--out", str(out)],
        cwd=REPO, check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    report = json.loads(out.read_text())
    (phase,) = report["phases"]
    assert report["reconciliation"]["ok"], report["reconciliation"]
    assert phase["ticks_per_s"] > 45 and phase["traced_signals"] > 50
    assert phase["e2e_ms"]["p50"] is not None and phase["samples"]
    services = {"collector", "feature", "scorer", "shadow", "risk-supervisor"}
    assert set(phase["rss_mb"]) >= services and set(phase["lag_max"]) == services
