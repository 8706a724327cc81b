"""Risk supervision stream logic: label outcomes, keep win rates per route, forward audit.

- Outcomes: each signal is labelled by its markout after `horizon` bars net of a cost
  (geodesic.risk.outcomes); outcomes go to outcomes.v1.
- Win rates per route (active = baseline, canary) over a rolling window, with Wilson
  bounds, published to Redis (risk:winrate) where guards and operators read them.
- Audit forwarding: every control-plane change is appended to the Redis audit stream by
  whoever made it; the supervisor forwards each entry to control.events exactly in order,
  checkpointing the last stream id with its own state.

State spans both input topics, so it is checkpointed whole (one key) with every
partition's next offset; a restart seeks there and resumes without double counting.
Checkpoints may be throttled safely: an older (state, offsets) pair is still consistent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from geodesic.contracts import Bar, ControlEvent, ScoredSignal
from geodesic.control.keys import Keys
from geodesic.risk.outcomes import MarkoutLabeler
from geodesic.risk.winrate import RollingWinRate
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.pipeline import Output

log = logging.getLogger(__name__)
ROUTES = ("active", "canary")
STATE_NAME = "supervisor"


class RiskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.outcomes = Counter("outcomes_total", "outcomes labelled", ["route"], registry=r)
        self.winrate_active = Gauge(
            "winrate_baseline_active", "rolling win rate, active route", registry=r
        )
        self.winrate_canary = Gauge("winrate_canary", "rolling win rate, canary", registry=r)
        self.sample_active = Gauge("sample_active", "outcomes in the active window", registry=r)
        self.sample_canary = Gauge("sample_canary", "outcomes in the canary window", registry=r)
        self.forwarded = Counter("control_events_forwarded_total", "audit entries sent", registry=r)
        self.invalid = Counter("risk_invalid_input_total", "records skipped", registry=r)


def audit_to_event(entry_id: str, fields: dict[str, str]) -> ControlEvent:
    return ControlEvent(
        event_id=fields.get("event_id") or entry_id,
        kind=fields["kind"],  # type: ignore[arg-type]
        actor=fields.get("actor") or "unknown",
        reason=fields.get("reason") or "unspecified",
        from_value=fields.get("from"),
        to_value=fields.get("to"),
        symbol=fields.get("symbol") or None,
        ts_ns=int(fields.get("ts_ns") or 0),
    )


class RiskProcessor:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        prefix: str,
        checkpoints: CheckpointStore,
        signals_topic: str,
        bars_topic: str,
        outcomes_topic: str,
        control_topic: str,
        horizon_bars: int,
        cost_bp: float,
        winrate_window: int,
        checkpoint_interval_s: float,
        metrics: RiskMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.checkpoints = checkpoints
        self.signals_topic = signals_topic
        self.bars_topic = bars_topic
        self.outcomes_topic = outcomes_topic
        self.control_topic = control_topic
        self.labeler = MarkoutLabeler(horizon_bars=horizon_bars, cost_bp=cost_bp)
        self.window = winrate_window
        self.winrates = {r: RollingWinRate(winrate_window) for r in ROUTES}
        self.audit_last_id = "0-0"
        self.metrics = metrics
        self.interval = checkpoint_interval_s
        self.clock = clock
        self._last_checkpoint = float("-inf")
        self._dirty = False
        self.counts = {"signals": 0, "bars": 0, "outcomes": 0, "forwarded": 0}

    # ---- state ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler.snapshot(),
            "winrates": {r: w.snapshot() for r, w in self.winrates.items()},
            "audit_last_id": self.audit_last_id,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.labeler.restore(state["labeler"])
        self.winrates = {
            r: RollingWinRate.restore(state["winrates"].get(r, []), self.window) for r in ROUTES
        }
        self.audit_last_id = state.get("audit_last_id", "0-0")

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        saved = await self.checkpoints.load_global(STATE_NAME)
        if saved is None:
            return {}
        offsets, state = saved
        self.restore(state)
        return {tp: off for tp, off in offsets.items() if tp in partitions}

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        return None

    async def checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        now = self.clock()
        if not self._dirty or now - self._last_checkpoint < self.interval:
            return
        await self.checkpoints.save_global(STATE_NAME, positions, self.snapshot())
        await self.publish_winrates()
        self._last_checkpoint = now
        self._dirty = False

    # ---- streams -------------------------------------------------------------------
    async def process(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> list[Output]:
        out: list[Output] = []
        self._dirty = True
        for rec in records:
            try:
                if tp.topic == self.signals_topic:
                    sig = ScoredSignal.model_validate_json(rec.value or b"")
                    self.counts["signals"] += 1
                    if sig.model_id == "none" or "model_unavailable" in sig.reasons:
                        continue
                    outcomes = self.labeler.on_signal(sig)
                else:
                    self.counts["bars"] += 1
                    outcomes = self.labeler.on_bar(Bar.model_validate_json(rec.value or b""))
            except ValidationError as exc:
                self.metrics.invalid.inc()
                log.warning("risk supervisor skipped a record on %s: %s", tp.topic, exc)
                continue
            for o in outcomes:
                self.counts["outcomes"] += 1
                self.metrics.outcomes.labels(route=o.route).inc()
                if o.win is not None:
                    self.winrates[o.route].add(o.win)
                out.append(Output(self.outcomes_topic, o.symbol.encode(), o.to_bytes()))
        self._update_gauges()
        return out

    async def on_idle(self, now_ns: int) -> list[Output]:
        """Forward new audit entries to control.events, in stream order."""
        rows = await self.redis.xrange(self.keys.audit, min=f"({self.audit_last_id}", count=200)
        out = []
        for entry_id, fields in rows:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            f = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in fields.items()
            }
            try:
                event = audit_to_event(eid, f)
            except ValidationError as exc:
                log.error("audit entry %s not forwardable: %s", eid, exc)
            else:
                out.append(Output(self.control_topic, b"control", event.to_bytes()))
                self.counts["forwarded"] += 1
                self.metrics.forwarded.inc()
            self.audit_last_id = eid
            self._dirty = True
        return out

    def _update_gauges(self) -> None:
        a, c = self.winrates["active"].value(), self.winrates["canary"].value()
        if a.rate is not None:
            self.metrics.winrate_active.set(a.rate)
        if c.rate is not None:
            self.metrics.winrate_canary.set(c.rate)
        self.metrics.sample_active.set(a.n)
        self.metrics.sample_canary.set(c.n)

    def winrate_doc(self) -> dict[str, dict]:
        return {r: self.winrates[r].value().__dict__ for r in ROUTES}

    async def publish_winrates(self) -> None:
        mapping = {r: json.dumps(v) for r, v in self.winrate_doc().items()}
        await self.redis.hset(self.keys.service_state("risk", "winrate"), mapping=mapping)
