"""The demo's live phase: promote and canary, replay history as hostile ticks while an
operator flips the kill switch, drain, and wait for the guards to roll the canary back.

Each step is a function over what the earlier ones built (frozen records passed forward),
so no step can read something that does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from rich.live import Live
from rich.table import Table

from geodesic.contracts.services import COLLECTOR, RISK_SUPERVISOR, SCORER
from geodesic.control import ControlPlane, ControlSnapshot, Rollout
from geodesic.demo.collect import HOPS, Observed, Observer, http_json, metric_values
from geodesic.demo.config import DemoSettings
from geodesic.demo.demo_report import BarCalendar, percentiles
from geodesic.demo.stages import Stages
from geodesic.features import WARMUP_BARS
from geodesic.lifecycle.registry import demo_promotion_reason
from geodesic.marketdata import BarSeries
from geodesic.marketdata.replay import (
    FaultTally,
    ReplayConfig,
    inject_faults,
    interleave,
    publish,
    replay_ticks,
)
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from geodesic.runtime.kafka import KafkaSettings, make_producer
from geodesic.stack.fleet import Fleet

__all__ = ["ACTIVE", "CANDIDATE", "LiveOutcome", "ReplayWindow", "ServicePorts", "live_phase"]

RAW_TICKS = COLLECTOR.topic("in", "Tick")
ACTIVE, CANDIDATE = "demo-active", "demo-candidate"
NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class ReplayWindow:
    """The later history replayed as ticks (with feature warm-up bars in front)."""

    series: Mapping[str, BarSeries]
    n_train: int  # bars before the window, the training calendar's length
    t0_ns: int  # event time of the first replayed bar

    @property
    def n_bars(self) -> int:
        return len(next(iter(self.series.values())))

    def calendar(self) -> dict[str, BarCalendar]:
        """The historical day each replayed bar stands for (one bar per second)."""
        first = self.t0_ns // NS_PER_SECOND
        return {ser.symbol: BarCalendar(first, ser.dates) for ser in self.series.values()}

    def period(self) -> dict[str, Any]:
        """The replayed days after the feature warm-up (the ones that get a signal)."""
        dates = next(iter(self.series.values())).dates
        return {
            "symbols": sorted(ser.symbol for ser in self.series.values()),
            "first_day": str(dates[WARMUP_BARS - 1]),
            "last_day": str(dates[-1]),
        }

    @property
    def expected_signals(self) -> int:
        """One signal per feature vector: every bar after the warm-up, per symbol."""
        return len(self.series) * (self.n_bars - WARMUP_BARS + 1)


@dataclass(frozen=True)
class ServicePorts:
    """The HTTP ports the demo reads the running services on."""

    collector: int
    scorer: int
    risk: int

    @classmethod
    def of(cls, fleet: Fleet) -> ServicePorts:
        return cls(
            collector=fleet.services[COLLECTOR.name].http_port,
            scorer=fleet.services[SCORER.name].http_port,
            risk=fleet.services[RISK_SUPERVISOR.name].http_port,
        )


@dataclass(frozen=True)
class LiveContext:
    """What every live stage works with once the stack and the services run."""

    settings: DemoSettings
    stages: Stages
    plane: ControlPlane
    seen: Observed  # the observer's view, filled as records arrive
    kafka: KafkaSettings
    ports: ServicePorts
    registry: Path


@dataclass(frozen=True)
class InjectedFaults:
    """Hostile input added to the replay, and the counts it must produce downstream."""

    duplicates: int
    malformed: Mapping[str, int]
    expected: Mapping[str, int]
    expected_dlq: Mapping[str, int]

    @classmethod
    def of(cls, tally: FaultTally) -> InjectedFaults:
        return cls(
            duplicates=tally.duplicates,
            malformed={k.value: v for k, v in tally.malformed.items()},
            expected=tally.expected_collector_counts(),
            expected_dlq=tally.expected_dlq_reasons(),
        )

    def as_report(self) -> dict[str, Any]:
        return {
            "duplicates": self.duplicates,
            "malformed": dict(self.malformed),
            "expected": dict(self.expected),
            "expected_dlq": dict(self.expected_dlq),
        }


@dataclass(frozen=True)
class KillSwitchRecord:
    """When the operator's kill switch was on: wall clock and control versions [on, off)."""

    flips: int
    on_ns: int
    off_ns: int
    version_on: int
    version_off: int


@dataclass(frozen=True)
class ReplayOutcome:
    ticks_sent: int
    injected: InjectedFaults
    rate_ticks_per_s: float
    kill: KillSwitchRecord
    psi_series: tuple[dict[str, Any], ...]
    period: dict[str, Any]


