"""The demo's progressive delivery: two automatic ramps (geodesic.rollout) on real data.

After the fixed canary's drift rollback, an operator reviews it and clears the cooldown,
then two candidates go through the same short plan while the market keeps replaying:

- a broken one (the candidate's files altered after signing: the scorer refuses to load
  it, so every bar routed to it is an unscored signal) is aborted by the error-rate check
  at the first step with enough samples;
- a good one (the candidate itself) advances 25% -> 50% -> 100%, becomes the active
  model with the old one kept warm as previous, and passes its guard window.

Why the risk supervisor restarts first, with its drift guard parked: with the demo's
200-sample window the drift guard calls for rollback on most of this history, even in the
reference's own years (`python -m bench.drift_window_alarms`: 99-100% of evaluations in
2004-2006), so it would roll back any canary within seconds and no ramp could be shown. The ramp
plan here judges latency, model errors and shadow parity; drift is demonstrated by the
fixed canary's rollback, and the win-rate test by tests/integration/test_rollout_on_stack
(the demo's out-of-sample models are near coin flips and mostly flat, so a win-rate check
would stay inconclusive and the plan would pause, as designed).

The ramp traffic is real: the daily bars after the replayed window (the last ones of the
data set when the window reaches its end), rescaled to continue from the last replayed
close, as later 1-second bars paced never to run ahead of the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from geodesic.contracts.services import RISK_SUPERVISOR
from geodesic.control import ControlPlane
from geodesic.marketdata import BarSeries, load_dataset
from geodesic.marketdata.replay import ReplayConfig, interleave, replay_ticks
from geodesic.rollout import RolloutPlan
from geodesic.rollout.machine import Phase, RolloutState
from geodesic.rollout.operator import start_rollout
from geodesic.runtime.kafka import KafkaSettings, make_producer
from geodesic.stack.fleet import Fleet

__all__ = ["RampRecord", "RampsOutcome", "demo_plan", "ramp_series", "run_ramps"]

NS = 1_000_000_000
#: bars per symbol the ramp traffic may use (the feed stops when both ramps are done)
RAMP_BARS = 600
#: the drift guard's minimum window while the ramps run: out of reach, i.e. parked
DRIFT_PARKED = str(10**9)
OPERATOR = "demo-operator"


def demo_plan(seed: int) -> RolloutPlan:
    """Three short steps, half-second windows, two green windows to advance."""
    step = {"min_duration_s": 1.0, "min_samples": 20, "inconclusive_limit_s": 60.0}
    return RolloutPlan.model_validate(
        {
            "steps": [{"fraction": f, **step} for f in (0.25, 0.5, 1.0)],
            "analysis_window_s": 0.5,
            "green_windows": 2,
            "checks": {
                "p95_latency_ms": 50.0,
                "max_error_rate": 0.01,
                "max_parity_failures": 0,
                "drift": False,
                "winrate": None,
            },
            "abort": {"failed_windows": 2, "cooldown_s": 600.0},
            "promotion": {"guard_window_s": 3.0, "guard_min_samples": 10},
            "seed": seed,
        }
    )


def ramp_series(series: Mapping[str, BarSeries], after_day: np.datetime64) -> list[BarSeries]:
    """Real bars after `after_day` (or the data set's last RAMP_BARS), each rescaled so its
    first open continues from the replay's last close: returns unchanged, no price gap."""
    out = []
    for name, replayed in series.items():
        full = load_dataset(name)
        k = int(np.searchsorted(full.dates, after_day, side="right"))
        k = min(k, len(full) - RAMP_BARS)
        part = full.take(slice(k, k + RAMP_BARS))
        f = float(replayed.close[-1]) / float(part.open[0])
        out.append(
            replace(
                part, open=part.open * f, high=part.high * f, low=part.low * f, close=part.close * f
            )
        )
    return out


@dataclass(frozen=True)
class RampRecord:
    """One rollout as the report shows it."""

    candidate: str
    outcome: str
    reason: str
    steps: tuple[float, ...]
    timeline: tuple[dict[str, Any], ...]  # transitions from the audit stream
    windows: tuple[dict[str, Any], ...]  # the checks at each analysis window

    def as_report(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "outcome": self.outcome,
            "reason": self.reason,
            "steps": list(self.steps),
            "timeline": list(self.timeline),
            "windows": list(self.windows),
        }


#: what the report says about the ramps' set-up (the module docstring has the reasons)
NOTE = (
    "Both ramps follow the same plan (25% -> 50% -> 100%, analysis every 0.5 s, two green "
    "windows to advance, at least 20 signals per step) judging p95 scoring latency, model "
    "errors and shadow parity on real bars that continue the replay. The risk supervisor "
    "ran them with its drift guard parked: with a 200-sample window it calls for rollback "
    "on most of this history, even inside its training years (python -m "
    "bench.drift_window_alarms; it rolled the fixed canary back above). No win-rate "
    "check: every signal of these near-coin-flip models is flat, so it would stay "
    "inconclusive and pause the ramp."
)


@dataclass(frozen=True)
class RampsOutcome:
    records: tuple[RampRecord, ...]
    ticks_sent: int
    plan: dict[str, Any]
    note: str = NOTE


def tamper(registry: Path, source: str, target: str) -> None:
    """A copy of `source` with one byte of its labels changed after signing."""
    dst = registry / target
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(registry / source, dst)
    labels = dst / "labels.npy"
    raw = bytearray(labels.read_bytes())
    raw[-1] ^= 0x01
    labels.write_bytes(bytes(raw))


async def _ramp_state(plane: ControlPlane) -> RolloutState | None:
    got = await plane.rollout_state()
    return None if got is None else RolloutState.from_json(got[1])


class _Feed:
    """Ramp ticks at ~10 bars/s per symbol, never ahead of the wall clock (the collector
    refuses ticks from the future)."""

    def __init__(self, kafka: KafkaSettings, topic: str, parts: list[BarSeries], t0_ns: int):
        streams = [
            replay_ticks(
                p,
                ReplayConfig(seed=300 + i, ticks_per_bar=(5, 7), seq_start=60_000_000),
                t0_ns=t0_ns,
            )
            for i, p in enumerate(parts)
        ]
        self.ticks = interleave(*streams)
        self.kafka, self.topic = kafka, topic
        self.sent = 0
        self.exhausted = False

    async def run(self) -> None:
        producer = make_producer(self.kafka)
        await producer.start()
        try:
            batch: list[Any] = []
            for tick in self.ticks:
                while tick.ts_ns > time.time_ns() + NS:
                    await asyncio.sleep(0.05)
                batch.append(
                    await producer.send(self.topic, tick.to_bytes(), key=tick.symbol.encode())
                )
                self.sent += 1
                if len(batch) >= 12:
                    await asyncio.gather(*batch)
                    batch.clear()
                    await asyncio.sleep(0.1)
            await asyncio.gather(*batch)
            self.exhausted = True
        finally:
            await producer.stop()


async def _follow(
    plane: ControlPlane, rollout_id: str, done: Callable[[RolloutState], bool], timeout_s: float
) -> tuple[RolloutState | None, list[dict[str, Any]]]:
    """Poll the ramp's state until `done`; every analysis window's checks on the way."""
    windows: list[dict[str, Any]] = []
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    st = None
    while time.monotonic() < deadline:
        st = await _ramp_state(plane)
        if st is not None and st.rollout_id == rollout_id:
            if st.checks and st.last_decision_ns not in seen:
                seen.add(st.last_decision_ns)
                windows.append(
                    {
                        "ts_ns": st.last_decision_ns,
                        "state": st.label(),
                        "checks": [
                            {**c.to_json(), "name": c.name, "status": c.status.value}
                            for c in st.checks
                        ],
                    }
                )
            if done(st):
                break
        await asyncio.sleep(0.1)
    return st, windows


async def _timeline(plane: ControlPlane, rollout_id: str) -> list[dict[str, Any]]:
    out = []
    for e in await plane.audit_log(2000):
        prefix = f"rollout {rollout_id}: "
        if e["kind"] != "ROLLOUT" or not e["reason"].startswith(prefix):
            continue
        to = json.loads(e.get("to") or "null") or {}
        out.append(
            {
                "ts_ns": int(e["ts_ns"]),
                "state": e["reason"][len(prefix) :].split(":")[0].split(" (")[0],
                "weight": float(to.get("weight", 0.0)),
                "summary": e["reason"][len(prefix) :],
            }
        )
    return sorted(out, key=lambda r: r["ts_ns"])


async def _one_ramp(
    plane: ControlPlane,
    candidate: str,
    plan: RolloutPlan,
    reason: str,
    done: Callable[[RolloutState], bool],
    timeout_s: float,
) -> RampRecord:
    started = await start_rollout(plane, candidate, plan, actor=OPERATOR, reason=reason)
    st, windows = await _follow(plane, started.rollout_id, done, timeout_s)
    return RampRecord(
        candidate=candidate,
        outcome=st.label() if st is not None else "never picked up",
        reason=st.reason if st is not None else "",
        steps=tuple(s.fraction for s in plan.steps),
        timeline=tuple(await _timeline(plane, started.rollout_id)),
        windows=tuple(windows),
    )


async def run_ramps(
    *,
    plane: ControlPlane,
    fleet: Fleet,
    kafka: KafkaSettings,
    raw_topic: str,
    registry: Path,
    series: Mapping[str, BarSeries],
    candidate: str,
    after_ns: int,
    seed: int,
    check: Callable[[str, bool, str], None],
) -> RampsOutcome:
    """The broken candidate's ramp, then the good one's, on a live feed of real bars."""
    fleet.extra_env = {
        **fleet.extra_env,
        RISK_SUPERVISOR.name: {
            f"{RISK_SUPERVISOR.env_prefix}ROLLOUT_GUARD__DRIFT_MIN_WINDOW": DRIFT_PARKED
        },
    }
    await asyncio.to_thread(fleet.restart, RISK_SUPERVISOR.name, 120)
    broken = f"{candidate}-tampered"
    tamper(registry, candidate, broken)
    plan = demo_plan(seed)
    last_day = next(iter(series.values())).dates[-1]
    feed = _Feed(kafka, raw_topic, ramp_series(series, last_day), after_ns)
    task = asyncio.create_task(feed.run())
    try:
        await plane.clear_cooldown(
            actor=OPERATOR, reason="drift rollback reviewed: the market moved, not the candidate"
        )
        bad = await _one_ramp(
            plane,
            broken,
            plan,
            "ramp a candidate whose files were altered after signing",
            lambda st: st.phase not in (Phase.PENDING, Phase.ANALYSING),
            90,
        )
        check("ramps", bad.outcome == Phase.ABORTED.value, f"broken candidate: {bad.outcome}")
        await plane.clear_cooldown(
            actor=OPERATOR, reason=f"{broken} aborted for unscored signals: tampered files removed"
        )
        good = await _one_ramp(
            plane,
            candidate,
            plan,
            "ramp the candidate to full",
            lambda st: (
                st.phase not in (Phase.PENDING, Phase.ANALYSING)
                and (st.phase != Phase.PROMOTED or st.guard_done)
            ),
            180,
        )
        check(
            "ramps",
            good.outcome == Phase.PROMOTED.value and (await plane.snapshot()).active == candidate,
            f"good candidate: {good.outcome} ({good.reason}); feed exhausted: {feed.exhausted}",
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return RampsOutcome((bad, good), feed.sent, plan.model_dump(mode="json"))
