"""The automatic canary ramp on the real stack: every service, embedded Kafka and Redis.

Ticks are fed at a steady pace (not in one burst) so each step of the ramp sees traffic
of its own, like a live market. Plans use short steps and windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from pipeline_support import TopicReader, Topics, build_pipeline
from test_guards_on_stack import fit, metrics_text, start, wait_until

from geodesic.contracts import ControlEvent
from geodesic.control import ControlPlane
from geodesic.marketdata import BarSeries, load_dataset
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, interleave, replay_ticks
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.rollout import RolloutPlan
from geodesic.rollout.machine import Phase, RolloutState, Status
from geodesic.rollout.operator import start_rollout
from geodesic.runtime.kafka import make_producer

pytestmark = pytest.mark.integration

#: the supervisor's own fixed-level guards stay out of the way unless a test wants them
GUARD = RolloutGuardConfig(
    min_samples=10_000,
    precision_min_samples=10_000,
    drift_min_window=10_000,
    eval_interval_s=0.2,
    cooldown_s=600,
)


def plan(fractions: tuple[float, ...], **overrides) -> RolloutPlan:
    steps = [
        {"fraction": f, "min_duration_s": 1, "min_samples": 20, "inconclusive_limit_s": 60}
        for f in fractions
    ]
    doc = {
        "steps": steps,
        "analysis_window_s": 0.5,
        "green_windows": 2,
        "checks": {
            "p95_latency_ms": 2000,
            "max_error_rate": 0.05,
            "drift": False,
            "winrate": {"delta": 0.05, "alpha": 0.05},
        },
        "abort": {"cooldown_s": 600},
        "promotion": {"guard_window_s": 2, "guard_min_samples": 10},
        "seed": 7,
        **overrides,
    }
    return RolloutPlan.model_validate(doc)


async def feed(kafka, topic: str, series: list[BarSeries], ticks_per_batch: int = 12) -> None:
    """Replay bars at a steady pace (~10 bars/s per symbol), ending now."""
    n = max(len(s.close) for s in series)
    t0 = backfill_start_ns(time.time_ns(), 1, n + 10)
    ticks = list(
        interleave(
            *(
                replay_ticks(s, ReplayConfig(seed=i, ticks_per_bar=(5, 7)), t0_ns=t0)
                for i, s in enumerate(series)
            )
        )
    )
    producer = make_producer(kafka)
    await producer.start()
    try:
        for i in range(0, len(ticks), ticks_per_batch):
            futs = [
                await producer.send(topic, t.to_bytes(), key=t.symbol.encode())
                for t in ticks[i : i + ticks_per_batch]
            ]
            await asyncio.gather(*futs)
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()


async def ramp_state(plane: ControlPlane) -> RolloutState | None:
    got = await plane.rollout_state()
    return None if got is None else RolloutState.from_json(got[1])


async def phase_is(plane: ControlPlane, *phases: Phase):
    async def check() -> bool:
        st = await ramp_state(plane)
        return st is not None and st.phase in phases

    return check


def guard_passed(plane: ControlPlane):
    async def check() -> bool:
        st = await ramp_state(plane)
        return st is not None and st.phase == Phase.PROMOTED and st.guard_done

    return check


def ramp_audit(audit: list[dict[str, str]]) -> list[str]:
    return [e["reason"] for e in audit if e["kind"] == "ROLLOUT" and "rollout " in e["reason"]]


class Stack:
    """The pipeline, a control-topic reader and a ticker feed, torn down in order."""

    def __init__(self, kafka, redis_url, prefix, registry, guard=GUARD) -> None:
        self.kafka, self.redis_url, self.prefix, self.registry = kafka, redis_url, prefix, registry
        self.guard = guard
        self.feeder: asyncio.Task | None = None

    async def __aenter__(self) -> Stack:
        self.topics = await Topics.create(self.kafka)
        self.pipe = build_pipeline(
            self.topics, self.kafka, self.redis_url, self.prefix, self.registry, guard=self.guard
        )
        await start(self.pipe)
        self.reader = TopicReader(self.kafka, self.topics.control)
        await self.reader.start()
        return self

    def feed(self, series: list[BarSeries]) -> None:
        self.feeder = asyncio.create_task(feed(self.kafka, self.topics.raw, series))

    async def __aexit__(self, *exc) -> None:
        if self.feeder is not None:
            self.feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.feeder
        await self.reader.stop()
        for svc in self.pipe.all():
            await svc.stop()
        await self.topics.delete(self.kafka)

    async def metrics(self) -> str:
        """The risk supervisor's /metrics text."""
        http = self.pipe.risk.http
        assert http is not None, "the risk supervisor serves HTTP once started"
        return await metrics_text(http.port)

    def control_events(self) -> list[ControlEvent]:
        return [
            ControlEvent.model_validate_json(r.value)
            for r in self.reader.records[self.topics.control]
        ]


