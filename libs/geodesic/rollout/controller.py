"""The rollout controller: runs the state machine against the live control plane.

The risk supervisor feeds it signals and outcomes and calls `tick` from its guard loop.
Where each piece of state lives, and why a restart (kill -9 included) resumes the same step:

- The machine's state (phase, step, step start, streaks, the sequential test, the last
  check results) is a JSON document in Redis (Keys.rollout_controller), written after
  every analysis window and, on a phase or step change, in the same MULTI as its ROLLOUT
  audit entry (so every transition is on control.events). Writes are compare-and-set on
  a revision, so an operator's pause and a controller decision never overwrite each other.
- The state is the intent; the control plane is reconciled to it on every tick. An action
  (fraction, promotion, rollback) is applied before the state recording it is written:
  a crash in between leaves the old state and a plane that is ahead, and the next tick
  either repeats the (idempotent) action or sets the fraction back to the state's.
  A rollout disabled or re-targeted by someone else (a guard, an operator's
  `geodesic rollout disable`) ends the ramp as ABORTED, recorded as such.
- The per-step counts (`Tally`) are checkpointed with the supervisor's Kafka offsets
  (its processor snapshot), so after a restart they are exactly those of the offsets
  it resumes from: nothing is counted twice or lost.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from geodesic.contracts import Outcome, ScoredSignal
from geodesic.contracts.reasons import SignalReason
from geodesic.control import ControlPlane, ControlSnapshot, Rollout
from geodesic.control.plane import CooldownActiveError
from geodesic.risk.guards import GuardDecision
from geodesic.rollout.machine import (
    LIVE,
    AbortCanary,
    Action,
    Observations,
    Phase,
    Promote,
    RollbackPromotion,
    RolloutState,
    SetFraction,
    Status,
    Transition,
    abort,
    decide,
    start,
    time_to_decision_s,
)
from geodesic.rollout.plan import RolloutPlan
from geodesic.rollout.sequential import WinRateEvidence

log = logging.getLogger(__name__)

#: signals whose model did not score: errors of the route's model
_MODEL_ERRORS = frozenset({SignalReason.MODEL_UNAVAILABLE, SignalReason.SCHEMA_MISMATCH})
_LATENCIES_KEPT = 5000
_STATUS_CODE = {Status.GREEN: 1, Status.INCONCLUSIVE: 0, Status.RED: -1}


class RolloutMetrics:
    """The ramp's own gauges; its rollbacks count in the supervisor's rollback_total and
    mode_switch_total (pass them in), so RollbackHappened fires for an abort too."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        rollbacks: Counter | None = None,
        mode_switches: Counter | None = None,
    ) -> None:
        r = registry
        self.rollbacks = rollbacks or Counter("rollback_total", "automatic rollbacks", registry=r)
        self.mode_switches = mode_switches or Counter(
            "mode_switch_total", "mode switches", registry=r
        )
        self.phase = Gauge("rollout_phase", "1 for the ramp's current phase", ["phase"], registry=r)
        self.step = Gauge("rollout_step", "current ramp step, 1-based (0: none)", registry=r)
        self.weight = Gauge("rollout_weight", "candidate traffic fraction intended", registry=r)
        self.time_in_step = Gauge(
            "rollout_time_in_step_seconds", "seconds since the step started", registry=r
        )
        self.check_value = Gauge(
            "rollout_check_value", "last judged value of a check", ["check"], registry=r
        )
        self.check_threshold = Gauge(
            "rollout_check_threshold", "a check's threshold", ["check"], registry=r
        )
        self.check_samples = Gauge(
            "rollout_check_samples", "samples a check was judged on", ["check"], registry=r
        )
        self.check_status = Gauge(
            "rollout_check_status",
            "1 green, 0 inconclusive, -1 red (last analysis window)",
            ["check"],
            registry=r,
        )
        self.transitions = Counter(
            "rollout_transitions_total",
            "ramp transitions, by the phase entered",
            ["phase"],
            registry=r,
        )


