"""The demo's report: summary.json, PNG charts and an HTML page in reports/demo/."""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from geodesic.demo.collect import HOPS, Observed


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    arr = np.asarray(values)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "n": int(arr.size),
    }


def build_summary(
    seen: Observed,
    *,
    ticks_sent: int,
    collector: dict[str, int],
    injected: dict[str, Any],
    kill_switch_flips: int,
    stages: list[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    routes = Counter(s.route for s, _ in seen.signals)
    rollbacks = sum(1 for e in seen.control if e.kind == "ROLLBACK")
    return {
        "ticks_sent": ticks_sent,
        "accepted": collector.get("accepted", 0),
        "duplicates": collector.get("duplicates", 0),
        "dlq": collector.get("dlq", 0),
        "received": collector.get("received", 0),
        "dlq_by_reason": dict(seen.dlq),
        "injected": injected,
        "signals": len(seen.signals),
        "signals_per_route": dict(routes),
        "signals_tradable": sum(1 for s, _ in seen.signals if s.tradable),
        "duplicate_signals_dropped": seen.duplicates,
        "bars": len(seen.bars),
        "outcomes": len(seen.outcomes),
        "rollbacks": rollbacks,
        "kill_switch_flips": kill_switch_flips,
        "control_events": Counter(e.kind for e in seen.control),
        "latency_ms": {hop: percentiles(seen.latencies[hop]) for hop in HOPS},
        "stages": stages,
        **extra,
    }


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def charts(seen: Observed, psi_series: Sequence[dict[str, Any]], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    names = []
    # price and signals, first symbol
    symbols = sorted({b.symbol for b in seen.bars})
    if symbols:
        sym = symbols[0]
        bars = sorted((b for b in seen.bars if b.symbol == sym), key=lambda b: b.bar_index)
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.plot([b.bar_index for b in bars], [b.close for b in bars], lw=0.8, color="black")
        closes = {b.bar_index: b.close for b in bars}
        for side, marker, color in (("long", "^", "green"), ("short", "v", "red")):
            pts = [
                (s.bar_index, closes[s.bar_index])
                for s, _ in seen.signals
                if s.symbol == sym and s.side == side and s.tradable and s.bar_index in closes
            ]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.scatter(x, y, marker=marker, s=10, color=color, label=f"{side} (tradable)")
        ax.set_title(f"{sym}: replayed closes and tradable signals")
        ax.set_xlabel("bar index")
        ax.legend(loc="best", fontsize=8)
        names.append(_save(fig, out / "price_signals.png"))
    # rolling win rate per route
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for route, color in (("active", "tab:blue"), ("canary", "tab:orange")):
        wins = [o.win for o in seen.outcomes if o.route == route and o.win is not None]
        if len(wins) >= 10:
            w = (
                np.convolve(np.asarray(wins, float), np.ones(50) / 50, mode="valid")
                if len(wins) >= 50
                else np.cumsum(wins) / np.arange(1, len(wins) + 1)
            )
            ax.plot(w, label=f"{route} (n={len(wins)})", color=color)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_title("win rate per route (rolling 50 outcomes, net of cost)")
    ax.legend(loc="best", fontsize=8)
    names.append(_save(fig, out / "winrates.png"))
    # PSI over time (max over features and the two volatility features)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    if psi_series:
        t0 = psi_series[0]["t"]
        for feat in sorted({f for p in psi_series for f in p.get("psi", {})}):
            xs = [p["t"] - t0 for p in psi_series if feat in p.get("psi", {})]
            ys = [p["psi"][feat] for p in psi_series if feat in p.get("psi", {})]
            ax.plot(xs, ys, lw=0.8, label=feat)
        ax.set_xlabel("seconds since replay start")
        ax.legend(loc="best", fontsize=6, ncol=3)
    ax.set_title("PSI per feature vs the active model's reference (windowed)")
    names.append(_save(fig, out / "psi.png"))
    # latency histograms
    fig, axes = plt.subplots(1, len(HOPS), figsize=(14, 3))
    for ax, hop in zip(axes, HOPS, strict=True):
        vals = seen.latencies[hop]
        if vals:
            ax.hist(vals, bins=40, color="tab:blue")
        ax.set_title(hop, fontsize=9)
        ax.set_xlabel("ms", fontsize=8)
    names.append(_save(fig, out / "latency.png"))
    # control-event timeline
    fig, ax = plt.subplots(figsize=(10, 2.5))
    if seen.control:
        t0 = seen.control[0].ts_ns
        kinds = sorted({e.kind for e in seen.control})
        for e in seen.control:
            ax.scatter(
                (e.ts_ns - t0) / 1e9,
                kinds.index(e.kind),
                color="tab:red" if e.kind in ("ROLLBACK", "MODE_SWITCH") else "tab:grey",
            )
        ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
        ax.set_xlabel("seconds since first control event")
    ax.set_title("control events (MODE_SWITCH / ROLLBACK in red)")
    names.append(_save(fig, out / "timeline.png"))
    return names


def write_report(
    summary: dict[str, Any], seen: Observed, psi_series: Sequence[dict[str, Any]], out: Path
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    images = charts(seen, psi_series, out)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v, default=str))}</td></tr>"
        for k, v in summary.items()
        if k != "stages"
    )
    stages = "".join(
        f"<tr><td>{html.escape(s['stage'])}</td><td>{html.escape(s['status'])}</td>"
        f"<td>{s.get('seconds', '')}</td><td>{html.escape(str(s.get('detail', '')))}</td></tr>"
        for s in summary.get("stages", [])
    )
    events = "".join(
        f"<tr><td>{e.ts_ns}</td><td>{e.kind}</td><td>{html.escape(e.actor)}</td>"
        f"<td>{html.escape(e.reason)}</td></tr>"
        for e in seen.control
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Geodesic demo</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 8px;vertical-align:top}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Geodesic demo report</h1>
<h2>Stages</h2><table>{stages}</table>
<h2>Summary</h2><table>{rows}</table>
{"".join(f'<h2>{html.escape(n)}</h2><img src="{n}">' for n in images)}
<h2>Control events</h2><table>{events}</table></body></html>"""
    (out / "index.html").write_text(page)
    return out / "index.html"