def market(n: int) -> list[BarSeries]:
    return [load_dataset(name).take(slice(3000, 3000 + n)) for name in ("sp500", "nasdaq")]


async def test_good_candidate_ramps_through_every_step_and_becomes_active(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
):
    parts = market(900)
    registry = tmp_path / "registry"
    fit(registry, "m-base", parts)
    fit(registry, "m-cand", parts)  # as good as the baseline
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-base", actor="test", reason="baseline")
    async with Stack(kafka_settings, redis_url, redis_prefix, registry) as stack:
        await start_rollout(
            plane, "m-cand", plan((0.25, 0.5, 1.0)), actor="operator", reason="test ramp"
        )
        stack.feed(parts)
        await wait_until(await phase_is(plane, Phase.PROMOTED, Phase.ABORTED), 120, "promotion")
        st = await ramp_state(plane)
        assert st is not None and st.phase == Phase.PROMOTED, st.reason
        snap = await plane.snapshot()
        assert (snap.active, snap.previous, snap.rollout.mode) == ("m-cand", "m-base", "disabled")
        steps = [r for r in ramp_audit(await plane.audit_log(500)) if "STEP" in r]
        assert [s.split(": ")[1].split(":")[0] for s in steps] == [
            "STEP 1/3 ANALYSING",
            "STEP 2/3 ANALYSING",
            "STEP 3/3 ANALYSING",
        ]
        fractions = [
            e for e in await plane.audit_log(500) if e["reason"].startswith("rollout plan: canary")
        ]
        assert [e["reason"].rsplit(" ", 1)[1] for e in fractions] == ["25%", "50%", "100%"]
        # the sequential test saw both routes and found no harm
        assert st.sequential.evidence.n_canary >= 20 and st.sequential.p_value() > 0.05
        await stack.reader.wait_for(
            lambda: any(
                e.kind == "ROLLOUT" and "PROMOTED" in e.reason for e in stack.control_events()
            ),
            30,
            "PROMOTED on control.events",
        )
        text = await stack.metrics()
        assert 'rollout_phase{phase="PROMOTED"} 1.0' in text
        assert 'rollout_transitions_total{phase="PROMOTED"}' in text
        # the 2 s guard window passes without a breach: recorded once, the promotion is final
        await wait_until(guard_passed(plane), 30, "guard window passed")
        assert "rollout_check_status" in text and "rollout_weight 1.0" in text


async def test_bad_candidate_is_aborted_at_the_first_step_with_enough_samples(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
):
    parts = market(900)
    registry = tmp_path / "registry"
    fit(registry, "m-base", parts)
    fit(registry, "m-bad", parts, invert=True)  # the same analogs with every label flipped
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-base", actor="test", reason="baseline")
    async with Stack(kafka_settings, redis_url, redis_prefix, registry) as stack:
        await start_rollout(plane, "m-bad", plan((0.25, 0.5, 1.0)), actor="operator", reason="x")
        stack.feed(parts)
        await wait_until(await phase_is(plane, Phase.ABORTED, Phase.PROMOTED), 120, "abort")
        st = await ramp_state(plane)
        assert st is not None and st.phase == Phase.ABORTED and st.step == 0, st
        winrate = next(c for c in st.checks if c.name == "winrate")
        assert winrate.status == Status.RED
        ev = st.sequential.evidence
        assert min(ev.n_base, ev.n_canary) >= st.plan.steps[0].min_samples
        snap = await plane.snapshot()
        assert snap.rollout.mode == "disabled" and snap.active == "m-base"
        assert snap.cooldown_until_ns > time.time_ns()
        audit = await plane.audit_log(500)
        rollback = next(e for e in audit if e["kind"] == "ROLLBACK")
        assert rollback["actor"] == "risk-supervisor"
        assert rollback["reason"].startswith("rollout abort: STEP 1/3")
        assert not any("STEP 2/3" in r for r in ramp_audit(audit))
        text = await stack.metrics()  # the abort counts as a rollback: RollbackHappened fires
        assert "rollback_total 1.0" in text and 'rollout_phase{phase="ABORTED"} 1.0' in text
        await stack.reader.wait_for(
            lambda: any(
                e.kind == "ROLLOUT" and "ABORTED" in e.reason for e in stack.control_events()
            ),
            30,
            "ABORTED on control.events",
        )


