"""The demo, stage by stage. Every stage must succeed for exit code 0; a failure names
the stage and the log to read. Everything started here is stopped here, by PID.

Each stage is a function over what the earlier stages built: the replay window, the
running fleet's ports, the live phase's outcome (geodesic.demo.live).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from geodesic.contracts.model_registry import ENV_MODEL_REGISTRY
from geodesic.contracts.services import FEATURE, RISK_SUPERVISOR
from geodesic.demo.collect import http_json
from geodesic.demo.config import DemoSettings
from geodesic.demo.demo_report import build_summary, refresh_report, write_report
from geodesic.demo.live import (
    ACTIVE,
    CANDIDATE,
    LiveOutcome,
    ReplayWindow,
    ServicePorts,
    live_phase,
)
from geodesic.demo.stages import StageFailedError, Stages
from geodesic.features import WARMUP_BARS
from geodesic.lifecycle.config import DatasetConfig, TrainConfig
from geodesic.lifecycle.training import train
from geodesic.lifecycle.training_data import live_bar_offset
from geodesic.marketdata import load_dataset
from geodesic.marketdata.replay import backfill_start_ns
from geodesic.stack import EmbeddedStack, StackInfo
from geodesic.stack.fleet import Fleet

__all__ = ["run_demo"]

DATASETS = ("sp500", "nasdaq")


def run_demo(settings: DemoSettings, console: Console | None = None) -> int:
    """Run every stage; 0 when all succeed, 1 (and out_dir/FAILED.txt) when one fails."""
    s = settings
    console = console or Console()
    console.rule(f"Geodesic demo ({'fast' if s.fast else 'full'})")
    (s.out_dir / "FAILED.txt").unlink(missing_ok=True)
    # offline reports of this run's models: a fold directory of an earlier run would
    # (rightly) be refused as reuse across folds
    shutil.rmtree(s.out_dir / "models", ignore_errors=True)
    stack = EmbeddedStack(run_root=s.run_root, use_env=False)
    stages = Stages(console, log_hint=f"{stack.run_dir}/*.log")
    running = contextlib.ExitStack()  # stops what was started, last first
    page: Path | None = None
    try:
        with stages.stage("start embedded broker and Redis") as rec:
            running.callback(stack.stop)
            info = stack.start()
            rec["detail"] = f"bootstrap {info.bootstrap}, redis {info.redis_url}"
        window = plan_replay(s)
        registry = stack.run_dir / "registry"
        with stages.stage("train active and candidate on early real history") as rec:
            train_models(s, window, registry)
            rec["detail"] = f"{ACTIVE}, {CANDIDATE} (bars before {s.cutoff})"
        with stages.stage("start the five services") as rec:
            fleet = Fleet(stack.run_dir, service_env(info, registry))
            running.callback(fleet.stop_all)
            fleet.start_all()
            fleet.wait_healthy(120)
            rec["detail"] = ", ".join(f"{n}:{d['http_port']}" for n, d in fleet.describe().items())
        ports = ServicePorts.of(fleet)
        live = asyncio.run(
            live_phase(s, stages, stack.kafka_settings, info.redis_url, ports, registry, window)
        )
        with stages.stage("write the report") as rec:
            collector = http_json(ports.collector, "/info")
            summary = build_summary(
                live.seen,
                ticks_sent=live.ticks_sent,
                collector=collector.get("counts", {}),
                injected=live.replay.injected.as_report(),
                kill_switch_flips=live.replay.kill.flips,
                stages=stages.records,
                extra=live.extra(),
            )
            try:
                verify(stages, summary, live)
            finally:
                page = write_report(
                    summary,
                    live.seen,
                    live.replay.psi_series,
                    s.out_dir,
                    calendar=window.calendar(),
                )
            rec["detail"] = str(page)
        print_summary(console, s, summary)
        return 0
    except StageFailedError as exc:
        console.print(f"[bold red]✘ {exc}[/]")
        with contextlib.suppress(Exception):
            s.out_dir.mkdir(parents=True, exist_ok=True)
            (s.out_dir / "FAILED.txt").write_text(str(exc) + "\n")
        return 1
    finally:
        with stages.stage("stop everything"):
            running.close()
        if page is not None:  # the report's own stage (and the stop) finished after it
            refresh_report(page.parent, stages.records)


def plan_replay(settings: DemoSettings) -> ReplayWindow:
    """Training uses the bars before the cutoff; the replay the bars from it to the end."""
    cut = np.datetime64(settings.cutoff, "D")
    end = np.datetime64(settings.end, "D")
    replay, n_train = {}, 0
    for name in DATASETS:
        ser = load_dataset(name)
        k = int(np.searchsorted(ser.dates, cut, side="left"))
        e = int(np.searchsorted(ser.dates, end, side="right"))
        replay[name] = ser.take(slice(k - (WARMUP_BARS - 1), e))
        n_train = k - (WARMUP_BARS - 1)
    n_bars = len(next(iter(replay.values())))
    t0_ns = backfill_start_ns(time.time_ns(), 1, n_bars + 400)
    return ReplayWindow(series=replay, n_train=n_train, t0_ns=t0_ns)


def train_models(settings: DemoSettings, window: ReplayWindow, registry: Path) -> None:
    """Active and candidate, on bar indices that continue straight into the replay."""
    offset = live_bar_offset(window.t0_ns, 1, window.n_train)
    data = DatasetConfig(
        cutoff=settings.cutoff, bar_offset=offset, ticks_per_bar=settings.ticks_per_bar
    )
    folds = 3 if settings.fast else 5
    reports = settings.out_dir / "models"
    train(
        TrainConfig(data=data, folds=folds),
        model_id=ACTIVE,
        registry_root=registry,
        reports_root=reports,
        run_certify=False,
    )
    train(
        TrainConfig(data=data, folds=folds, k=16, rbf_length_scale=0.7, period=20.0),
        model_id=CANDIDATE,
        registry_root=registry,
        reports_root=reports,
        run_certify=False,
    )


def service_env(info: StackInfo, registry: Path) -> dict[str, str]:
    """One-second bars and a risk supervisor that judges on demo-sized windows."""
    return {
        **info.env(),
        ENV_MODEL_REGISTRY: str(registry),
        f"{FEATURE.env_prefix}BAR_SECONDS": "1",
        "GEODESIC_LOG_LEVEL": "WARNING",
        f"{RISK_SUPERVISOR.env_prefix}DRIFT_WINDOW": "200",
        f"{RISK_SUPERVISOR.env_prefix}ROLLOUT_GUARD__DRIFT_MIN_WINDOW": "200",
        f"{RISK_SUPERVISOR.env_prefix}ROLLOUT_GUARD__MIN_SAMPLES": "50",
        f"{RISK_SUPERVISOR.env_prefix}ROLLOUT_GUARD__EVAL_INTERVAL_S": "0.5",
    }


# ---- checks and output ----------------------------------------------------------------


def verify(stages: Stages, summary: dict[str, Any], live: LiveOutcome) -> None:
    """Counts add up, the DLQ holds exactly the injected faults, and every signal decided
    with the kill switch on was halted; adds the kill-switch evidence to the summary."""
    check = stages.check
    exp = live.replay.injected.expected
    check(
        "report",
        summary["received"] == summary["ticks_sent"],
        f"collector received {summary['received']} of {summary['ticks_sent']} ticks",
    )
    check(
        "report",
        summary["received"] == summary["accepted"] + summary["duplicates"] + summary["dlq"],
        "received != accepted + duplicates + dlq",
    )
    if live.rollback.drift_injection_ticks is None:
        check(
            "report",
            summary["accepted"] == exp["accepted"]
            and summary["dlq"] == exp["dlq"]
            and summary["duplicates"] == exp["duplicates"],
            f"collector counts {summary} != injected {dict(exp)}",
        )
    check(
        "report",
        dict(live.seen.dlq) == dict(live.replay.injected.expected_dlq),
        "DLQ reasons differ from the injected faults",
    )
    kill = live.replay.kill
    v_on, v_off = kill.version_on, kill.version_off
    signals = [sig for sig, _ in live.seen.signals]
    # Every signal decided on a control snapshot with the switch on must be halted.
    during = [x for x in signals if v_on <= x.control_version < v_off]
    check(
        "report",
        bool(during) and all(not x.tradable and x.halted for x in during),
        f"{sum(x.tradable for x in during)} of {len(during)} signals decided with "
        f"the kill switch on (control versions {v_on}..{v_off - 1}) were tradable (or "
        f"none were seen; versions seen: {sorted({x.control_version for x in signals})})",
    )
    first = min((x.hops.get("scorer_in", 0) for x in during), default=0)
    summary["kill_switch_window_signals"] = len(during)
    summary["kill_switch_first_halted_signal_after_flip_ms"] = (
        round((first - kill.on_ns) / 1e6, 3) if first else None
    )


def print_summary(console: Console, settings: DemoSettings, summary: dict[str, Any]) -> None:
    t = Table(title="Geodesic demo summary")
    t.add_column("what")
    t.add_column("value")
    for key in (
        "ticks_sent",
        "accepted",
        "duplicates",
        "dlq",
        "signals",
        "signals_per_route",
        "signals_tradable",
        "rollbacks",
        "rollback_trigger",
        "kill_switch_flips",
        "kill_switch_window_signals",
        "outcomes",
    ):
        t.add_row(key, str(summary.get(key)))
    for hop, p in summary["latency_ms"].items():
        t.add_row(f"latency {hop} (ms)", f"p50 {p['p50']} / p99 {p['p99']}")
    console.print(t)
    console.print(f"report: {settings.out_dir / 'index.html'}")
