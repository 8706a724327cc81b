"""Operator commands on the live control plane (DESIGN.md section 6).

    status | kill-switch | halt | resume | promote | rollout (canary | full | disabled |
    start | pause | resume | abort | status) | rollback | shadow |
    cooldown clear | gates | history | report

Every change goes through ControlPlane: one atomic, versioned commit with an audit entry
(actor, reason, from, to) and a publish that reaches every scorer in milliseconds. A
change needs --reason; --actor defaults to $USER. Promotion and rollouts check the
model first (signature, checksums, schema hash, offline gates from the signed manifest)
and respect the rollback cooldown; --force overrides both and says so in the audit
reason, so an override is never silent.

Exit codes, for scripts: 0 success (for `gates`: every gate passes), 1 refused or a gate
failed (the reason on stderr), 2 usage or connection error. The Redis URL may carry a
password: it is only ever shown masked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geodesic.cli.operator.args import (
    fraction,
    guard_arg,
    instant,
    model_id_arg,
    parents,
    positive,
    registry_arg,
    symbol_args,
)
from geodesic.cli.operator.plumbing import runner


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conn, change = parents()

    p = sub.add_parser(
        "status",
        parents=[conn],
        help="services (health, lag, last seen), control plane, win rates, drift, shadow; "
        "exit 1 when a service is down or not ready",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--audit", type=int, default=10, metavar="N", help="last N audit events")
    p.add_argument(
        "--service-url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a service's HTTP base URL to probe (repeatable; default: the services of the "
        "running `geodesic up` stack)",
    )
    guard_arg(p)
    p.set_defaults(func=runner("reads", "status"))

    p = sub.add_parser("kill-switch", parents=[conn, change], help="flip a kill switch")
    p.add_argument("state", choices=("on", "off"), help="on halts everything it covers")
    symbol_args(p, "the global switch")
    p.set_defaults(func=runner("changes", "kill_switch"))

    p = sub.add_parser("halt", parents=[conn, change], help="set REDUCING or HALTED")
    symbol_args(p, "global")
    p.add_argument(
        "--state",
        choices=("REDUCING", "HALTED"),
        default="HALTED",
        help="REDUCING: only exits are tradable; HALTED (default): nothing is",
    )
    p.set_defaults(func=runner("changes", "halt"))

    p = sub.add_parser("resume", parents=[conn, change], help="set the trading state ACTIVE")
    symbol_args(p, "global")
    p.set_defaults(func=runner("changes", "resume"))

    p = sub.add_parser(
        "promote", parents=[conn, change], help="make a verified model active (active -> previous)"
    )
    p.add_argument("model_id", type=model_id_arg, help="the model to make active")
    p.add_argument(
        "--force",
        action="store_true",
        help="override failed gates / cooldown (never a missing, unverified or wrong-schema model)",
    )
    registry_arg(p)
    p.set_defaults(func=runner("changes", "promote"))

    p = sub.add_parser(
        "rollout",
        help="canary / full rollout of a candidate, or disable it; start / pause / resume / "
        "abort / status an automatic ramp",
    )
    rsub = p.add_subparsers(dest="mode", required=True, metavar="MODE")
    q = rsub.add_parser("canary", parents=[conn, change], help="route a fraction to a candidate")
    q.add_argument(
        "--candidate", type=model_id_arg, required=True, help="the model to route bars to"
    )
    q.add_argument("--fraction", type=fraction, required=True, help="share of bars, (0, 1]")
    q.add_argument("--seed", type=int, default=0, help="routing hash seed (default 0)")
    q.add_argument("--force", action="store_true", help="override failed checks / cooldown")
    registry_arg(q)
    q.set_defaults(func=runner("changes", "rollout"))
    q = rsub.add_parser("full", parents=[conn, change], help="route every bar to the candidate")
    q.add_argument("--candidate", type=model_id_arg, help="default: the canary in flight")
    q.add_argument("--seed", type=int, default=None, help="default: the current seed")
    q.add_argument("--force", action="store_true", help="override failed checks / cooldown")
    registry_arg(q)
    q.set_defaults(func=runner("changes", "rollout"))
    q = rsub.add_parser("disabled", parents=[conn, change], help="active model only")
    q.set_defaults(func=runner("changes", "rollout"), force=False)
    # the automatic ramp (geodesic.rollout): the risk supervisor advances it step by step
    q = rsub.add_parser(
        "start",
        parents=[conn, change],
        help="ramp a candidate automatically (default 5%%, 10%%, 25%%, 50%%, 100%%), judged "
        "by the plan's checks, promoted at the end",
    )
    q.add_argument("candidate", type=model_id_arg, help="the model to ramp up")
    q.add_argument(
        "--plan",
        type=Path,
        default=None,
        metavar="FILE",
        help="rollout plan, YAML or JSON (geodesic.rollout.RolloutPlan; default: the default plan)",
    )
    q.add_argument(
        "--force", action="store_true", help="override failed offline gates (never the cooldown)"
    )
    registry_arg(q)
    q.set_defaults(func=runner("ramp", "start"))
    q = rsub.add_parser(
        "pause", parents=[conn, change], help="hold the ramp at its weight (checks still abort)"
    )
    q.set_defaults(func=runner("ramp", "pause"))
    q = rsub.add_parser(
        "resume", parents=[conn, change], help="continue a paused ramp (the step restarts)"
    )
    q.set_defaults(func=runner("ramp", "resume"))
    q = rsub.add_parser(
        "abort", parents=[conn, change], help="end the ramp: the candidate back to 0%% now"
    )
    q.set_defaults(func=runner("ramp", "abort"))
    q = rsub.add_parser(
        "status",
        parents=[conn],
        help="the ramp's step, each check (value, threshold, samples), time to the next decision",
    )
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=runner("ramp", "status"))

    p = sub.add_parser(
        "rollback", parents=[conn, change], help="take the change in flight out of service"
    )
    p.add_argument("--cooldown-s", type=float, default=900.0, help="promotion cooldown")
    p.add_argument("--force", action="store_true", help="even with nothing to roll back")
    registry_arg(p)
    p.set_defaults(func=runner("changes", "rollback"))

    p = sub.add_parser("shadow", parents=[conn, change], help="set or clear the shadow model")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("model_id", nargs="?", type=model_id_arg, help="the model to shadow-score")
    g.add_argument("--clear", action="store_true", help="stop shadow scoring")
    p.add_argument(
        "--force",
        action="store_true",
        help="accepted for symmetry; a shadow must still exist and verify",
    )
    registry_arg(p)
    p.set_defaults(func=runner("changes", "shadow"))

    p = sub.add_parser("cooldown", help="the rollback cooldown")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = csub.add_parser("clear", parents=[conn, change], help="allow promotions again")
    q.set_defaults(func=runner("changes", "cooldown_clear"))

    p = sub.add_parser(
        "gates",
        parents=[conn],
        help="offline + live promotion gates (exit 0 pass, 1 fail, 2 error)",
    )
    p.add_argument("model_id", type=model_id_arg, help="the model to judge")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--offline", action="store_true", help="registry and offline gates only")
    registry_arg(p)
    guard_arg(p)
    p.set_defaults(func=runner("reads", "gates"))

    p = sub.add_parser(
        "history",
        parents=[conn],
        help="which model served SYMBOL at TIME (audit replay), or --list the audit trail",
        description="TIME: ISO-8601 (UTC when no zone), epoch ns, 'now', or an age (90m, 2h).",
    )
    p.add_argument(
        "--symbol", help="the symbol to answer for (with --list: its and global entries)"
    )
    p.add_argument("--at", type=instant, help="the instant to answer for")
    p.add_argument("--bar-index", type=int, help="also say which route this bar took")
    p.add_argument("--list", action="store_true", help="print the audit trail")
    p.add_argument("--since", type=instant, help="with --list: entries at or after TIME")
    p.add_argument("--until", type=instant, help="with --list: entries at or before TIME")
    p.add_argument("--kind", action="append", help="only these kinds (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="newest N entries of the list")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=runner("reads", "history"))

    p = sub.add_parser("report", parents=[conn], help="daily risk report: JSON, CSV and PNG charts")
    p.add_argument("--out", type=Path, default=None, help="default reports/daily/<UTC date>")
    p.add_argument("--hours", type=positive, default=24.0, help="audit window (default 24)")
    p.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="a service's /metrics for the latency chart (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the report JSON")
    p.set_defaults(func=runner("reads", "report"))