async def test_candidate_without_traffic_pauses_and_never_advances(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
):
    registry = tmp_path / "registry"
    parts = market(200)
    fit(registry, "m-base", parts)
    fit(registry, "m-cand", parts)
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-base", actor="test", reason="baseline")
    p = plan(
        (0.25, 1.0),
        steps=[
            {"fraction": 0.25, "min_duration_s": 0.5, "inconclusive_limit_s": 2},
            {"fraction": 1.0},
        ],
    )
    async with Stack(kafka_settings, redis_url, redis_prefix, registry) as stack:
        await start_rollout(plane, "m-cand", p, actor="operator", reason="no traffic")
        await wait_until(await phase_is(plane, Phase.PAUSED), 30, "pause")
        await asyncio.sleep(3.0)  # several more windows: still paused, still step 1
        st = await ramp_state(plane)
        assert st is not None and st.phase == Phase.PAUSED and st.step == 0
        assert "inconclusive" in st.reason
        assert st.checks and all(c.status == Status.INCONCLUSIVE for c in st.checks)
        snap = await plane.snapshot()
        assert snap.rollout.canary_fraction == 0.25 and snap.active == "m-base"
        text = await stack.metrics()
        assert 'rollout_phase{phase="PAUSED"} 1.0' in text and "rollout_step 1.0" in text
        assert 'rollout_transitions_total{phase="PROMOTED"}' not in text


async def test_breach_after_promotion_rolls_back_to_the_previous_model(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
):
    calm, _ = generate_market(
        SyntheticConfig(n_bars=1500, seed=1, sigma=0.002, high_vol_mult=1.0, symbol="CALM")
    )
    live, _ = generate_market(
        SyntheticConfig(n_bars=900, seed=4, sigma=0.002, high_vol_mult=1.0, symbol="CALM")
    )
    wild, _ = generate_market(
        SyntheticConfig(n_bars=600, seed=2, sigma=0.03, high_vol_mult=1.0, symbol="WILD")
    )
    registry = tmp_path / "registry"
    fit(registry, "m-base", [calm])
    # the candidate passes the ramp, but its drift reference was taken on another market:
    # once it is the active model, the drift guard judges live data against it
    fit(registry, "m-cand", [calm], drift_from=[wild])
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-base", actor="test", reason="baseline")
    p = plan(
        (1.0,),
        checks={"p95_latency_ms": 2000, "drift": True, "winrate": None},
        promotion={"guard_window_s": 120, "guard_min_samples": 10},
    )
    guard = GUARD.model_copy(update={"drift_min_window": 100})
    async with Stack(kafka_settings, redis_url, redis_prefix, registry, guard) as stack:
        await start_rollout(plane, "m-cand", p, actor="operator", reason="x")
        stack.feed([live])
        await wait_until(await phase_is(plane, Phase.PROMOTED, Phase.ABORTED), 120, "promotion")
        assert (await plane.snapshot()).active == "m-cand"
        await wait_until(await phase_is(plane, Phase.ROLLED_BACK), 120, "rollback")
        st = await ramp_state(plane)
        assert st is not None and "drift" in st.reason
        snap = await plane.snapshot()
        assert snap.active == "m-base" and snap.cooldown_until_ns > time.time_ns()
        audit = await plane.audit_log(500)
        rollbacks = [e for e in audit if e["kind"] == "ROLLBACK"]
        assert len(rollbacks) == 1  # the plan acted; the drift guard did not act twice
        assert rollbacks[0]["reason"].startswith("rollback after promotion:")
        assert "rollback_total 1.0" in await stack.metrics()
        await stack.reader.wait_for(
            lambda: any(
                e.kind == "ROLLOUT" and "ROLLED_BACK" in e.reason for e in stack.control_events()
            ),
            30,
            "ROLLED_BACK on control.events",
        )


async def test_ramp_state_writes_are_compare_and_set_and_audited(redis_client, redis_prefix):
    plane = ControlPlane(redis_client, redis_prefix)
    assert await plane.rollout_state() is None
    assert await plane.put_rollout_state({"x": 1}, expect_revision=None, audit=None)
    # a writer that read before that write loses, and leaves no audit entry
    assert not await plane.put_rollout_state(
        {"x": 2}, expect_revision=None, audit=("op", "late", None, 2)
    )
    assert await plane.rollout_state() == (1, {"x": 1})
    assert await plane.put_rollout_state(
        {"x": 3}, expect_revision=1, audit=("op", "rollout r: pause", 1, 3)
    )
    assert await plane.rollout_state() == (2, {"x": 3})
    reasons = [e["reason"] for e in await plane.audit_log() if e["kind"] == "ROLLOUT"]
    assert reasons == ["rollout r: pause"]