@dataclass(frozen=True)
class RollbackOutcome:
    trigger: str
    reason: str
    after_first_signal_s: float
    drift_injection_ticks: int | None  # None: the real data tripped the guard


@dataclass(frozen=True)
class LiveOutcome:
    seen: Observed
    replay: ReplayOutcome
    rollback: RollbackOutcome

    @property
    def ticks_sent(self) -> int:
        return self.replay.ticks_sent + (self.rollback.drift_injection_ticks or 0)

    def extra(self) -> dict[str, Any]:
        """Report fields beyond what the observer saw."""
        out: dict[str, Any] = {
            "replay_period": self.replay.period,
            "replay_rate_ticks_per_s": self.replay.rate_ticks_per_s,
        }
        if self.rollback.drift_injection_ticks is not None:
            out["drift_injection_ticks"] = self.rollback.drift_injection_ticks
        out["rollback_trigger"] = self.rollback.trigger
        out["rollback_after_first_signal_s"] = self.rollback.after_first_signal_s
        out["rollback_reason"] = self.rollback.reason
        return out


async def live_phase(
    settings: DemoSettings,
    stages: Stages,
    kafka: KafkaSettings,
    redis_url: str,
    ports: ServicePorts,
    registry: Path,
    window: ReplayWindow,
) -> LiveOutcome:
    """Promote, replay, drain and wait for the guards, watched by an executor's consumer."""
    redis = aioredis.from_url(redis_url)
    observer = Observer(kafka)
    await observer.start()
    ctx = LiveContext(
        settings=settings,
        stages=stages,
        plane=ControlPlane(redis),
        seen=observer.seen,
        kafka=kafka,
        ports=ports,
        registry=registry,
    )
    try:
        with stages.stage("promote active, shadow and canary the candidate") as rec:
            await promote_and_canary(ctx)
            rec["detail"] = f"canary fraction {settings.canary_fraction}"
        with stages.stage("replay later history as ticks (with hostile input)") as rec:
            replayed = await replay_history(ctx, window)
            rec["detail"] = (
                f"{replayed.ticks_sent} ticks, {replayed.injected.duplicates} "
                f"duplicates, {sum(replayed.injected.malformed.values())} "
                f"malformed, kill switch flipped {replayed.kill.flips}x"
            )
        with stages.stage("drain: every bar scored") as rec:
            seen, expected = ctx.seen, window.expected_signals
            await _wait(lambda: len(seen.signals) >= expected, 90)
            rec["detail"] = f"{len(seen.signals)} signals for {expected} feature vectors"
            stages.check(
                "drain",
                len(seen.signals) == expected,
                f"{len(seen.signals)} signals, expected {expected}",
            )
        with stages.stage("guards: automatic rollback of the candidate") as rec:
            rollback = await await_rollback(ctx, window)
            rec["detail"] = f"trigger: {rollback.trigger}; reason: {rollback.reason[:120]}"
    finally:
        await observer.stop()
        await redis.aclose()
    return LiveOutcome(seen=ctx.seen, replay=replayed, rollback=rollback)


async def promote_and_canary(ctx: LiveContext) -> None:
    s, plane = ctx.settings, ctx.plane
    reason = demo_promotion_reason(ctx.registry / ACTIVE, "initial model")
    await plane.promote(ACTIVE, actor="demo", reason=reason)
    await plane.set_slot("shadow", CANDIDATE, actor="demo", reason="shadow first")
    await plane.set_rollout(
        Rollout(mode="canary", canary_fraction=s.canary_fraction, seed=s.seed, candidate=CANDIDATE),
        actor="demo",
        reason=demo_promotion_reason(ctx.registry / CANDIDATE, "canary the candidate"),
    )


@dataclass
class _ReplayProgress:
    """What the replay has done so far; the live view and the drift sampler add to it."""

    ticks_sent: int = 0
    psi_series: list[dict[str, Any]] = field(default_factory=list)


