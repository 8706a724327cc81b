"""The soak bench's per-window arithmetic (bench/soak.py): rows from counters and deliveries."""

from __future__ import annotations

from bench.relay import CLOSING, is_closing
from bench.soak import Run, table, verdict, windows


def _run(rate: float, seconds: int, e2e_ms: float) -> Run:
    """Counters sampled every 5 s at ``rate``; one delivery a second with ``e2e_ms``."""
    run = Run(start_ns=1_000_000_000_000)
    for t in range(0, seconds + 1, 5):
        run.samples.append(
            {
                "t_s": float(t),
                "sent": int(rate * t),
                "through": int(rate * t),
                "lag": {"collector": 3 if t == 65 else 0},
                "rss_mb": {"broker-server": 300.0 + t},
                "cpu_pct": {"broker-server": 20.0, "collector": 10.0 + t % 2},
            }
        )
    for s in range(seconds):
        run.delivered.append((run.start_ns + s * 1_000_000_000 + 1, e2e_ms + (s % 60 == 59) * 90))
    return run


def test_windows_rates_latency_lag_and_resources_per_minute() -> None:
    rows = windows(_run(1000.0, 180, 10.0), 60.0, ["broker-server", "collector"])
    assert [r["minute"] for r in rows] == [1.0, 2.0, 3.0]
    assert all(r["sent_per_s"] == 1000.0 and r["first_hop_per_s"] == 1000.0 for r in rows)
    assert all(r["delivered_per_s"] == 1.0 for r in rows)
    assert rows[0]["e2e_p50_ms"] == 10.0
    assert rows[0]["e2e_max_ms"] == 100.0  # the last delivery of each minute is slow
    assert [r["lag_max"] for r in rows] == [0, 3, 0]
    assert rows[1]["rss_mb"]["broker-server"] == 420.0  # at the window's end
    assert rows[0]["cpu_pct"]["broker-server"] == 20.0


def test_verdict_needs_the_rate_and_the_budget_in_every_window() -> None:
    rows = windows(_run(1000.0, 180, 10.0), 60.0, [])
    held = verdict(rows, 1000.0, [25.0, 150.0])
    assert held["rate_kept_every_window"] is True
    assert held["windows"] == 3
    assert held["p99<25ms_every_window"] is False  # p99 catches the slow delivery
    assert held["p99<150ms_every_window"] is True
    assert verdict(rows, 2000.0, [25.0])["rate_kept_every_window"] is False
    assert verdict([], 1000.0, [25.0])["rate_kept_every_window"] is False


def test_table_puts_the_floor_beside_each_window() -> None:
    geo = windows(_run(1000.0, 120, 10.0), 60.0, ["broker-server", "collector"])
    floor = windows(_run(1000.0, 60, 2.0), 60.0, ["broker-server"])
    text = table({"geodesic": {"windows": geo}, "floor": {"windows": floor}})
    lines = text.splitlines()
    assert len(lines) == 2 + 2
    assert "2.0 / " in lines[2] and lines[3].count("|") == lines[2].count("|")


def test_relay_forwards_by_the_closing_header() -> None:
    assert is_closing([("sent_ns", b"1"), (CLOSING, b"1")])
    assert not is_closing([("sent_ns", b"1")])
