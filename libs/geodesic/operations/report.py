"""The daily risk report: one JSON document, CSV tables and PNG charts in one directory.

``build_report`` is pure (data in, dict out); ``write_report`` renders it. Charts use
matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so a
report can be built from any thread or process without a display.

Latency comes from the services' Prometheus histograms (``stage_latency_ms{stage}``,
``e2e_latency_ms``); quantiles are interpolated inside buckets as Prometheus'
histogram_quantile does, so they agree with the Grafana panels. Without metrics the chart
is omitted and the report says so.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geodesic.control.audit import AuditEvent
from geodesic.control.state import ControlSnapshot
from geodesic.operations.common import format_ns, jsonable
from geodesic.operations.status import build_status

__all__ = [
    "LATENCY_METRICS",
    "build_report",
    "histogram_quantile",
    "latency_rows",
    "parse_histograms",
    "write_report",
]

REPORT_FORMAT = "geodesic.daily_risk_report/1"
LATENCY_METRICS = ("stage_latency_ms", "e2e_latency_ms")
QUANTILES = (0.5, 0.95, 0.99)

Buckets = list[tuple[float, float]]  # (upper bound le, cumulative count), sorted by le


# ---- latency from Prometheus text ------------------------------------------------------
def parse_histograms(
    text: str, metrics: Sequence[str] = LATENCY_METRICS
) -> dict[tuple[str, str], Buckets]:
    """(metric, stage) -> cumulative buckets; series differing in other labels are summed."""
    from prometheus_client.parser import text_string_to_metric_families

    acc: dict[tuple[str, str], dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in metrics:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            le = float(sample.labels["le"])
            stage = sample.labels.get("stage") or family.name.removesuffix("_latency_ms")
            key = (family.name, stage)
            per = acc.setdefault(key, {})
            per[le] = per.get(le, 0.0) + float(sample.value)
    return {k: sorted(v.items()) for k, v in acc.items()}


def histogram_quantile(buckets: Buckets, q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket holding rank q * total.

    None with no observations; the highest finite bound when the rank falls in +Inf.
    """
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0 or math.isnan(total):
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def latency_rows(texts: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per (service, metric, stage): count and p50/p95/p99 in ms."""
    rows = []
    for service, text in texts.items():
        for (metric, stage), buckets in sorted(parse_histograms(text).items()):
            total = buckets[-1][1] if buckets else 0.0
            row: dict[str, Any] = {
                "service": service,
                "metric": metric,
                "stage": stage,
                "count": int(total),
            }
            for q in QUANTILES:
                row[f"p{round(q * 100)}_ms"] = histogram_quantile(buckets, q)
            rows.append(row)
    return rows


# ---- the document ----------------------------------------------------------------------
def build_report(
    *,
    now_ns: int,
    hours: float,
    snapshot: ControlSnapshot,
    audit: Sequence[AuditEvent],
    risk_status: Mapping[str, Any] | None,
    shadow_stats: Mapping[str, Any] | None,
    latency: Sequence[Mapping[str, Any]] | None = None,
    latency_errors: Sequence[str] = (),
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as data: control state now, the window's audit trail, win rates per
    route, drift per feature, shadow parity, guards and latency (when measured)."""
    since_ns = now_ns - int(hours * 3600 * 1e9)
    window = [e for e in audit if since_ns <= e.ts_ns <= now_ns]
    st = build_status(snapshot, [], risk_status, shadow_stats, now_ns, source=source)
    notes: list[str] = []
    if not risk_status:
        notes.append("no risk-supervisor status published: win rates and drift unavailable")
    for route, wr in st["winrates"].items():
        if wr["rate"] is None:
            notes.append(f"win rate ({route}): insufficient data (no labelled outcomes)")
    if not st["drift"]["available"]:
        notes.append(f"drift: unavailable ({st['drift']['note']})")
    elif st["drift"]["alarms"]:
        notes.append(f"drift ALARM on: {', '.join(st['drift']['alarms'])}")
    if latency is None:
        notes.append("latency chart omitted: no --metrics-url given")
    elif not latency:
        notes.append("latency chart omitted: no latency histograms found in the metrics read")
    notes.extend(f"metrics: {err}" for err in latency_errors)
    by_kind = Counter(e.kind for e in window)
    doc = {
        "format": REPORT_FORMAT,
        "generated_at": format_ns(now_ns),
        "window": {
            "hours": hours,
            "since": format_ns(since_ns),
            "until": format_ns(now_ns),
            "since_ns": since_ns,
            "until_ns": now_ns,
        },
        "source": st["source"],
        "control": {
            k: st[k]
            for k in ("version", "slots", "rollout", "kill_switches", "trading_states", "cooldown")
        },
        "audit": {
            "count": len(window),
            "by_kind": dict(sorted(by_kind.items())),
            "rollbacks": by_kind.get("ROLLBACK", 0),
            "events": [e.as_dict() for e in window],
        },
        "winrates": st["winrates"],
        "drift": st["drift"],
        "guards": st["guards"],
        "risk_actions": st["risk_actions"],
        "shadow": st["shadow"],
        "latency": {"available": bool(latency), "rows": list(latency or [])},
        "notes": notes,
    }
    out: dict[str, Any] = jsonable(doc)
    return out


# ---- files -----------------------------------------------------------------------------
AUDIT_COLUMNS = ("time", "ts_ns", "kind", "symbol", "actor", "reason", "from", "to", "id")
WINRATE_COLUMNS = ("route", "model", "wins", "n", "rate", "lower", "upper", "status")
DRIFT_COLUMNS = (
    "feature",
    "n",
    "psi",
    "psi_level",
    "psi_alarm",
    "ks",
    "ks_level",
    "ks_alarm",
    "status",
)
LATENCY_COLUMNS = ("service", "metric", "stage", "count", "p50_ms", "p95_ms", "p99_ms")


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return v


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(row.get(c)) for c in columns])
    return path


