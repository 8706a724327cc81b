"""Tables for people (rich); --json output never comes through here."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from geodesic.control.audit import AuditEvent
from geodesic.operations.common import format_ns
from geodesic.operations.health import warmup_line


def console() -> Console:
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)


# ---- rendering -------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_status(doc: dict[str, Any], console: Console) -> None:
    src = doc["source"]
    console.print(
        f"[bold]Geodesic control plane[/bold] {src.get('redis', '')} prefix "
        f"{src.get('prefix', '')} (version {doc['version']}, {doc['generated_at']})"
    )
    if doc.get("external_change"):
        console.print(
            f"[red]EXTERNAL CHANGE recorded just now: {doc['external_change']['reason']}; "
            "see `geodesic history --list --kind EXTERNAL_CHANGE`[/red]"
        )
    render_services(doc.get("services", []), console)
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    slots, r = doc["slots"], doc["rollout"]
    for name in ("active", "shadow", "previous"):
        t.add_row(f"slot {name}", slots[name] or "-")
    if r["mode"] == "disabled":
        t.add_row("rollout", "disabled")
    else:
        t.add_row(
            "rollout",
            f"{r['mode']}: candidate {r['candidate']} on {r['canary_fraction']:.2%} "
            f"(seed {r['seed']})",
        )
    ramp = doc.get("ramp")
    if ramp:
        t.add_row(
            "ramp",
            f"{ramp['candidate']}: {ramp['state']} at {ramp['weight']:.0%} "
            "(`geodesic rollout status`)",
        )
    ks = doc["kill_switches"]
    t.add_row(
        "kill switches",
        f"global {'[red]ON[/red]' if ks['global'] else 'off'}; symbols: "
        + (f"[red]{', '.join(ks['symbols'])}[/red]" if ks["symbols"] else "none"),
    )
    ts = doc["trading_states"]
    sym = ", ".join(f"{k}={v}" for k, v in ts["symbols"].items()) or "none set"
    t.add_row("trading state", f"global {ts['global']}; symbols: {sym}")
    cd = doc["cooldown"]
    t.add_row(
        "cooldown",
        f"[yellow]until {cd['until']}[/yellow] ({cd['remaining_s']:.0f} s left)"
        if cd["active"]
        else "none",
    )
    console.print(t)

    w = Table(title="Live win rates per route (rolling, net of cost)")
    for col in ("route", "model", "win rate", "95% interval", "n"):
        w.add_column(col)
    for row in doc["winrates"].values():
        if row["rate"] is None:
            w.add_row(row["route"], row["model"] or "-", "insufficient data", "-", "0")
        else:
            w.add_row(
                row["route"],
                row["model"] or "-",
                _pct(row["rate"]),
                f"{_pct(row['lower'])} .. {_pct(row['upper'])}",
                str(row["n"]),
            )
    console.print(w)
    if not doc["risk_status_available"]:
        console.print("[yellow]no risk-supervisor status published (is it running?)[/yellow]")

    drift = doc["drift"]
    if drift["available"]:
        d = Table(title="Drift vs the active model's reference")
        for col in ("feature", "n", "PSI", "PSI level", "KS", "KS level", "status"):
            d.add_column(col)
        for f in drift["features"]:
            style = "red" if f["status"] == "ALARM" else None
            d.add_row(
                f["feature"],
                str(f["n"]),
                _pct(f["psi"]),
                _pct(f["psi_level"]),
                _pct(f["ks"]),
                _pct(f["ks_level"]),
                f["status"],
                style=style,
            )
        console.print(d)
    else:
        console.print(f"drift: insufficient data ({drift['note']})")

    sh = doc["shadow"]
    if sh["available"]:
        rate = "insufficient data" if sh["match_rate"] is None else f"{sh['match_rate']:.3f}"
        console.print(
            f"shadow {sh['model'] or '-'}: match rate {rate} over {sh['window']} joined; "
            f"mean |delta| {_pct(sh['mean_abs_delta'])}; parity failures {sh['parity_fail']}"
        )
    else:
        console.print(f"shadow {sh['model'] or '-'}: {sh['status']}")

    if doc["guards"]:
        g = Table(title="Risk supervisor guards")
        for col in ("guard", "verdict", "reason"):
            g.add_column(col)
        for name, dec in sorted(doc["guards"].items()):
            verdict = str(dec.get("verdict", "?"))
            style = "red" if verdict in ("rollback", "halt", "alarm", "reduce") else None
            g.add_row(name, verdict, str(dec.get("reason", "")), style=style)
        console.print(g)
    render_audit(
        [AuditEvent.from_dict(e) for e in doc["audit"]],
        console,
        title=f"last {len(doc['audit'])} audit events",
    )


def render_services(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        console.print(
            "[yellow]services: none known (no running `geodesic up` stack on this Redis; "
            "give --service-url NAME=URL)[/yellow]"
        )
        return
    t = Table(title="Services")
    for col in ("service", "state", "lag", "last seen", "detail"):
        t.add_column(col, overflow="fold")
    for row in rows:
        style = {"ready": "green", "not ready": "yellow"}.get(row["state"], "red")
        lag = str(row["lag"]) if row["lag"] is not None else f"? ({row['lag_error'] or '-'})"
        age = row["last_seen_age_s"]
        seen = "never" if age is None else "now" if age < 1 else f"{age:.0f} s ago"
        detail = row["detail"]
        if row.get("last_input"):
            detail += f"; last tick accepted {row['last_input']}"
        if row.get("warmup"):
            detail += f"; {warmup_line(row['warmup'])}"
        t.add_row(row["service"], f"[{style}]{row['state']}[/{style}]", lag, seen, detail)
    console.print(t)


def _short(value: Any) -> str:
    if isinstance(value, dict) and "mode" in value and "canary_fraction" in value:
        if value["mode"] == "disabled":
            return "disabled"
        return (
            f"{value['mode']} {value.get('candidate')} {float(value['canary_fraction']):.0%} "
            f"seed {value.get('seed')}"
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, ""))
    return "-" if value is None else str(value)


def render_audit(events: list[AuditEvent], console: Console, *, title: str) -> None:
    t = Table(title=title)
    t.add_column("time (UTC)", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    for col in ("symbol", "actor", "from -> to", "reason"):
        t.add_column(col, overflow="fold")
    for e in events:
        t.add_row(
            format_ns(e.ts_ns),
            e.kind,
            e.symbol or "*",
            e.actor,
            f"{_short(e.before)} -> {_short(e.after)}",
            e.reason,
        )
    console.print(t)


def render_gates(table: dict[str, Any], console: Console) -> None:
    t = Table(title=f"Promotion gates for {table['model_id']}")
    for col in ("source", "gate", "value", "limit", "result", "detail"):
        t.add_column(col, overflow="fold")
    for g in table["gates"]:
        value = "-" if g["value"] is None else f"{g['value']:.4g}"
        limit = "-" if g["limit"] is None else f"{g['comparison']} {g['limit']:.4g}".strip()
        t.add_row(
            g["source"],
            g["name"],
            value,
            limit,
            "[green]PASS[/green]" if g["passed"] else "[red]FAIL[/red]",
            g["detail"],
        )
    console.print(t)
    if table["passed"]:
        console.print("[green]all gates pass[/green]")
    else:
        console.print(
            f"[red]{len(table['failed'])} gate(s) fail:[/red] {', '.join(table['failed'])}"
        )