@dataclass
class Tally:
    """Counts since the current step (or promotion) started, for one rollout."""

    rollout_id: str = ""
    step_key: str = ""
    winrate: WinRateEvidence = field(default_factory=WinRateEvidence)
    base_outcomes: int = 0
    candidate_outcomes: int = 0
    candidate_signals: int = 0
    candidate_errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES_KEPT))
    parity_at_start: int | None = None

    def new_step(self, step_key: str) -> None:
        self.step_key = step_key
        self.base_outcomes = self.candidate_outcomes = 0
        self.candidate_signals = self.candidate_errors = 0
        self.latencies.clear()
        self.parity_at_start = None

    def to_json(self) -> dict[str, Any]:
        ev = self.winrate
        return {
            "rollout_id": self.rollout_id,
            "step_key": self.step_key,
            "winrate": [ev.wins_base, ev.n_base, ev.wins_canary, ev.n_canary],
            "counts": [
                self.base_outcomes,
                self.candidate_outcomes,
                self.candidate_signals,
                self.candidate_errors,
            ],
            "latencies": list(self.latencies),
            "parity_at_start": self.parity_at_start,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Tally:
        t = cls(doc["rollout_id"], doc["step_key"], WinRateEvidence(*doc["winrate"]))
        t.base_outcomes, t.candidate_outcomes, t.candidate_signals, t.candidate_errors = doc[
            "counts"
        ]
        t.latencies.extend(float(x) for x in doc["latencies"])
        t.parity_at_start = doc.get("parity_at_start")
        return t


def step_key(state: RolloutState) -> str:
    """Which counting period the state is in: a step of the ramp, or the guard window."""
    return "guard" if state.phase == Phase.PROMOTED else f"step{state.step}"


class RolloutController:
    def __init__(self, plane: ControlPlane, metrics: RolloutMetrics, *, actor: str) -> None:
        self.plane = plane
        self.metrics = metrics
        self.actor = actor
        self.state: RolloutState | None = None
        self.revision: int | None = None
        self.tally = Tally()

    # ---- inputs (from the supervisor's stream processing) -------------------------
    def observe_signal(self, sig: ScoredSignal) -> None:
        st = self.state
        if st is None or sig.model_id != st.candidate or not self._counting(st):
            return
        if sig.route != ("active" if st.phase == Phase.PROMOTED else "canary"):
            return
        t = self.tally
        t.candidate_signals += 1
        if _MODEL_ERRORS.intersection(sig.reasons):
            t.candidate_errors += 1
        elif "score_total" in sig.latency_ms:
            t.latencies.append(float(sig.latency_ms["score_total"]))

    def observe_outcome(self, o: Outcome) -> None:
        st = self.state
        if st is None or o.win is None or st.phase not in (Phase.ANALYSING, Phase.PAUSED):
            return
        t = self.tally
        if o.route == "canary" and o.model_id == st.candidate:
            t.candidate_outcomes += 1
            t.winrate = t.winrate.add("canary", o.win)
        elif o.route == "active" and o.model_id == st.baseline:
            t.base_outcomes += 1
            t.winrate = t.winrate.add("active", o.win)

    def _counting(self, st: RolloutState) -> bool:
        return st.phase in (Phase.ANALYSING, Phase.PAUSED) or (
            st.phase == Phase.PROMOTED and not st.guard_done
        )

    # ---- checkpointing (with the supervisor's offsets) ----------------------------
    def snapshot(self) -> dict[str, Any]:
        return self.tally.to_json()

    def restore(self, doc: dict[str, Any] | None) -> None:
        self.tally = Tally.from_json(doc) if doc else Tally()

    def judges_canary(self) -> bool:
        """True while a plan judges the canary: the fixed-level guard must stand aside."""
        return self.state is not None and self.state.phase in LIVE

    # ---- the loop ------------------------------------------------------------------
    async def load(self) -> RolloutState | None:
        """Read the ramp's state (an operator may have changed it since the last tick)."""
        loaded = await self.plane.rollout_state()
        if loaded is None:
            self.state, self.revision = None, None
        else:
            self.revision, doc = loaded
            self.state = RolloutState.from_json(doc)
        return self.state

    async def tick(
        self,
        now_ns: int,
        snap: ControlSnapshot,
        *,
        decisions: dict[str, GuardDecision],
        drift_samples: int,
        parity_total: int,
        shadow: dict[str, Any] | None,
    ) -> bool:
        """One pass after `load`: reconcile, judge, act, persist. True when the plane changed."""
        state = self.state
        if state is None:
            self._export(None, now_ns)
            return False
        if self.tally.rollout_id != state.rollout_id:
            self.tally = Tally(rollout_id=state.rollout_id, step_key=step_key(state))
        if self.tally.step_key != step_key(state):
            self.tally.new_step(step_key(state))
        if self.tally.parity_at_start is None:
            self.tally.parity_at_start = parity_total

        changed = False
        if state.phase == Phase.PENDING:
            transition = start(replace(state, baseline=snap.active), now_ns)
        elif (outside := _changed_outside(state, snap)) is not None:
            transition = abort(state, now_ns, outside)
            transition = Transition(transition.state, (), True, transition.summary)
        elif (
            state.phase == Phase.PROMOTED
            and state.guard_until_ns > now_ns
            and (snap.active != state.candidate)
        ):
            ended = replace(
                state,
                phase=Phase.ROLLED_BACK,
                reason=f"active is {snap.active}, not {state.candidate}: changed outside",
                updated_ns=now_ns,
            )
            transition = Transition(ended, (), True, f"ROLLED_BACK outside: {ended.reason}")
        else:
            changed = await self._reconcile_fraction(state, snap)
            obs = self._observations(decisions, drift_samples, parity_total, shadow)
            transition = decide(state, obs, now_ns)
        if transition.state != state or transition.changed:
            try:
                for action in transition.actions:
                    await self._apply(action, snap)
                    changed = True
            except CooldownActiveError as exc:
                # a rollback's cooldown began meanwhile: a ramp not begun ends (start it
                # again later); one under way holds its weight for an operator
                if state.phase == Phase.PENDING:
                    phase, then = Phase.ABORTED, "then `geodesic rollout start` again"
                else:
                    phase, then = Phase.PAUSED, "then `geodesic rollout resume`"
                reason = f"{exc}; review it, `geodesic cooldown clear`, {then}"
                transition = Transition(
                    replace(state, phase=phase, reason=reason, updated_ns=now_ns),
                    (),
                    True,
                    f"{phase.value}: {reason}",
                )
            await self._persist(state, transition)
        self._export(self.state, now_ns)
        return changed

    def _observations(
        self,
        decisions: dict[str, GuardDecision],
        drift_samples: int,
        parity_total: int,
        shadow: dict[str, Any] | None,
    ) -> Observations:
        t = self.tally
        drift = decisions.get("drift")
        shadow = shadow or {}
        return Observations(
            base_outcomes=t.base_outcomes,
            candidate_outcomes=t.candidate_outcomes,
            candidate_signals=t.candidate_signals,
            candidate_errors=t.candidate_errors,
            latencies_ms=tuple(t.latencies),
            shadow_match_rate=shadow.get("match_rate"),
            shadow_samples=int(shadow.get("window") or 0),
            parity_failures=max(0, parity_total - (t.parity_at_start or 0)),
            drift_verdict=drift.verdict if drift is not None else "insufficient_data",
            drift_value=drift.value if drift is not None else None,
            drift_limit=drift.limit if drift is not None else None,
            drift_samples=drift_samples,
            winrate=t.winrate,
        )

    async def _reconcile_fraction(self, state: RolloutState, snap: ControlSnapshot) -> bool:
        """The state is the intent: a plane left ahead of it by a crash is set back."""
        if state.phase not in (Phase.ANALYSING, Phase.PAUSED):
            return False
        if snap.rollout.canary_fraction == state.fraction:
            return False
        await self._apply(SetFraction(state.candidate, state.fraction, state.plan.seed), snap)
        return True

    async def _apply(self, action: Action, snap: ControlSnapshot) -> None:
        who = self.actor
        if isinstance(action, SetFraction):
            await self.plane.set_rollout(
                Rollout("canary", action.fraction, action.seed, action.candidate),
                actor=who,
                reason=f"rollout plan: canary {action.candidate} at {action.fraction:.0%}",
            )
        elif isinstance(action, AbortCanary):
            if action.cooldown_s is None:
                await self.plane.set_rollout(Rollout(), actor=who, reason=action.reason)
            elif snap.rollout.mode != "disabled":
                await self.plane.rollback(
                    actor=who,
                    reason=f"rollout abort: {action.reason}",
                    cooldown_s=action.cooldown_s,
                )
                await self.plane.record_mode_switch(
                    actor=who, reason=action.reason, before="canary", after="disabled"
                )
                self.metrics.rollbacks.inc()
                self.metrics.mode_switches.inc()
        elif isinstance(action, Promote):
            await self.plane.promote(
                action.candidate, actor=who, reason="rollout plan: every step green"
            )
            await self.plane.set_rollout(
                Rollout(), actor=who, reason=f"rollout plan: {action.candidate} promoted"
            )
        elif isinstance(action, RollbackPromotion):
            current = await self.plane.snapshot()
            if current.rollout.mode == "disabled" and current.previous:
                await self.plane.rollback(
                    actor=who,
                    reason=f"rollback after promotion: {action.reason}",
                    cooldown_s=action.cooldown_s,
                )
                await self.plane.record_mode_switch(
                    actor=who, reason=action.reason, before="active", after="previous"
                )
                self.metrics.rollbacks.inc()
                self.metrics.mode_switches.inc()
            else:
                log.error("cannot roll back the promotion: no previous model or a rollout on")

    async def _persist(self, before: RolloutState, transition: Transition) -> None:
        new = transition.state
        audit = None
        if transition.changed:
            audit = (
                self.actor,
                f"rollout {new.rollout_id}: {transition.summary}",
                {"phase": before.phase.value, "step": before.step + 1},
                {"phase": new.phase.value, "step": new.step + 1, "weight": new.fraction},
            )
        ok = await self.plane.put_rollout_state(
            new.to_json(), expect_revision=self.revision, audit=audit
        )
        if not ok:
            log.info("rollout state changed under the controller (an operator): re-reading")
            return
        self.revision = (self.revision or 0) + 1
        self.state = new
        if transition.changed:
            self.metrics.transitions.labels(phase=new.phase.value).inc()
            log.warning("rollout %s: %s", new.rollout_id, transition.summary)
        if step_key(new) != self.tally.step_key:
            self.tally.new_step(step_key(new))

    def _export(self, st: RolloutState | None, now_ns: int) -> None:
        m = self.metrics
        m.phase.clear()
        for g in (m.check_value, m.check_threshold, m.check_samples, m.check_status):
            g.clear()
        if st is None:
            m.step.set(0)
            m.weight.set(0)
            m.time_in_step.set(0)
            return
        m.phase.labels(phase=st.phase.value).set(1)
        m.step.set(st.step + 1 if st.phase in (Phase.ANALYSING, Phase.PAUSED) else 0)
        m.weight.set(st.fraction)
        m.time_in_step.set(max(0.0, (now_ns - st.step_started_ns) / 1e9))
        for c in st.checks:
            m.check_status.labels(check=c.name).set(_STATUS_CODE[c.status])
            m.check_samples.labels(check=c.name).set(c.samples)
            if c.value is not None:
                m.check_value.labels(check=c.name).set(c.value)
            if c.threshold is not None:
                m.check_threshold.labels(check=c.name).set(c.threshold)

    def status(self, now_ns: int) -> dict[str, Any] | None:
        st = self.state
        if st is None:
            return None
        return {
            "rollout_id": st.rollout_id,
            "state": st.label(),
            "weight": st.fraction,
            "next_decision_s": time_to_decision_s(st, now_ns),
            "checks": [c.to_json() for c in st.checks],
            "reason": st.reason,
        }


def _changed_outside(state: RolloutState, snap: ControlSnapshot) -> str | None:
    """Why the ramp cannot go on, when someone else took the candidate out of rollout."""
    if state.phase not in (Phase.ANALYSING, Phase.PAUSED):
        return None
    r = snap.rollout
    if r.mode == "disabled" or r.candidate != state.candidate:
        return (
            f"rollout changed outside the plan (mode {r.mode}, candidate {r.candidate}): "
            "a guard or an operator took the candidate out"
        )
    return None


def new_rollout(candidate: str, plan: RolloutPlan, now_ns: int) -> RolloutState:
    """A PENDING rollout: the controller takes it from there at its next tick."""
    return RolloutState(
        rollout_id=uuid.uuid4().hex[:12],
        candidate=candidate,
        baseline=None,
        plan=plan,
        phase=Phase.PENDING,
        reason="started by operator",
        step_started_ns=now_ns,
        last_decision_ns=now_ns,
        updated_ns=now_ns,
    )