def write_report(doc: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json + audit_events / winrates / drift (/ latency) CSVs + PNG charts.

    The JSON lists the files it came with; charts without data are left out (and noted).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["audit_csv"] = _write_csv(out / "audit_events.csv", AUDIT_COLUMNS, doc["audit"]["events"])
    winrates = list(doc["winrates"].values())
    files["winrates_csv"] = _write_csv(out / "winrates.csv", WINRATE_COLUMNS, winrates)
    files["winrates_png"] = chart_winrates(winrates, out / "winrates.png")
    drift = doc["drift"]["features"]
    files["drift_csv"] = _write_csv(out / "drift.csv", DRIFT_COLUMNS, drift)
    notes = list(doc["notes"])
    if any(r.get("psi") is not None for r in drift):
        files["drift_png"] = chart_drift(drift, out / "drift.png")
    else:
        notes.append("drift chart omitted: no PSI values yet")
    lat = doc["latency"]["rows"]
    if lat:
        files["latency_csv"] = _write_csv(out / "latency.csv", LATENCY_COLUMNS, lat)
        files["latency_png"] = chart_latency(lat, out / "latency.png")
    final = {
        **doc,
        "notes": notes,
        "files": {k: p.name for k, p in sorted(files.items())} | {"report_json": "report.json"},
    }
    path = out / "report.json"
    tmp = out / ".report.json.tmp"
    tmp.write_text(json.dumps(jsonable(final), indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)
    files["report_json"] = path
    return files


# ---- charts ----------------------------------------------------------------------------
def _figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def chart_winrates(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Win rate per route with its Wilson interval; empty routes say insufficient data."""
    fig = _figure()
    ax = fig.add_subplot()
    labels = [f"{r['route']}\n{r.get('model') or '-'}" for r in rows]
    for i, r in enumerate(rows):
        if r.get("rate") is None:
            ax.text(i, 0.25, "insufficient data\n(no outcomes)", ha="center", color="grey")
            continue
        lo, hi = r.get("lower"), r.get("upper")
        err = [[r["rate"] - lo], [hi - r["rate"]]] if lo is not None and hi is not None else None
        ax.bar(i, r["rate"], yerr=err, capsize=6, color="tab:blue" if i == 0 else "tab:orange")
        ax.text(i, min(r["rate"] + 0.05, 0.97), f"{r['rate']:.3f}\nn={r['n']}", ha="center")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("rolling win rate (net of cost)")
    ax.set_title("Win rate per route (95% Wilson interval)")
    return _save(fig, path)


def chart_drift(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """PSI per feature (red when alarmed) against its sample-size-aware alarm level."""
    fig = _figure(max(7.0, 0.6 * len(rows) + 2), 4.5)
    ax = fig.add_subplot()
    xs = range(len(rows))
    psi = [r.get("psi") or 0.0 for r in rows]
    colors = ["tab:red" if r.get("status") == "ALARM" else "tab:blue" for r in rows]
    ax.bar(xs, psi, color=colors, label="PSI")
    for i, r in enumerate(rows):
        if r.get("psi") is None:
            ax.text(i, 0, "insufficient\ndata", ha="center", va="bottom", color="grey")
    levels = [(i, r["psi_level"]) for i, r in enumerate(rows) if r.get("psi_level") is not None]
    if levels:
        ax.scatter(
            [i for i, _ in levels],
            [v for _, v in levels],
            marker="_",
            s=400,
            color="black",
            label="alarm level",
        )
    ax.set_xticks(list(xs), [r["feature"] for r in rows], rotation=45, ha="right")
    ax.set_ylabel("PSI vs model reference")
    ax.set_title("Feature drift (PSI per feature vs alarm level)")
    ax.legend(loc="upper right")
    return _save(fig, path)


def chart_latency(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """p50 / p95 / p99 per service stage (log scale: tails are what matter)."""
    fig = _figure(max(7.0, 0.9 * len(rows) + 2), 4.5)
    ax = fig.add_subplot()
    width = 0.27
    labels = [f"{r['service']}:{r['stage']}" for r in rows]
    for j, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        vals = [r.get(q) or 0.0 for r in rows]
        ax.bar([i + (j - 1) * width for i in range(len(rows))], vals, width, label=q[:-3])
    ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right")
    positive = [v for r in rows for q in ("p50_ms", "p99_ms") if (v := r.get(q) or 0) > 0]
    if positive and max(positive) / min(positive) > 50:  # tails far above medians
        ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Per-stage latency (from Prometheus histograms)")
    ax.legend()
    return _save(fig, path)
