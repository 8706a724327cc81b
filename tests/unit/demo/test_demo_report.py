"""The demo report as an operator reads it: a headline, tables, clock times."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from geodesic.demo.demo_report import refresh_report, render_page, utc

T0 = 1_796_190_000_123_456_789  # 2026-12-02 ...


class _Page(HTMLParser):
    """Visible text, and the number of tables, as a browser would show them."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tables = 0
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tables += tag == "table"
        self._skip += tag in ("style", "script", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "script", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.text.append(data.strip())


def _read(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def small_summary(stage_status: str = "ok") -> dict[str, Any]:
    return {
        "ticks_sent": 12_345,
        "received": 12_345,
        "accepted": 12_000,
        "duplicates": 200,
        "dlq": 145,
        "injected": {"expected": {"accepted": 12_000, "duplicates": 200, "dlq": 145}},
        "signals": 900,
        "signals_tradable": 400,
        "signals_per_route": {"active": 700, "canary": 200},
        "replay_rate_ticks_per_s": 480.5,
        "replay_period": {
            "symbols": ["NASDAQ", "SP500"],
            "first_day": "2007-01-03",
            "last_day": "2007-10-01",
        },
        "rollback_trigger": "real data",
        "rollback_after_first_signal_s": 4.2,
        "rollback_reason": "drift: vol_20 psi=0.412>0.150",
        "kill_switch_flips": 2,
        "kill_switch_window_signals": 31,
        "latency_ms": {"scorer": {"p50": 1.25, "p99": 7.5, "n": 900}},
        "control_log": [
            {"ts_ns": T0, "kind": "ROLLBACK", "actor": "risk-supervisor", "reason": "drift"}
        ],
        "ramps": [
            {
                "candidate": "demo-candidate",
                "outcome": "PROMOTED",
                "reason": "every step green: promoted",
                "steps": [0.25, 1.0],
                "timeline": [
                    {"ts_ns": T0, "state": "STEP 1/2 ANALYSING", "weight": 0.25, "summary": "s"},
                    {"ts_ns": T0 + 9 * 10**9, "state": "PROMOTED", "weight": 1.0, "summary": "p"},
                ],
                "windows": [
                    {
                        "ts_ns": T0 + 3 * 10**9,
                        "state": "STEP 1/2 ANALYSING",
                        "checks": [
                            {
                                "name": "p95_latency_ms",
                                "status": "green",
                                "value": 3.1,
                                "threshold": 50.0,
                                "samples": 40,
                                "needed": 20,
                                "detail": "3.1ms <= 50ms",
                            }
                        ],
                    }
                ],
            }
        ],
        "stages": [
            {"stage": "replay", "status": "ok", "seconds": 12.5, "detail": "12345 ticks"},
            {"stage": "write the report", "status": stage_status, "seconds": 0.4},
        ],
    }


def test_page_leads_with_the_verdict_and_what_was_decided_and_why() -> None:
    page = _read(render_page(small_summary()))
    text = " ".join(page.text)
    assert page.text[0] == "Geodesic demo report"
    assert page.text[1] == "all 2 stages passed"
    assert "NASDAQ, SP500 from 2007-01-03 to 2007-10-01" in text
    assert "rolled back automatically" in text and "vol_20 psi=0.412>0.150" in text
    assert "Rollout of demo-candidate: PROMOTED" in text


def test_failed_stage_is_the_headline() -> None:
    page = _read(render_page(small_summary(stage_status="failed")))
    assert page.text[1] == "FAILED at stage 'write the report'"


def test_summary_cells_are_tables_and_times_are_utc_clock_times() -> None:
    raw = render_page(small_summary())
    page = _read(raw)
    text = " ".join(page.text)
    # no JSON dict or list in any cell, no epoch nanoseconds anywhere
    assert not re.search(r"\{\s*\"", text), "a JSON dict is shown as text"
    assert str(T0) not in raw
    assert utc(T0) in page.text  # control event and ramp timeline as clock times
    assert utc(T0).startswith("2026-12-02 ") and utc(T0).endswith(".123 UTC")
    assert page.tables >= 7  # stages, traffic, latency, events, ramp, checks, details
    # the per-route split is a table with a row per route
    assert re.search(r"<th>active</th><td>700</td>", raw)
    # the ramp's check: value against threshold, samples against needed
    assert "p95_latency_ms" in page.text and "40 / 20" in page.text


def test_refresh_replaces_the_report_stage_left_running(tmp_path: Path) -> None:
    summary = small_summary(stage_status="running")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "index.html").write_text(render_page(summary))
    assert "running" in _read((tmp_path / "index.html").read_text()).text
    summary["stages"][-1]["status"] = "ok"
    refresh_report(tmp_path, summary["stages"])
    page = _read((tmp_path / "index.html").read_text())
    assert "running" not in page.text
    assert json.loads((tmp_path / "summary.json").read_text())["stages"][-1]["status"] == "ok"