class KillSwitchOperator:
    """An operator flips the global kill switch mid-replay and clears it once at least
    20 signals were decided with it on (all of those must come out non-tradable)."""

    def __init__(self, plane: ControlPlane, seen: Observed) -> None:
        self.plane = plane
        self.seen = seen
        self.flips = 0
        self.on_ns = self.off_ns = 0
        self.version_on = self.version_off = 0

    async def operate(self, progress: float) -> None:
        if self.flips == 0 and progress >= 0.35:
            entry = await self.plane.set_kill_switch(
                True, actor="demo-operator", reason="demonstrate the kill switch"
            )
            self.on_ns = time.time_ns()
            self.version_on = int(entry["version"])
            self.flips += 1
        elif self.flips == 1:
            inside = sum(
                1 for sig, _ in self.seen.signals if sig.control_version >= self.version_on
            )
            if inside >= 20 or progress > 1.0:
                await self.switch_off()

    async def switch_off(self) -> None:
        entry = await self.plane.set_kill_switch(
            False, actor="demo-operator", reason="demonstration over"
        )
        self.off_ns = time.time_ns()
        self.version_off = int(entry["version"])
        self.flips += 1

    def record(self) -> KillSwitchRecord:
        return KillSwitchRecord(
            flips=self.flips,
            on_ns=self.on_ns,
            off_ns=self.off_ns,
            version_on=self.version_on,
            version_off=self.version_off,
        )


async def replay_history(ctx: LiveContext, window: ReplayWindow) -> ReplayOutcome:
    """Publish the window as ticks with duplicates and malformed messages mixed in."""
    s = ctx.settings
    streams = [
        replay_ticks(
            ser, ReplayConfig(seed=s.seed + i, ticks_per_bar=s.ticks_per_bar), t0_ns=window.t0_ns
        )
        for i, ser in enumerate(window.series.values())
    ]
    faults = inject_faults(
        ((t.symbol.encode(), t.to_bytes()) for t in interleave(*streams)),
        dup_rate=s.dup_rate,
        malformed_rate=s.malformed_rate,
        seed=s.seed,
    )
    total_guess = sum(len(ser) for ser in window.series.values()) * sum(s.ticks_per_bar) // 2
    progress = _ReplayProgress()
    operator = KillSwitchOperator(ctx.plane, ctx.seen)

    def counted() -> Iterator[tuple[bytes, bytes]]:
        for msg in faults:
            progress.ticks_sent += 1
            yield msg

    producer = make_producer(ctx.kafka)
    await producer.start()
    try:
        task = asyncio.create_task(publish(producer, counted(), RAW_TICKS, s.rate))
        await _display_until(ctx, task, operator, progress, total_guess)
        result = task.result()
    finally:
        await producer.stop()
    ctx.stages.check("replay", result.failed == 0, f"{result.failed} ticks not delivered")
    return ReplayOutcome(
        ticks_sent=progress.ticks_sent,
        injected=InjectedFaults.of(faults.tally),
        rate_ticks_per_s=round(result.achieved_rate, 1),
        kill=operator.record(),
        psi_series=tuple(progress.psi_series),
        period=window.period(),
    )


async def _display_until(
    ctx: LiveContext,
    task: asyncio.Task[Any],
    operator: KillSwitchOperator,
    progress: _ReplayProgress,
    total: int,
) -> None:
    """Live view while the replay runs; the operator flips the kill switch on and off."""
    start = time.monotonic()
    last_psi = 0.0
    live = (
        Live(
            _table(ctx, progress, None, elapsed=0.0),
            console=ctx.stages.console,
            refresh_per_second=4,
            transient=False,
        )
        if ctx.settings.live
        else None
    )
    with live or contextlib.nullcontext():
        while not task.done():
            await asyncio.sleep(0.25)
            await operator.operate(progress.ticks_sent / max(total, 1))
            if time.monotonic() - last_psi >= 1.0:
                last_psi = time.monotonic()
                _sample_risk(ctx, progress)
            if live is not None:
                snap = await ctx.plane.snapshot()
                live.update(_table(ctx, progress, snap, time.monotonic() - start))
    deadline = time.monotonic() + 30
    while operator.flips == 1 and time.monotonic() < deadline:  # replay ended first
        await asyncio.sleep(0.1)
        await operator.operate(1.0)
    if operator.flips == 1:
        await operator.switch_off()


def _sample_risk(ctx: LiveContext, progress: _ReplayProgress) -> None:
    with contextlib.suppress(Exception):
        info = http_json(ctx.ports.risk, "/info")
        ready = {
            f: d
            for f, d in info.get("drift", {}).items()
            if d.get("n") and d.get("psi") == d.get("psi")
        }
        progress.psi_series.append(
            {
                "t": time.time(),
                "psi": {f: d["psi"] for f, d in ready.items()},
                "level": {f: d["psi_level"] for f, d in ready.items() if "psi_level" in d},
                "winrates": info.get("winrates", {}),
            }
        )


