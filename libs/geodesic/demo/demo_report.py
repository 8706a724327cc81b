"""The demo's report: summary.json, PNG charts and an HTML page in reports/demo/.

The page is for an operator who has a minute: a headline first (what ran, what was
decided and why), then tables (never JSON dicts), times as UTC clock times (never epoch
ns), and charts whose axes say what they show, with the alarm level and the latency
percentiles drawn on them. `render_page` is a pure function of the summary (a test
renders it from a small one); `write_report` adds the charts and writes the files.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from geodesic.demo.collect import HOPS, Observed

__all__ = [
    "BarCalendar",
    "build_summary",
    "percentiles",
    "refresh_report",
    "render_page",
    "utc",
    "write_report",
]

#: the charts, in page order: file name -> the heading the page shows above it
CHARTS: dict[str, str] = {
    "ramps.png": "Ramp timeline: candidate weight per rollout",
    "price_signals.png": "Replayed prices and tradable signals",
    "winrates.png": "Win rate per route",
    "psi.png": "Drift: PSI per feature against the alarm level",
    "latency.png": "Latency per hop (p50 and p99 marked)",
    "timeline.png": "Control events over time",
}


@dataclass(frozen=True)
class BarCalendar:
    """Which real trading day a replayed bar stands for: bar `first_index + i` is
    `dates[i]` (the replay maps one historical day to one bar)."""

    first_index: int
    dates: np.ndarray  # datetime64

    def date_of(self, bar_index: int) -> np.datetime64 | None:
        i = bar_index - self.first_index
        return self.dates[i] if 0 <= i < len(self.dates) else None


def utc(ts_ns: int | float | None) -> str:
    """Epoch ns as a UTC clock time to the millisecond ('' when unknown)."""
    if not ts_ns:
        return ""
    t = datetime.fromtimestamp(float(ts_ns) / 1e9, UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d} UTC"


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
        "signals_per_side": dict(Counter(s.side for s, _ in seen.signals)),
        "signals_tradable": sum(1 for s, _ in seen.signals if s.tradable),
        "duplicate_signals_dropped": seen.duplicates,
        "bars": len(seen.bars),
        "outcomes": len(seen.outcomes),
        "rollbacks": rollbacks,
        "kill_switch_flips": kill_switch_flips,
        "control_events": dict(Counter(e.kind for e in seen.control)),
        "control_log": [
            {"ts_ns": e.ts_ns, "kind": e.kind, "actor": e.actor, "reason": e.reason}
            for e in seen.control
        ],
        "latency_ms": {hop: percentiles(seen.latencies[hop]) for hop in HOPS},
        "stages": stages,
        **extra,
    }


# ---- charts ------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _price_chart(seen: Observed, calendar: Mapping[str, BarCalendar], out: Path) -> str | None:
    symbols = sorted({b.symbol for b in seen.bars})
    if not symbols:
        return None
    fig, axes = plt.subplots(len(symbols), 1, figsize=(10, 2.6 * len(symbols)), squeeze=False)
    for ax, sym in zip(axes[:, 0], symbols, strict=True):
        bars = sorted((b for b in seen.bars if b.symbol == sym), key=lambda b: b.bar_index)
        cal = calendar.get(sym)

        def x_of(bar_index: int, cal: BarCalendar | None = cal) -> Any:
            return cal.date_of(bar_index) if cal is not None else bar_index

        keep = [b for b in bars if x_of(b.bar_index) is not None]
        ax.plot([x_of(b.bar_index) for b in keep], [b.close for b in keep], lw=0.8, color="k")
        closes = {b.bar_index: b.close for b in keep}
        for side, marker, color in (("long", "^", "green"), ("short", "v", "red")):
            pts = [
                (x_of(s.bar_index), closes[s.bar_index])
                for s, _ in seen.signals
                if s.symbol == sym and s.side == side and s.tradable and s.bar_index in closes
            ]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.scatter(x, y, marker=marker, s=12, color=color, label=f"{side} (tradable)")
        ax.set_title(f"{sym}: daily closes replayed as 1-second bars, with tradable signals")
        ax.set_ylabel(f"{sym} close (index points)")
        if cal is not None:
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
            ax.set_xlabel("trading day (historical date of the replayed bar)")
        else:
            ax.set_xlabel("bar index")
        ax.legend(loc="best", fontsize=8)
    return _save(fig, out / "price_signals.png")


def _winrate_chart(seen: Observed, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for route, color in (("active", "tab:blue"), ("canary", "tab:orange")):
        wins = [o.win for o in seen.outcomes if o.route == route and o.win is not None]
        if len(wins) >= 10:
            w = (
                np.convolve(np.asarray(wins, float), np.ones(50) / 50, mode="valid")
                if len(wins) >= 50
                else np.cumsum(wins) / np.arange(1, len(wins) + 1)
            )
            ax.plot(w, label=f"{route} (n={len(wins)})", color=color)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="coin flip (0.5)")
    ax.set_title("win rate per route (rolling 50 outcomes, net of cost)")
    ax.set_xlabel("outcomes labelled on the route")
    ax.set_ylabel("win rate")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, out / "winrates.png")


def _psi_chart(psi_series: Sequence[Mapping[str, Any]], out: Path) -> str:
    """One small panel per feature: its windowed PSI and the level the drift guard alarms
    at (the level differs per feature: it widens with the feature's autocorrelation)."""
    feats = sorted({f for p in psi_series for f in p.get("psi", {})})
    cols = 4
    rows = max(1, -(-len(feats) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.1 * rows + 0.6), squeeze=False)
    t0 = psi_series[0]["t"] if psi_series else 0.0
    for ax, feat in zip(axes.flat, feats, strict=False):
        pts = [
            (p["t"] - t0, p["psi"][feat], p.get("level", {}).get(feat))
            for p in psi_series
            if feat in p.get("psi", {})
        ]
        xs, ys, lv = zip(*pts, strict=True)
        ax.plot(xs, ys, lw=1.2, color="tab:blue", label="PSI")
        if all(v is not None for v in lv):
            ax.step(xs, lv, where="post", color="red", lw=1.4, ls="--", label="alarm level")
            if any(y > v for y, v in zip(ys, lv, strict=True)):
                ax.set_facecolor("#fff0f0")  # this feature was over its level at some point
        ax.set_title(feat, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("s since replay start", fontsize=7)
        ax.set_ylabel("PSI", fontsize=7)
    for ax in list(axes.flat)[len(feats) :]:
        ax.axis("off")
    if feats:
        axes.flat[0].legend(fontsize=7)
    else:
        axes.flat[0].text(
            0.5, 0.5, "no drift samples", ha="center", transform=axes.flat[0].transAxes
        )
    fig.suptitle(
        "PSI per feature against the drift guard's alarm level (red dashed; shaded: crossed)",
        fontsize=10,
    )
    return _save(fig, out / "psi.png")


def _latency_chart(seen: Observed, out: Path) -> str:
    fig, axes = plt.subplots(2, (len(HOPS) + 1) // 2, figsize=(12, 5.2))
    for ax, hop in zip(axes.flat, HOPS, strict=True):
        vals = np.asarray(seen.latencies[hop], float)
        ax.set_title(hop, fontsize=9)
        ax.set_xlabel("ms", fontsize=8)
        if not vals.size:
            ax.text(0.5, 0.5, "no samples", ha="center", transform=ax.transAxes)
            continue
        p50, p99 = np.percentile(vals, [50, 99])
        top = float(np.percentile(vals, 99.5))  # a far tail would squash the histogram
        ax.hist(np.clip(vals, None, top), bins=40, color="tab:blue", alpha=0.8)
        for v, name, color in ((p50, "p50", "green"), (p99, "p99", "red")):
            ax.axvline(v, color=color, ls="--", lw=1.2, label=f"{name} {v:.2f} ms")
        ax.set_ylabel("signals", fontsize=8)
        ax.legend(fontsize=7)
    return _save(fig, out / "latency.png")


def _timeline_chart(seen: Observed, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.6))
    if seen.control:
        kinds = sorted({e.kind for e in seen.control})
        for e in seen.control:
            ax.scatter(
                datetime.fromtimestamp(e.ts_ns / 1e9, UTC),
                kinds.index(e.kind),
                color="tab:red" if e.kind in ("ROLLBACK", "MODE_SWITCH") else "tab:grey",
            )
        ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.set_xlabel("time (UTC)")
    ax.set_title("control events (MODE_SWITCH / ROLLBACK in red)")
    return _save(fig, out / "timeline.png")


def _ramp_chart(ramps: Sequence[Mapping[str, Any]], out: Path) -> str | None:
    """Weight over time per rollout, with the decision that ended each one."""
    rows = [r for r in ramps if r.get("timeline")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.2))
    t0 = min(int(r["timeline"][0]["ts_ns"]) for r in rows)
    for r, color in zip(rows, ("tab:green", "tab:red", "tab:blue", "tab:purple"), strict=False):
        tl = r["timeline"]
        xs = [(int(e["ts_ns"]) - t0) / 1e9 for e in tl]
        ys = [float(e["weight"]) * 100 for e in tl]
        ax.step(
            xs, ys, where="post", color=color, lw=1.8, label=f"{r['candidate']}: {r['outcome']}"
        )
        ax.scatter(xs[-1:], ys[-1:], color=color, s=40, zorder=3)
        ax.annotate(tl[-1]["state"], (xs[-1], ys[-1]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set_ylim(-5, 110)
    ax.set_xlabel("seconds since the first ramp started")
    ax.set_ylabel("candidate traffic (%)")
    ax.set_title("progressive delivery: each rollout's weight, step by step")
    ax.legend(loc="center right", fontsize=8)
    return _save(fig, out / "ramps.png")


def charts(
    seen: Observed,
    psi_series: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    calendar: Mapping[str, BarCalendar] | None = None,
    ramps: Sequence[Mapping[str, Any]] = (),
) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    for name in CHARTS:  # a chart of an earlier run must not pass for this one's
        (out / name).unlink(missing_ok=True)
    names = [
        _ramp_chart(ramps, out),
        _price_chart(seen, calendar or {}, out),
        _winrate_chart(seen, out),
        _psi_chart(psi_series, out),
        _latency_chart(seen, out),
        _timeline_chart(seen, out),
    ]
    return [n for n in names if n is not None]


# ---- the page ----------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    """A cell: numbers grouped, nested dicts and lists of dicts as tables."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return _kv_table(value)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, Mapping) for v in value):
            return _rows_table(value)
        return _esc(", ".join(str(v) for v in value)) or "none"
    return _esc(value)


def _kv_table(doc: Mapping[str, Any], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in doc.items())
    return f'<table class="{cls}">{rows}</table>'


def _rows_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline(summary: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The verdict line and the few sentences under it: what ran, what was decided, why."""
    stages = summary.get("stages", [])
    failed = [s for s in stages if s.get("status") == "failed"]
    verdict = (
        f"FAILED at stage '{failed[0]['stage']}'"
        if failed
        else f"all {len(stages)} stages passed"
        if stages
        else "no stages recorded"
    )
    period = summary.get("replay_period") or {}
    symbols = ", ".join(period.get("symbols", [])) or "the configured symbols"
    lines = [
        f"Replayed {symbols} from {period.get('first_day', '?')} to "
        f"{period.get('last_day', '?')} as {summary.get('ticks_sent', 0):,} ticks "
        f"({summary.get('replay_rate_ticks_per_s', '?')} ticks/s) through the five services: "
        f"{summary.get('signals', 0):,} signals, "
        f"{summary.get('signals_tradable', 0):,} tradable "
        f"({_sides(summary.get('signals_per_side') or {})}), {summary.get('dlq', 0):,} "
        "malformed ticks dead-lettered."
    ]
    if summary.get("rollback_trigger"):
        lines.append(
            f"The fixed canary was rolled back automatically "
            f"{summary.get('rollback_after_first_signal_s', '?')} s after the first signal "
            f"(trigger: {summary['rollback_trigger']}): {summary.get('rollback_reason', '')}"
        )
    for r in summary.get("ramps", []):
        lines.append(f"Rollout of {r['candidate']}: {r['outcome']} — {r.get('reason', '')}")
    if summary.get("kill_switch_flips"):
        lines.append(
            f"The operator's kill switch was flipped {summary['kill_switch_flips']}x; all "
            f"{summary.get('kill_switch_window_signals', 0)} signals decided while it was on "
            "were halted."
        )
    return verdict, lines


def _sides(per_side: Mapping[str, int]) -> str:
    return ", ".join(f"{n:,} {side}" for side, n in sorted(per_side.items())) or "no sides"


def _traffic(summary: Mapping[str, Any]) -> str:
    exp = (summary.get("injected") or {}).get("expected", {})
    rows = [
        {"count": k, "observed": summary.get(k), "expected from the injected faults": exp.get(k)}
        for k in ("received", "accepted", "duplicates", "dlq")
    ]
    return _rows_table(rows)


def _latency(summary: Mapping[str, Any]) -> str:
    rows = [
        {"hop": hop, "p50 (ms)": p.get("p50"), "p99 (ms)": p.get("p99"), "samples": p.get("n")}
        for hop, p in (summary.get("latency_ms") or {}).items()
    ]
    return _rows_table(rows)


def _ramps(summary: Mapping[str, Any]) -> str:
    out = []
    for r in summary.get("ramps", []):
        steps = " → ".join(f"{f:.0%}" for f in r.get("steps", []))
        out.append(
            f"<h3>{_esc(r['candidate'])}: {_esc(r['outcome'])}</h3>"
            f"<p>plan {_esc(steps)}; {_esc(r.get('reason', ''))}</p>"
        )
        tl = [
            {
                "time": utc(e["ts_ns"]),
                "state": e["state"],
                "weight": f"{float(e['weight']):.0%}",
                "decision": e.get("summary", ""),
            }
            for e in r.get("timeline", [])
        ]
        out.append(_rows_table(tl) if tl else "<p>no transitions recorded</p>")
        windows = [
            {
                "time": utc(w["ts_ns"]),
                "state": w["state"],
                "check": c["name"],
                "status": c["status"],
                "value": c.get("value"),
                "threshold": c.get("threshold"),
                "samples": f"{c.get('samples', 0)} / {c.get('needed', 0)}",
                "detail": c.get("detail", ""),
            }
            for w in r.get("windows", [])
            for c in w.get("checks", [])
        ]
        if windows:
            out.append("<h4>Checks at each decision (value against threshold)</h4>")
            out.append(_rows_table(windows))
    return "".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1250px}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.4em}
table{border-collapse:collapse;margin:.3em 0} th,td{padding:3px 9px;vertical-align:top;
text-align:left;font-size:14px} thead th{background:#e8eef5} tbody tr:nth-child(even){
background:#f6f6f6} table.kv th{background:#f0f0f0;font-weight:600} table table{margin:0}
table table td,table table th{font-size:12px;padding:1px 6px}
.headline{padding:.8em 1.1em;border-radius:6px;margin:.6em 0 1em}
.ok{background:#e6f4ea;border:1px solid #34a853}.bad{background:#fce8e6;border:1px solid #d93025}
.verdict{font-size:20px;font-weight:700} .status-ok{color:#188038;font-weight:600}
.status-failed{color:#d93025;font-weight:700} .status-running{color:#b06000}
img{max-width:100%;border:1px solid #ddd}
"""

#: summary keys shown in their own sections (everything else goes under "Details")
_SHOWN = {
    "stages", "control_log", "latency_ms", "ramps", "received", "accepted", "duplicates",
    "dlq", "ticks_sent", "replay_period",
}  # fmt: skip


def render_page(summary: Mapping[str, Any], images: Sequence[str] = ()) -> str:
    """The whole HTML page from the summary (and the chart file names to show)."""
    verdict, lines = headline(summary)
    ok = not any(s.get("status") == "failed" for s in summary.get("stages", []))
    stages = "".join(
        f"<tr><td>{_esc(s['stage'])}</td>"
        f'<td class="status-{_esc(s["status"])}">{_esc(s["status"])}</td>'
        f"<td>{_fmt(s.get('seconds'))}</td><td>{_esc(s.get('detail', ''))}</td></tr>"
        for s in summary.get("stages", [])
    )
    events = _rows_table(
        [
            {
                "time (UTC)": utc(e["ts_ns"]),
                "kind": e["kind"],
                "actor": e["actor"],
                "reason": e["reason"],
            }
            for e in summary.get("control_log", [])
        ]
    )
    details = {k: v for k, v in summary.items() if k not in _SHOWN}
    charts_html = "".join(
        f'<h2>{_esc(CHARTS.get(n, n))}</h2><img src="{_esc(n)}" alt="{_esc(CHARTS.get(n, n))}">'
        for n in images
    )
    ramps = _ramps(summary)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Geodesic demo report</title><style>{_CSS}</style></head><body>
<h1>Geodesic demo report</h1>
<div class="headline {"ok" if ok else "bad"}"><div class="verdict">{_esc(verdict)}</div>
<ul>{"".join(f"<li>{_esc(x)}</li>" for x in lines)}</ul></div>
{f"<h2>Progressive delivery</h2>{ramps}" if ramps else ""}
<h2>Stages</h2><table><thead><tr><th>stage</th><th>status</th><th>seconds</th>
<th>detail</th></tr></thead><tbody>{stages}</tbody></table>
<h2>Ticks in, against the faults injected</h2>{_traffic(summary)}
<h2>Latency per hop</h2>{_latency(summary)}
{charts_html}
<h2>Control events</h2>{events}
<h2>Details</h2>{_kv_table(details)}
</body></html>"""


def write_report(
    summary: dict[str, Any],
    seen: Observed,
    psi_series: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    calendar: Mapping[str, BarCalendar] | None = None,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    images = charts(seen, psi_series, out, calendar=calendar, ramps=summary.get("ramps", []))
    (out / "index.html").write_text(render_page(summary, images))
    return out / "index.html"


def refresh_report(out: Path, stages: list[dict[str, Any]]) -> None:
    """Rewrite summary.json and the page with the final stage records: the report is
    written inside a stage, which (with the stages after it) finishes only later."""
    doc = json.loads((out / "summary.json").read_text())
    doc["stages"] = stages
    (out / "summary.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    images = [n for n in CHARTS if (out / n).exists()]
    (out / "index.html").write_text(render_page(doc, images))
