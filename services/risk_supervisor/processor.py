"""Risk supervision stream logic: outcomes, win rates, drift, guards, audit forwarding.

- Outcomes: each signal is labelled by its markout after `horizon` bars net of a cost
  (geodesic.risk.outcomes) and published to outcomes.v1.
- Guards: outcomes, feature vectors, bars and the shadow's parity count feed a
  SupervisorState (geodesic.risk.supervisor); every `eval_interval_s` it is evaluated
  against the live control snapshot and its actions (rollback, REDUCING/HALTED) are
  executed through the control plane, each audited with the guard's reason.
- Audit forwarding: every control-plane change is appended to the Redis audit stream by
  whoever made it; the supervisor forwards each entry to control.events in order,
  checkpointing the last stream id with its own state.

State spans several input topics, so it is checkpointed whole (one key) with every
partition's next offset; a restart seeks there and resumes without double counting.
Checkpoints may be throttled safely: an older (state, offsets) pair is still consistent.
Drift windows and volatility history are not checkpointed: they refill from the stream
within one window after a restart (the guards answer insufficient_data meanwhile).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from geodesic.contracts import Bar, FeatureVector, Outcome, ScoredSignal
from geodesic.contracts.reasons import RejectReason, SignalReason
from geodesic.contracts.services import RISK_SUPERVISOR, SHADOW
from geodesic.control import ControlPlane, ControlSnapshot
from geodesic.control.audit import audit_to_event
from geodesic.control.keys import Keys
from geodesic.lifecycle.drift import DRIFT_FILE, DriftReference
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.risk.outcomes import MarkoutLabeler
from geodesic.risk.supervisor import DriftMonitor, Rollback, SetTradingState, SupervisorState
from geodesic.risk.winrate import RollingWinRate
from geodesic.rollout.controller import RolloutController, RolloutMetrics
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import STATE_STORE_ERRORS, Output
from lorentzcore.metrics import expected_calibration_error

log = logging.getLogger(__name__)
STATE_NAME = "supervisor"
ACTOR = RISK_SUPERVISOR.name
STATUS = "status"
assert STATUS in RISK_SUPERVISOR.state


class RiskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.outcomes = Counter("outcomes_total", "outcomes labelled", ["route"], registry=r)
        self.external_changes = Counter(
            "control_external_changes_total",
            "control flags changed outside the audited path (recorded as EXTERNAL_CHANGE)",
            registry=r,
        )
        self.winrate_active = Gauge(
            "winrate_baseline_active", "rolling win rate, active route", registry=r
        )
        self.winrate_canary = Gauge("winrate_canary", "rolling win rate, canary", registry=r)
        self.sample_active = Gauge("sample_active", "outcomes in the active window", registry=r)
        self.sample_canary = Gauge("sample_canary", "outcomes in the canary window", registry=r)
        self.psi = Gauge("psi", "windowed PSI vs the model reference", ["feature"], registry=r)
        self.ks = Gauge("ks", "windowed KS vs the model reference", ["feature"], registry=r)
        self.psi_level = Gauge(
            "psi_alarm_level", "sample-size-aware PSI level", ["feature"], registry=r
        )
        self.ece = Gauge("ece", "expected calibration error, active route", registry=r)
        self.guard = Gauge(
            "guard_verdict", "1 when a guard wants action", ["guard", "verdict"], registry=r
        )
        self.rollbacks = Counter("rollback_total", "automatic rollbacks", registry=r)
        self.mode_switches = Counter("mode_switch_total", "mode switches", registry=r)
        self.halts = Counter("halt_total", "trading-state escalations", ["state"], registry=r)
        self.kill_switch = Gauge("kill_switch_active", "global kill switch on", registry=r)
        self.forwarded = Counter("control_events_forwarded_total", "audit entries sent", registry=r)
        self.rollout = RolloutMetrics(r, rollbacks=self.rollbacks, mode_switches=self.mode_switches)


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


class RiskProcessor:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        prefix: str,
        checkpoints: CheckpointStore,
        signals_topic: str,
        bars_topic: str,
        features_topic: str,
        outcomes_topic: str,
        control_topic: str,
        horizon_bars: int,
        cost_bp: float,
        winrate_window: int,
        checkpoint_interval_s: float,
        guard: RolloutGuardConfig,
        registry_root: Path,
        drift_window: int,
        metrics: RiskMetrics,
        dead_letters: DeadLetterSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.dead_letters = dead_letters
        self.keys = Keys(prefix)
        self.plane = ControlPlane(redis, prefix)
        self.checkpoints = checkpoints
        self.signals_topic = signals_topic
        self.bars_topic = bars_topic
        self.features_topic = features_topic
        self.outcomes_topic = outcomes_topic
        self.control_topic = control_topic
        self.labeler = MarkoutLabeler(horizon_bars=horizon_bars, cost_bp=cost_bp)
        self.window = winrate_window
        self.guard = guard
        self.state = SupervisorState(guard, winrate_window=winrate_window)
        self.registry_root = Path(registry_root)
        self.drift_window = drift_window
        self.calibration: list[tuple[float, bool]] = []
        self.audit_last_id = "0-0"
        self.metrics = metrics
        self.interval = checkpoint_interval_s
        self.clock = clock
        self.snapshot_view: ControlSnapshot | None = None
        #: the automatic canary ramp (geodesic.rollout): fed here, ticked from run_guards
        self.rollout = RolloutController(self.plane, metrics.rollout, actor=ACTOR)
        self._last_checkpoint = float("-inf")
        self._last_eval = float("-inf")
        self._dirty = False
        self.actions_taken: list[dict[str, Any]] = []
        self.counts = {
            "signals": 0,
            "bars": 0,
            "features": 0,
            "outcomes": 0,
            "forwarded": 0,
            "invalid": 0,
        }

    # ---- state ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler.snapshot(),
            "winrates": [
                [route, model, wr.snapshot()] for (route, model), wr in self.state.winrates.items()
            ],
            "audit_last_id": self.audit_last_id,
            "rollout": self.rollout.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.labeler.restore(state["labeler"])
        self.state.winrates = {
            (route, model): RollingWinRate.restore(values, self.window)
            for route, model, values in state.get("winrates", [])
        }
        self.audit_last_id = state.get("audit_last_id", "0-0")
        self.rollout.restore(state.get("rollout"))

    async def on_assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        saved = await self.checkpoints.load_global(STATE_NAME)
        if saved is None:
            return {}
        offsets, state = saved
        self.restore(state)
        return {tp: off for tp, off in offsets.items() if tp in partitions}

    async def begin_batch(self) -> None:
        return None

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
            raw = rec.value or b""
            try:
                if tp.topic == self.signals_topic:
                    outcomes = self._on_signal(ScoredSignal.model_validate_json(raw))
                elif tp.topic == self.bars_topic:
                    bar = Bar.model_validate_json(raw)
                    self.counts["bars"] += 1
                    self.state.on_bar(bar)
                    outcomes = self.labeler.on_bar(bar)
                else:
                    self.counts["features"] += 1
                    self.state.on_features(FeatureVector.model_validate_json(raw))
                    outcomes = []
            except Exception as exc:  # dead-letter: a bad record must not stop the loop
                self.counts["invalid"] += 1
                text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                if isinstance(exc, ValidationError):
                    reason = RejectReason.INVALID_RECORD
                else:
                    reason = RejectReason.PROCESSING_ERROR
                    log.exception("risk supervisor failed on %s@%d", tp, rec.offset)
                out.append(self.dead_letters.reject_record(reason, text, tp, rec))
                continue
            for o in outcomes:
                self.counts["outcomes"] += 1
                self.metrics.outcomes.labels(route=o.route).inc()
                self.state.on_outcome(o)
                self.rollout.observe_outcome(o)
                if o.route == "active" and o.prob_up is not None:
                    self.calibration.append((o.prob_up, o.exit_price > o.entry_price))
                    self.calibration = self.calibration[-self.window :]
                out.append(Output(self.outcomes_topic, o.symbol.encode(), o.to_bytes()))
        return out

    def _on_signal(self, sig: ScoredSignal) -> list[Outcome]:
        self.counts["signals"] += 1
        self.rollout.observe_signal(sig)
        if sig.model_id == "none" or SignalReason.MODEL_UNAVAILABLE in sig.reasons:
            return []
        return self.labeler.on_signal(sig)

    async def on_idle(self, now_ns: int) -> list[Output]:
        out = await self._forward_audit()
        if self.clock() - self._last_eval >= self.guard.eval_interval_s:
            self._last_eval = self.clock()
            try:
                await self.run_guards(now_ns)
            except STATE_STORE_ERRORS as exc:
                # the audit entries read above must still go out: retry guards next time
                log.warning("guards skipped, control plane unreachable: %s", exc)
        return out

    # ---- guards --------------------------------------------------------------------
    async def run_guards(self, now_ns: int) -> None:
        if await self.plane.detect_external(actor=ACTOR):  # flags changed, not audited
            self.metrics.external_changes.inc()
        snap = await self.plane.snapshot()
        self.snapshot_view = snap
        self.metrics.kill_switch.set(1 if snap.kill_global else 0)
        self._ensure_drift_monitor(snap.active)
        raw = await self.redis.get(self.keys.service_state(SHADOW.name, "stats"))
        shadow = json.loads(raw) if raw else None
        if shadow:
            self.state.on_parity_failures(int(shadow.get("parity_fail", 0)))
        # the guards decide first; the rollout plan, which reads their drift verdict, acts
        # first: while it judges a ramp or a promotion its actions win, and the guards'
        # are re-derived from the plane it left (a cooldown it started stops theirs)
        await self.rollout.load()
        actions = self.state.evaluate(
            snap, now_ns, canary_judged_by_plan=self.rollout.judges_canary()
        )
        drift = self.state.drift
        if await self.rollout.tick(
            now_ns,
            snap,
            decisions=self.state.last_decisions,
            drift_samples=max((d.n for d in drift.drifts(self.guard)), default=0) if drift else 0,
            parity_total=self.state.parity_failures_seen,
            shadow=shadow,
        ):
            snap = await self.plane.snapshot()
            self.snapshot_view = snap
            actions = self.state.evaluate(
                snap, now_ns, canary_judged_by_plan=self.rollout.judges_canary()
            )
        for action in actions:
            await self._apply(action, snap)
        self._update_gauges(snap)

    def _ensure_drift_monitor(self, model_id: str | None) -> None:
        current = self.state.drift
        if current is not None and current.model_id == model_id:
            return
        self.state.set_drift_monitor(None)
        if not model_id:
            return
        path = self.registry_root / model_id / DRIFT_FILE
        if not path.is_file():
            log.info("model %s has no %s: drift guard inactive", model_id, DRIFT_FILE)
            return
        try:
            ref = DriftReference.load(path)
            self.state.set_drift_monitor(
                DriftMonitor.from_reference(model_id, ref, window=self.drift_window)
            )
        except (OSError, ValueError, KeyError) as exc:
            log.error("drift reference %s unusable: %s", path, exc)

    async def _apply(self, action: Rollback | SetTradingState, snap: ControlSnapshot) -> None:
        d = action.decision
        reason = f"{d.guard}: {action.reason}"
        if isinstance(action, Rollback):
            await self.plane.rollback(actor=ACTOR, reason=reason, cooldown_s=self.guard.cooldown_s)
            await self.plane.record_mode_switch(
                actor=ACTOR,
                reason=reason,
                before=snap.rollout.mode if snap.rollout.mode != "disabled" else "active",
                after="disabled" if snap.rollout.mode != "disabled" else "previous",
            )
            self.metrics.rollbacks.inc()
            self.metrics.mode_switches.inc()
        else:
            await self.plane.set_trading_state(
                action.state, actor=ACTOR, reason=reason, symbol=action.symbol
            )
            self.metrics.halts.labels(state=action.state.value).inc()
        self.actions_taken.append(
            {
                "action": type(action).__name__,
                "guard": d.guard,
                "reason": action.reason,
                "symbol": getattr(action, "symbol", None),
            }
        )
        log.warning("guard action %s: %s", type(action).__name__, reason)

    def _update_gauges(self, snap: ControlSnapshot) -> None:
        m = self.metrics
        a = self.state.winrate("active", snap.active).value()
        c = self.state.winrate("canary", snap.rollout.candidate).value()
        if a.rate is not None:
            m.winrate_active.set(a.rate)
        if c.rate is not None:
            m.winrate_canary.set(c.rate)
        m.sample_active.set(a.n)
        m.sample_canary.set(c.n)
        if self.state.drift is not None:
            for dr in self.state.drift.drifts(self.guard):
                if dr.n:
                    m.psi.labels(feature=dr.feature).set(dr.psi)
                    m.ks.labels(feature=dr.feature).set(dr.ks)
                    m.psi_level.labels(feature=dr.feature).set(dr.psi_level)
        if len(self.calibration) >= 20:
            probs = [p for p, _ in self.calibration]
            ups = [int(u) for _, u in self.calibration]
            m.ece.set(expected_calibration_error(ups, probs))
        m.guard.clear()
        for d in self.state.last_decisions.values():
            m.guard.labels(guard=d.guard, verdict=d.verdict).set(1)

    async def _forward_audit(self) -> list[Output]:
        """Forward new audit entries to control.events, in stream order."""
        rows = await self.redis.xrange(self.keys.audit, min=f"({self.audit_last_id}", count=200)
        rows = rows or []
        out = []
        for entry_id, fields in rows:
            if entry_id is None or fields is None:
                continue
            eid = _text(entry_id)
            f: dict[bytes | str, bytes | str] = {_text(k): _text(v) for k, v in fields.items()}
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

    # ---- reporting -----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        snap = self.snapshot_view
        doc: dict[str, Any] = {
            "guards": {k: v.__dict__ for k, v in self.state.last_decisions.items()}
        }
        if snap is not None:
            doc["winrates"] = {
                "active": self.state.winrate("active", snap.active).value().__dict__,
                "canary": self.state.winrate("canary", snap.rollout.candidate).value().__dict__,
            }
        if self.state.drift is not None:
            doc["drift"] = {
                d.feature: {
                    "n": d.n,
                    "psi": d.psi,
                    "psi_level": d.psi_level,
                    "ks": d.ks,
                    "ks_level": d.ks_level,
                }
                for d in self.state.drift.drifts(self.guard)
            }
        doc["actions"] = self.actions_taken[-20:]
        doc["rollout"] = self.rollout.status(time.time_ns())
        return doc

    async def publish_winrates(self) -> None:
        status = self.status()
        await self.redis.set(
            self.keys.service_state(RISK_SUPERVISOR.name, STATUS), json.dumps(status, default=str)
        )