def _table(
    ctx: LiveContext,
    progress: _ReplayProgress,
    snapshot: ControlSnapshot | None,
    elapsed: float,
) -> Table:
    t = Table(title="Geodesic live", show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value")
    seen, sent = ctx.seen, progress.ticks_sent
    t.add_row("ticks sent", f"{sent} ({sent / max(elapsed, 1e-9):.0f}/s)")
    now = time.time_ns()
    recent = sum(1 for x in seen.recent_ns if now - x < 2e9) / 2
    t.add_row("signals", f"{len(seen.signals)} ({recent:.0f}/s)")
    t.add_row("DLQ", str(sum(seen.dlq.values())))
    for hop in HOPS:
        p = percentiles(seen.latencies[hop][-500:])
        t.add_row(f"latency {hop}", f"p50 {p['p50']} / p99 {p['p99']} ms")
    if progress.psi_series:
        last = progress.psi_series[-1]
        wr = last.get("winrates", {})
        for route in ("active", "canary"):
            r = wr.get(route, {})
            rate = r.get("rate")
            t.add_row(
                f"win rate {route}",
                "insufficient data" if rate is None else f"{rate:.3f} (n={r.get('n')})",
            )
        if last["psi"]:
            feat, val = max(last["psi"].items(), key=lambda kv: kv[1])
            t.add_row("max PSI", f"{val:.3f} ({feat})")
    with contextlib.suppress(Exception):
        m = metric_values(ctx.ports.scorer)
        recall = [v for k, v in m.items() if k.startswith("ann_recall")]
        t.add_row("ANN recall", f"{recall[0]:.3f}" if recall else "sampling")
    if snapshot is not None:
        t.add_row("kill switch", "ON" if snapshot.kill_global else "off")
        t.add_row("rollout", f"{snapshot.rollout.mode} ({snapshot.rollout.candidate or '-'})")
    return t


async def _wait(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


async def await_rollback(ctx: LiveContext, window: ReplayWindow) -> RollbackOutcome:
    """The risk supervisor must roll the canary back (on real data, or on injected drift)."""
    plane, check = ctx.plane, ctx.stages.check

    async def rolled_back() -> bool:
        return (await plane.snapshot()).rollout.mode == "disabled"

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not await rolled_back():
        await asyncio.sleep(0.5)
    trigger, drift_ticks = "real data", None
    if not await rolled_back():
        # Documented drift injection: the real window did not trip a guard, so a
        # synthetic high-volatility continuation of each symbol is replayed.
        trigger = "drift injection (synthetic high-volatility continuation)"
        drift_ticks = await inject_drift(ctx, window)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not await rolled_back():
            await asyncio.sleep(0.5)
    check("guards", await rolled_back(), "the canary was never rolled back")
    snap = await plane.snapshot()
    audit = [e for e in await plane.audit_log(200) if e["kind"] == "ROLLBACK"]
    check(
        "guards",
        bool(audit) and audit[-1]["actor"] == RISK_SUPERVISOR.name,
        "no ROLLBACK audit entry by the risk supervisor",
    )
    check("guards", snap.cooldown_until_ns > time.time_ns(), "no cooldown after rollback")
    seen = ctx.seen
    first = min((sig.hops.get("scorer_in", 0) for sig, _ in seen.signals), default=0)
    outcome = RollbackOutcome(
        trigger=trigger,
        reason=audit[-1]["reason"],
        after_first_signal_s=round((int(audit[-1]["ts_ns"]) - first) / 1e9, 3),
        drift_injection_ticks=drift_ticks,
    )
    await _wait(lambda: any(e.kind == "ROLLBACK" for e in seen.control), 15)
    return outcome


async def inject_drift(ctx: LiveContext, window: ReplayWindow) -> int:
    """Replay a wild synthetic continuation of each symbol; returns the ticks sent."""
    t0 = window.t0_ns + window.n_bars * NS_PER_SECOND
    streams = []
    for i, ser in enumerate(window.series.values()):
        wild, _ = generate_market(
            SyntheticConfig(
                n_bars=300,
                seed=100 + i,
                sigma=0.05,
                high_vol_mult=1.0,
                symbol=ser.symbol,
                start_price=float(ser.close[-1]),
            )
        )
        streams.append(
            replay_ticks(
                wild,
                ReplayConfig(seed=200 + i, ticks_per_bar=(6, 8), seq_start=50_000_000),
                t0_ns=t0,
            )
        )
    producer = make_producer(ctx.kafka)
    await producer.start()
    try:
        msgs = ((t.symbol.encode(), t.to_bytes()) for t in interleave(*streams))
        res = await publish(producer, msgs, RAW_TICKS, ctx.settings.rate)
    finally:
        await producer.stop()
    return res.sent
