"""The demo, stage by stage. Every stage must succeed for exit code 0; a failure names
the stage and the log to read. Everything started here is stopped here, by PID."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from geodesic.contracts.services import COLLECTOR, FEATURE, RISK_SUPERVISOR, SCORER
from geodesic.control import ControlPlane, Rollout
from geodesic.demo.collect import HOPS, Observer, http_json, metric_values
from geodesic.demo.config import DemoSettings
from geodesic.demo.report import build_summary, percentiles, write_report
from geodesic.features import WARMUP_BARS
from geodesic.lifecycle.config import DatasetConfig, TrainConfig
from geodesic.lifecycle.dataset import live_bar_offset
from geodesic.lifecycle.registry import demo_promotion_reason
from geodesic.lifecycle.training import train
from geodesic.marketdata import BarSeries, load_dataset
from geodesic.marketdata.replay import (
    ReplayConfig,
    backfill_start_ns,
    inject_faults,
    interleave,
    publish,
    replay_ticks,
)
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from geodesic.runtime.kafka import make_producer
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import Fleet

log = logging.getLogger(__name__)
RAW_TICKS = COLLECTOR.topic("in", "Tick")
DATASETS = ("sp500", "nasdaq")
ACTIVE, CANDIDATE = "demo-active", "demo-candidate"


class StageFailedError(RuntimeError):
    def __init__(self, stage: str, detail: str, log_hint: str) -> None:
        super().__init__(f"stage '{stage}' failed: {detail} (see {log_hint})")
        self.stage = stage


class Demo:
    def __init__(self, settings: DemoSettings, console: Console | None = None) -> None:
        self.s = settings
        self.console = console or Console()
        self.stages: list[dict[str, Any]] = []
        self.stack: EmbeddedStack | None = None
        self.fleet: Fleet | None = None
        self.observer: Observer | None = None
        self.ticks_sent = 0
        self.kill_flips = 0
        self.kill_window: tuple[int, int] | None = None
        self.kill_versions: tuple[int, int] = (0, 0)
        self.psi_series: list[dict[str, Any]] = []
        self.injected: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.run_dir: Path | None = None

    # ---- stage bookkeeping -----------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        rec: dict[str, Any] = {"stage": name, "status": "running"}
        self.stages.append(rec)
        self.console.print(f"[bold cyan]▶ {name}[/]")
        t0 = time.monotonic()
        try:
            yield rec
        except StageFailedError:
            rec["status"] = "failed"
            raise
        except Exception as exc:
            rec["status"] = "failed"
            rec["detail"] = f"{type(exc).__name__}: {exc}"
            log.debug("stage %s failed:\n%s", name, traceback.format_exc())
            raise StageFailedError(name, rec["detail"], self._log_hint()) from exc
        finally:
            rec["seconds"] = round(time.monotonic() - t0, 2)
        rec["status"] = "ok"
        self.console.print(f"[green]✔ {name}[/] ({rec['seconds']} s) {rec.get('detail', '')}")

    def _log_hint(self) -> str:
        return str(self.run_dir) + "/*.log" if self.run_dir else "the output above"

    def check(self, stage: str, ok: bool, detail: str) -> None:
        if not ok:
            raise StageFailedError(stage, detail, self._log_hint())

    # ---- the run ---------------------------------------------------------------------
    def run(self) -> int:
        s = self.s
        self.console.rule(f"Geodesic demo ({'fast' if s.fast else 'full'})")
        (s.out_dir / "FAILED.txt").unlink(missing_ok=True)
        # offline reports of this run's models: a fold directory of an earlier run would
        # (rightly) be refused as reuse across folds
        shutil.rmtree(s.out_dir / "models", ignore_errors=True)
        try:
            with self.stage("start embedded broker and Redis") as rec:
                self.stack = EmbeddedStack(run_root=s.run_root, use_env=False)
                info = self.stack.start()
                self.run_dir = self.stack.run_dir
                rec["detail"] = f"bootstrap {info.bootstrap}, redis {info.redis_url}"
            series = {n: load_dataset(n) for n in DATASETS}
            replay, n_train = self._replay_window(series)
            n_bars = len(next(iter(replay.values())))
            t0_ns = backfill_start_ns(time.time_ns(), 1, n_bars + 400)
            registry = self.run_dir / "registry"
            with self.stage("train active and candidate on early real history") as rec:
                self._train(registry, t0_ns, n_train)
                rec["detail"] = f"{ACTIVE}, {CANDIDATE} (bars before {s.cutoff})"
            with self.stage("start the five services") as rec:
                self.fleet = Fleet(self.run_dir, self._service_env(info, registry))
                self.fleet.start_all()
                self.fleet.wait_healthy(120)
                rec["detail"] = ", ".join(
                    f"{n}:{d['http_port']}" for n, d in self.fleet.describe().items()
                )
            asyncio.run(self._live_phase(info.redis_url, replay, t0_ns, n_bars))
            with self.stage("write the report") as rec:
                collector = http_json(self.fleet.services[COLLECTOR.name].http_port, "/info")
                summary = build_summary(
                    self.observer.seen,
                    ticks_sent=self.ticks_sent,  # type: ignore[union-attr]
                    collector=collector.get("counts", {}),
                    injected=self.injected,
                    kill_switch_flips=self.kill_flips,
                    stages=self.stages,
                    extra=self.extra,
                )
                try:
                    self._verify(summary)
                finally:
                    page = write_report(
                        summary,
                        self.observer.seen,
                        self.psi_series,  # type: ignore[union-attr]
                        s.out_dir,
                    )
                rec["detail"] = str(page)
            self._print_summary(summary)
            return 0
        except StageFailedError as exc:
            self.console.print(f"[bold red]✘ {exc}[/]")
            with contextlib.suppress(Exception):
                s.out_dir.mkdir(parents=True, exist_ok=True)
                (s.out_dir / "FAILED.txt").write_text(str(exc) + "\n")
            return 1
        finally:
            with self.stage("stop everything"):
                if self.fleet is not None:
                    self.fleet.stop_all()
                if self.stack is not None:
                    self.stack.stop()

    def _replay_window(self, series: dict[str, BarSeries]) -> tuple[dict[str, BarSeries], int]:
        cut = np.datetime64(self.s.cutoff, "D")
        end = np.datetime64(self.s.end, "D")
        out, n_train = {}, 0
        for name, ser in series.items():
            k = int(np.searchsorted(ser.dates, cut, side="left"))
            e = int(np.searchsorted(ser.dates, end, side="right"))
            out[name] = ser.take(slice(k - (WARMUP_BARS - 1), e))
            n_train = k - (WARMUP_BARS - 1)
        return out, n_train

    def _train(self, registry: Path, t0_ns: int, n_train: int) -> None:
        offset = live_bar_offset(t0_ns, 1, n_train)
        data = DatasetConfig(
            cutoff=self.s.cutoff, bar_offset=offset, ticks_per_bar=self.s.ticks_per_bar
        )
        folds = 3 if self.s.fast else 5
        reports = self.s.out_dir / "models"
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

    def _service_env(self, info: Any, registry: Path) -> dict[str, str]:
        return {
            **info.env(),
            "GEODESIC_MODEL_REGISTRY": str(registry),
            f"{FEATURE.env_prefix}BAR_SECONDS": "1",
            "GEODESIC_LOG_LEVEL": "WARNING",
            f"{RISK_SUPERVISOR.env_prefix}DRIFT_WINDOW": "200",
            f"{RISK_SUPERVISOR.env_prefix}ROLLOUT_GUARD__DRIFT_MIN_WINDOW": "200",
            f"{RISK_SUPERVISOR.env_prefix}ROLLOUT_GUARD__MIN_SAMPLES": "50",
            f"{RISK_SUPERVISOR.env_prefix}ROLLOUT_GUARD__EVAL_INTERVAL_S": "0.5",
        }

    # ---- live phase ------------------------------------------------------------------
    async def _live_phase(
        self, redis_url: str, replay: dict[str, BarSeries], t0_ns: int, n_bars: int
    ) -> None:
        assert self.stack is not None and self.fleet is not None
        redis = aioredis.from_url(redis_url)
        plane = ControlPlane(redis)
        self.observer = Observer(self.stack.kafka_settings)
        await self.observer.start()
        try:
            with self.stage("promote active, shadow and canary the candidate") as rec:
                reason = demo_promotion_reason(self.run_dir / "registry" / ACTIVE, "initial model")
                await plane.promote(ACTIVE, actor="demo", reason=reason)
                await plane.set_slot("shadow", CANDIDATE, actor="demo", reason="shadow first")
                await plane.set_rollout(
                    Rollout(
                        mode="canary",
                        canary_fraction=self.s.canary_fraction,
                        seed=self.s.seed,
                        candidate=CANDIDATE,
                    ),
                    actor="demo",
                    reason=demo_promotion_reason(
                        self.run_dir / "registry" / CANDIDATE, "canary the candidate"
                    ),
                )
                rec["detail"] = f"canary fraction {self.s.canary_fraction}"
            expected = len(replay) * (n_bars - WARMUP_BARS + 1)
            with self.stage("replay later history as ticks (with hostile input)") as rec:
                await self._replay(plane, replay, t0_ns)
                rec["detail"] = (
                    f"{self.ticks_sent} ticks, {self.injected.get('duplicates')} "
                    f"duplicates, {sum(self.injected['malformed'].values())} "
                    f"malformed, kill switch flipped {self.kill_flips}x"
                )
            with self.stage("drain: every bar scored") as rec:
                seen = self.observer.seen
                await self._wait(lambda: len(seen.signals) >= expected, 90)
                rec["detail"] = f"{len(seen.signals)} signals for {expected} feature vectors"
                self.check(
                    "drain",
                    len(seen.signals) == expected,
                    f"{len(seen.signals)} signals, expected {expected}",
                )
            with self.stage("guards: automatic rollback of the candidate") as rec:
                rec["detail"] = await self._await_rollback(plane, replay, t0_ns, n_bars)
        finally:
            await self.observer.stop()
            await redis.aclose()

    async def _replay(self, plane: ControlPlane, replay: dict[str, BarSeries], t0: int) -> None:
        streams = [
            replay_ticks(
                ser,
                ReplayConfig(seed=self.s.seed + i, ticks_per_bar=self.s.ticks_per_bar),
                t0_ns=t0,
            )
            for i, ser in enumerate(replay.values())
        ]
        faults = inject_faults(
            ((t.symbol.encode(), t.to_bytes()) for t in interleave(*streams)),
            dup_rate=self.s.dup_rate,
            malformed_rate=self.s.malformed_rate,
            seed=self.s.seed,
        )
        total_guess = sum(len(s) for s in replay.values()) * sum(self.s.ticks_per_bar) // 2

        def counted() -> Iterator[tuple[bytes, bytes]]:
            for msg in faults:
                self.ticks_sent += 1
                yield msg

        producer = make_producer(self.stack.kafka_settings)  # type: ignore[union-attr]
        await producer.start()
        try:
            task = asyncio.create_task(publish(producer, counted(), RAW_TICKS, self.s.rate))
            await self._display_until(task, plane, total_guess)
            result = task.result()
        finally:
            await producer.stop()
        self.check("replay", result.failed == 0, f"{result.failed} ticks not delivered")
        tally = faults.tally
        self.injected = {
            "duplicates": tally.duplicates,
            "malformed": {k.value: v for k, v in tally.malformed.items()},
            "expected": tally.expected_collector_counts(),
            "expected_dlq": tally.expected_dlq_reasons(),
        }
        self.extra["replay_rate_ticks_per_s"] = round(result.achieved_rate, 1)

    async def _display_until(self, task: asyncio.Task, plane: ControlPlane, total: int) -> None:
        """Live view while the replay runs; flips the kill switch on and off mid-way."""
        start = time.monotonic()
        last_psi = 0.0
        live = (
            Live(
                self._table(plane_snapshot=None, elapsed=0.0),
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            if self.s.live
            else None
        )
        with live or contextlib.nullcontext():
            while not task.done():
                await asyncio.sleep(0.25)
                await self._operate_kill_switch(plane, self.ticks_sent / max(total, 1))
                if time.monotonic() - last_psi >= 1.0:
                    last_psi = time.monotonic()
                    self._sample_risk()
                if live is not None:
                    snap = await plane.snapshot()
                    live.update(self._table(snap, time.monotonic() - start))
        deadline = time.monotonic() + 30
        while self.kill_flips == 1 and time.monotonic() < deadline:  # replay ended first
            await asyncio.sleep(0.1)
            await self._operate_kill_switch(plane, 1.0)
        if self.kill_flips == 1:
            await self._kill_switch_off(plane)

    async def _operate_kill_switch(self, plane: ControlPlane, progress: float) -> None:
        """An operator flips the global kill switch mid-replay and clears it once at least
        20 signals were decided with it on (all of those must come out non-tradable)."""
        if self.kill_flips == 0 and progress >= 0.35:
            entry = await plane.set_kill_switch(
                True, actor="demo-operator", reason="demonstrate the kill switch"
            )
            self.kill_window = (time.time_ns(), 0)
            self.kill_versions = (int(entry["version"]), 0)
            self.kill_flips += 1
        elif self.kill_flips == 1:
            v_on = self.kill_versions[0]
            inside = sum(
                1
                for sig, _ in self.observer.seen.signals  # type: ignore[union-attr]
                if sig.control_version >= v_on
            )
            if inside >= 20 or progress > 1.0:
                await self._kill_switch_off(plane)

    async def _kill_switch_off(self, plane: ControlPlane) -> None:
        entry = await plane.set_kill_switch(
            False, actor="demo-operator", reason="demonstration over"
        )
        self.kill_window = (self.kill_window[0], time.time_ns())  # type: ignore[index]
        self.kill_versions = (self.kill_versions[0], int(entry["version"]))
        self.kill_flips += 1

    def _sample_risk(self) -> None:
        with contextlib.suppress(Exception):
            info = http_json(self.fleet.services[RISK_SUPERVISOR.name].http_port, "/info")  # type: ignore[union-attr]
            psi = {
                f: d["psi"]
                for f, d in info.get("drift", {}).items()
                if d.get("n") and d.get("psi") == d.get("psi")
            }
            self.psi_series.append(
                {"t": time.time(), "psi": psi, "winrates": info.get("winrates", {})}
            )

    def _table(self, plane_snapshot: Any, elapsed: float) -> Table:
        t = Table(title="Geodesic live", show_header=True, header_style="bold")
        t.add_column("metric")
        t.add_column("value")
        seen = self.observer.seen if self.observer else None
        t.add_row("ticks sent", f"{self.ticks_sent} ({self.ticks_sent / max(elapsed, 1e-9):.0f}/s)")
        if seen is not None:
            now = time.time_ns()
            recent = sum(1 for x in seen.recent_ns if now - x < 2e9) / 2
            t.add_row("signals", f"{len(seen.signals)} ({recent:.0f}/s)")
            t.add_row("DLQ", str(sum(seen.dlq.values())))
            for hop in HOPS:
                p = percentiles(seen.latencies[hop][-500:])
                t.add_row(f"latency {hop}", f"p50 {p['p50']} / p99 {p['p99']} ms")
        if self.psi_series:
            last = self.psi_series[-1]
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
            m = metric_values(self.fleet.services[SCORER.name].http_port)  # type: ignore[union-attr]
            recall = [v for k, v in m.items() if k.startswith("ann_recall")]
            t.add_row("ANN recall", f"{recall[0]:.3f}" if recall else "sampling")
        if plane_snapshot is not None:
            t.add_row("kill switch", "ON" if plane_snapshot.kill_global else "off")
            t.add_row(
                "rollout",
                f"{plane_snapshot.rollout.mode} ({plane_snapshot.rollout.candidate or '-'})",
            )
        return t

    async def _wait(self, predicate: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)

    async def _await_rollback(
        self, plane: ControlPlane, replay: dict[str, BarSeries], t0: int, n_bars: int
    ) -> str:
        async def rolled_back() -> bool:
            return (await plane.snapshot()).rollout.mode == "disabled"

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not await rolled_back():
            await asyncio.sleep(0.5)
        trigger = "real data"
        if not await rolled_back():
            # Documented drift injection: the real window did not trip a guard, so a
            # synthetic high-volatility continuation of each symbol is replayed.
            trigger = "drift injection (synthetic high-volatility continuation)"
            await self._inject_drift(replay, t0 + n_bars * 1_000_000_000)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not await rolled_back():
                await asyncio.sleep(0.5)
        self.check("guards", await rolled_back(), "the canary was never rolled back")
        snap = await plane.snapshot()
        audit = [e for e in await plane.audit_log(200) if e["kind"] == "ROLLBACK"]
        self.check(
            "guards",
            bool(audit) and audit[-1]["actor"] == RISK_SUPERVISOR.name,
            "no ROLLBACK audit entry by the risk supervisor",
        )
        self.check("guards", snap.cooldown_until_ns > time.time_ns(), "no cooldown after rollback")
        self.extra["rollback_trigger"] = trigger
        seen = self.observer.seen  # type: ignore[union-attr]
        first = min((sig.hops.get("scorer_in", 0) for sig, _ in seen.signals), default=0)
        self.extra["rollback_after_first_signal_s"] = round(
            (int(audit[-1]["ts_ns"]) - first) / 1e9, 3
        )
        self.extra["rollback_reason"] = audit[-1]["reason"]
        await self._wait(lambda: any(e.kind == "ROLLBACK" for e in self.observer.seen.control), 15)  # type: ignore[union-attr]
        return f"trigger: {trigger}; reason: {audit[-1]['reason'][:120]}"

    async def _inject_drift(self, replay: dict[str, BarSeries], t0: int) -> None:
        streams = []
        for i, ser in enumerate(replay.values()):
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
        producer = make_producer(self.stack.kafka_settings)  # type: ignore[union-attr]
        await producer.start()
        try:
            msgs = ((t.symbol.encode(), t.to_bytes()) for t in interleave(*streams))
            res = await publish(producer, msgs, RAW_TICKS, self.s.rate)
            self.ticks_sent += res.sent
            self.extra["drift_injection_ticks"] = res.sent
        finally:
            await producer.stop()

    # ---- checks and output -----------------------------------------------------------
    def _verify(self, summary: dict[str, Any]) -> None:
        exp = self.injected["expected"]
        self.check(
            "report",
            summary["received"] == summary["ticks_sent"],
            f"collector received {summary['received']} of {summary['ticks_sent']} ticks",
        )
        self.check(
            "report",
            summary["received"] == summary["accepted"] + summary["duplicates"] + summary["dlq"],
            "received != accepted + duplicates + dlq",
        )
        if "drift_injection_ticks" not in self.extra:
            self.check(
                "report",
                summary["accepted"] == exp["accepted"]
                and summary["dlq"] == exp["dlq"]
                and summary["duplicates"] == exp["duplicates"],
                f"collector counts {summary} != injected {exp}",
            )
        self.check(
            "report",
            dict(self.observer.seen.dlq) == self.injected["expected_dlq"],  # type: ignore[union-attr]
            "DLQ reasons differ from the injected faults",
        )
        on, _off = self.kill_window or (0, 0)
        v_on, v_off = self.kill_versions
        signals = [sig for sig, _ in self.observer.seen.signals]  # type: ignore[union-attr]
        # Every signal decided on a control snapshot with the switch on must be halted.
        during = [x for x in signals if v_on <= x.control_version < v_off]
        self.check(
            "report",
            bool(during) and all(not x.tradable and x.halted for x in during),
            f"{sum(x.tradable for x in during)} of {len(during)} signals decided with "
            f"the kill switch on (control versions {v_on}..{v_off - 1}) were tradable (or "
            f"none were seen; versions seen: {sorted({x.control_version for x in signals})})",
        )
        first = min((x.hops.get("scorer_in", 0) for x in during), default=0)
        summary["kill_switch_window_signals"] = len(during)
        summary["kill_switch_first_halted_signal_after_flip_ms"] = (
            round((first - on) / 1e6, 3) if first else None
        )

    def _print_summary(self, summary: dict[str, Any]) -> None:
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
        self.console.print(t)
        self.console.print(f"report: {self.s.out_dir / 'index.html'}")
