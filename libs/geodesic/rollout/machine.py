"""The rollout state machine: pure, driven by check results and an injected clock (ns).

    PENDING --controller picks it up--> ANALYSING step 0
    ANALYSING step n --green_windows all-green windows, min_duration_s met--> step n+1
    ANALYSING last step --same--> PROMOTED (guard window) --red--> ROLLED_BACK
    ANALYSING --an `immediate` check red (at once), or failed_windows red windows--> ABORTED
    ANALYSING --inconclusive past min_duration_s + inconclusive_limit_s--> PAUSED
    PAUSED --operator resume--> ANALYSING (same step, its clock restarted)
    PAUSED keeps its weight and its abort rules: a paused canary that turns red is aborted.
    any live phase --operator abort, or the rollout changed outside the controller--> ABORTED

A check with too few samples is INCONCLUSIVE: it breaks a green streak and never counts
as green, so a candidate without traffic pauses instead of advancing.

Every function returns a new state and the actions that realise it; the controller
(geodesic.rollout.controller) persists the state, audits the transition and applies the
actions through the control plane.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from geodesic.rollout.plan import RolloutPlan
from geodesic.rollout.sequential import SequentialWinRate, WinRateEvidence


class Phase(StrEnum):
    PENDING = "PENDING"
    ANALYSING = "ANALYSING"
    PAUSED = "PAUSED"
    PROMOTED = "PROMOTED"
    ABORTED = "ABORTED"
    ROLLED_BACK = "ROLLED_BACK"


LIVE = frozenset({Phase.PENDING, Phase.ANALYSING, Phase.PAUSED})


class Status(StrEnum):
    GREEN = "green"
    RED = "red"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    value: float | None
    threshold: float | None
    samples: int
    needed: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "status": self.status.value}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CheckResult:
        return cls(**{**doc, "status": Status(doc["status"])})


@dataclass(frozen=True)
class Observations:
    """What the checks judge, counted since the step started (or since promotion).

    `candidate_*` is the candidate's route: canary during the ramp, active after
    promotion. `winrate` is cumulative over the whole ramp (the sequential test's data).
    """

    base_outcomes: int = 0
    candidate_outcomes: int = 0
    candidate_signals: int = 0
    candidate_errors: int = 0
    latencies_ms: tuple[float, ...] = ()
    shadow_match_rate: float | None = None
    shadow_samples: int = 0
    parity_failures: int = 0
    drift_verdict: str = "insufficient_data"
    drift_value: float | None = None
    drift_limit: float | None = None
    drift_samples: int = 0
    winrate: WinRateEvidence = field(default_factory=WinRateEvidence)


# ---- actions -------------------------------------------------------------------------
@dataclass(frozen=True)
class SetFraction:
    candidate: str
    fraction: float
    seed: int


@dataclass(frozen=True)
class AbortCanary:
    """Candidate back to 0%. Automatic aborts start the cooldown; an operator's does not."""

    reason: str
    cooldown_s: float | None


@dataclass(frozen=True)
class Promote:
    candidate: str


@dataclass(frozen=True)
class RollbackPromotion:
    reason: str
    cooldown_s: float


Action = SetFraction | AbortCanary | Promote | RollbackPromotion


@dataclass(frozen=True)
class RolloutState:
    rollout_id: str
    candidate: str
    baseline: str | None
    plan: RolloutPlan
    phase: Phase = Phase.PENDING
    step: int = 0
    step_started_ns: int = 0
    last_decision_ns: int = 0
    green_streak: int = 0
    red_streak: int = 0
    sequential: SequentialWinRate = field(default_factory=SequentialWinRate)
    guard_until_ns: int = 0
    #: the guard window after promotion passed without a breach (recorded once)
    guard_done: bool = False
    reason: str = "created"
    checks: tuple[CheckResult, ...] = ()
    updated_ns: int = 0

    @property
    def fraction(self) -> float:
        if self.phase == Phase.PROMOTED:
            return 1.0
        if self.phase in (Phase.ABORTED, Phase.ROLLED_BACK, Phase.PENDING):
            return 0.0
        return self.plan.steps[self.step].fraction

    def next_decision_ns(self) -> int:
        return self.last_decision_ns + int(self.plan.analysis_window_s * 1e9)

    def label(self) -> str:
        if self.phase in (Phase.ANALYSING, Phase.PAUSED):
            return f"STEP {self.step + 1}/{len(self.plan.steps)} {self.phase.value}"
        return self.phase.value

    def to_json(self) -> dict[str, Any]:
        ev = self.sequential.evidence
        return {
            "rollout_id": self.rollout_id,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "plan": self.plan.model_dump(mode="json"),
            "phase": self.phase.value,
            "step": self.step,
            "step_started_ns": self.step_started_ns,
            "last_decision_ns": self.last_decision_ns,
            "green_streak": self.green_streak,
            "red_streak": self.red_streak,
            "sequential": {
                "evidence": [ev.wins_base, ev.n_base, ev.wins_canary, ev.n_canary],
                "max_log_ratio": self.sequential.max_log_ratio,
            },
            "guard_until_ns": self.guard_until_ns,
            "guard_done": self.guard_done,
            "reason": self.reason,
            "checks": [c.to_json() for c in self.checks],
            "updated_ns": self.updated_ns,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RolloutState:
        seq = doc["sequential"]
        return cls(
            rollout_id=doc["rollout_id"],
            candidate=doc["candidate"],
            baseline=doc.get("baseline"),
            plan=RolloutPlan.model_validate(doc["plan"]),
            phase=Phase(doc["phase"]),
            step=int(doc["step"]),
            step_started_ns=int(doc["step_started_ns"]),
            last_decision_ns=int(doc["last_decision_ns"]),
            green_streak=int(doc["green_streak"]),
            red_streak=int(doc["red_streak"]),
            sequential=SequentialWinRate(
                WinRateEvidence(*(int(x) for x in seq["evidence"])), float(seq["max_log_ratio"])
            ),
            guard_until_ns=int(doc["guard_until_ns"]),
            guard_done=bool(doc.get("guard_done", False)),
            reason=doc["reason"],
            checks=tuple(CheckResult.from_json(c) for c in doc.get("checks", [])),
            updated_ns=int(doc.get("updated_ns", 0)),
        )


@dataclass(frozen=True)
class Transition:
    """A decision's outcome: the new state, what to do, and whether to audit it."""

    state: RolloutState
    actions: tuple[Action, ...] = ()
    changed: bool = False  # a phase or step change: audited and on control.events
    summary: str = ""


# ---- checks --------------------------------------------------------------------------
def p95(values: tuple[float, ...]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def judge(state: RolloutState, obs: Observations) -> tuple[list[CheckResult], SequentialWinRate]:
    """Every check of the plan on these observations, and the sequential test after one look.

    During the ramp, samples are counted on the canary route per step; after promotion on
    the active route since promotion (the guard window), with no baseline to compare.
    """
    plan = state.plan
    checks = plan.checks
    promoted = state.phase == Phase.PROMOTED
    need = plan.promotion.guard_min_samples if promoted else plan.steps[state.step].min_samples
    out: list[CheckResult] = []
    n_sig = obs.candidate_signals
    if checks.p95_latency_ms is not None:
        lat = p95(obs.latencies_ms)
        n_lat = len(obs.latencies_ms)
        out.append(
            _threshold(
                "p95_latency_ms", lat, checks.p95_latency_ms, n_lat, need, upper=True, unit="ms"
            )
        )
    if checks.max_error_rate is not None:
        rate = obs.candidate_errors / n_sig if n_sig else None
        out.append(_threshold("error_rate", rate, checks.max_error_rate, n_sig, need, upper=True))
    if checks.min_shadow_match_rate is not None:
        out.append(
            _threshold(
                "shadow_match_rate",
                obs.shadow_match_rate,
                checks.min_shadow_match_rate,
                obs.shadow_samples,
                checks.shadow_min_samples,
                upper=False,
            )
        )
    if checks.max_parity_failures is not None:
        lim = float(checks.max_parity_failures)
        if obs.parity_failures > checks.max_parity_failures:
            status = Status.RED
        else:
            status = Status.GREEN if n_sig >= need else Status.INCONCLUSIVE
        out.append(
            CheckResult(
                "parity_failures",
                status,
                float(obs.parity_failures),
                lim,
                n_sig,
                need,
                f"{obs.parity_failures} shadow parity failures (max {checks.max_parity_failures})",
            )
        )
    if checks.drift:
        status = {"rollback": Status.RED, "ok": Status.GREEN}.get(
            obs.drift_verdict, Status.INCONCLUSIVE
        )
        out.append(
            CheckResult(
                "drift",
                status,
                obs.drift_value,
                obs.drift_limit,
                obs.drift_samples,
                0,
                f"drift guard says {obs.drift_verdict}",
            )
        )
    seq = state.sequential
    wr = checks.winrate
    if wr is not None and not promoted and plan.steps[state.step].fraction < 1.0:
        seq = SequentialWinRate(obs.winrate, seq.max_log_ratio).look(wr.delta, wr.mixing_sd)
        out.append(_winrate(seq, obs, wr.alpha, wr.delta, need))
    elif wr is not None and not promoted:
        # at 100% the baseline route has no traffic: nothing to compare in this step; the
        # test's verdict so far (always valid) still stands
        seq = SequentialWinRate(obs.winrate, seq.max_log_ratio)
    return out, seq


def _threshold(
    name: str,
    value: float | None,
    limit: float,
    samples: int,
    needed: int,
    *,
    upper: bool,
    unit: str = "",
) -> CheckResult:
    op = "<=" if upper else ">="
    if value is None or samples < needed:
        shown = "n/a" if value is None else f"{value:.4g}{unit}"
        return CheckResult(
            name,
            Status.INCONCLUSIVE,
            value,
            limit,
            samples,
            needed,
            f"{samples} samples < {needed} needed (value {shown})",
        )
    ok = value <= limit if upper else value >= limit
    return CheckResult(
        name,
        Status.GREEN if ok else Status.RED,
        value,
        limit,
        samples,
        needed,
        f"{value:.4g}{unit} {op if ok else ('>' if upper else '<')} {limit:.4g}{unit}"
        f"{'' if ok else ' (breach)'}, n={samples}",
    )


def _winrate(
    seq: SequentialWinRate, obs: Observations, alpha: float, delta: float, needed: int
) -> CheckResult:
    ev = seq.evidence
    step_n = min(obs.base_outcomes, obs.candidate_outcomes)
    total_n = min(ev.n_base, ev.n_canary)
    diff = (
        ev.wins_base / ev.n_base - ev.wins_canary / ev.n_canary
        if ev.n_base and ev.n_canary
        else None
    )
    p = seq.p_value()
    shown = "n/a" if diff is None else f"{diff:+.3f}"
    base = f"baseline - canary = {shown} (margin {delta}), always-valid p = {p:.3g}"
    # the test is valid at any look, but its normal approximation needs some data
    if seq.rejects(alpha) and total_n >= needed:
        status, detail = Status.RED, f"{base} <= alpha {alpha}: canary worse (breach)"
    elif step_n < needed:
        status, detail = Status.INCONCLUSIVE, f"{step_n} outcomes per route < {needed}; {base}"
    else:
        status, detail = Status.GREEN, f"{base}: no evidence of harm, n={step_n}"
    return CheckResult("winrate", status, p, alpha, step_n, needed, detail)


# ---- transitions ---------------------------------------------------------------------
def start(state: RolloutState, now_ns: int) -> Transition:
    """PENDING -> step 1 at its fraction."""
    if state.phase != Phase.PENDING:
        return Transition(state)
    new = replace(
        state,
        phase=Phase.ANALYSING,
        step=0,
        step_started_ns=now_ns,
        last_decision_ns=now_ns,
        green_streak=0,
        red_streak=0,
        reason="ramp started",
        updated_ns=now_ns,
    )
    return Transition(
        new,
        (SetFraction(state.candidate, new.fraction, state.plan.seed),),
        True,
        f"{new.label()}: canary {state.candidate} at {new.fraction:.0%}",
    )


def decide(state: RolloutState, obs: Observations, now_ns: int) -> Transition:
    """One analysis window's decision. Before the window closes nothing changes, except
    that a red `immediate` check (a test already: win rate, drift, parity) acts at once."""
    if state.phase not in (Phase.ANALYSING, Phase.PAUSED, Phase.PROMOTED):
        return Transition(state)
    if state.phase == Phase.PROMOTED and now_ns >= state.guard_until_ns:
        if state.guard_done:
            return Transition(state)  # nothing more to judge
        done = replace(
            state, guard_done=True, reason="guard window passed: promotion final", updated_ns=now_ns
        )
        return Transition(
            done, (), True, f"PROMOTED {state.candidate}: guard window passed without a breach"
        )
    checks, seq = judge(state, obs)
    red = [c for c in checks if c.status == Status.RED]
    urgent = [c for c in red if c.name in state.plan.abort.immediate]
    if now_ns < state.next_decision_ns() and not urgent:
        return Transition(state)
    red_streak = state.red_streak + 1 if red else 0
    all_green = bool(checks) and all(c.status == Status.GREEN for c in checks)
    green_streak = state.green_streak + 1 if all_green else 0
    new = replace(
        state,
        sequential=seq,
        checks=tuple(checks),
        last_decision_ns=now_ns,
        red_streak=red_streak,
        green_streak=green_streak,
        updated_ns=now_ns,
    )
    plan = state.plan
    why_red = "; ".join(f"{c.name}: {c.detail}" for c in red)
    if state.phase == Phase.PROMOTED:
        if urgent or (red and red_streak >= plan.abort.failed_windows):
            done = replace(new, phase=Phase.ROLLED_BACK, reason=f"after promotion: {why_red}")
            return Transition(
                done,
                (RollbackPromotion(done.reason, plan.abort.cooldown_s),),
                True,
                f"ROLLED_BACK {state.candidate}: {why_red}",
            )
        return Transition(new)
    if urgent or (red and red_streak >= plan.abort.failed_windows):
        done = replace(new, phase=Phase.ABORTED, reason=f"{state.label()}: {why_red}")
        return Transition(
            done,
            (AbortCanary(done.reason, plan.abort.cooldown_s),),
            True,
            f"ABORTED {state.candidate} at {state.fraction:.0%}: {why_red}",
        )
    if state.phase == Phase.PAUSED:
        return Transition(new)
    step = plan.steps[state.step]
    in_step_s = (now_ns - state.step_started_ns) / 1e9
    if green_streak >= plan.green_windows and in_step_s >= step.min_duration_s:
        return _advance(new, now_ns)
    if not red and in_step_s >= step.min_duration_s + step.inconclusive_limit_s:
        waiting = [c for c in checks if c.status == Status.INCONCLUSIVE]
        why = "; ".join(f"{c.name}: {c.detail}" for c in waiting) or "no checks green"
        paused = replace(
            new, phase=Phase.PAUSED, reason=f"inconclusive for {in_step_s:.0f}s: {why}"
        )
        return Transition(
            paused,
            (),
            True,
            f"PAUSED at {state.fraction:.0%}: inconclusive past the step's limit ({why}); "
            "an operator decides: resume or abort",
        )
    return Transition(new)


def _advance(state: RolloutState, now_ns: int) -> Transition:
    plan = state.plan
    if state.step + 1 < len(plan.steps):
        nxt = replace(
            state,
            step=state.step + 1,
            step_started_ns=now_ns,
            green_streak=0,
            red_streak=0,
            reason=f"step {state.step + 1} green for {plan.green_windows} windows",
        )
        return Transition(
            nxt,
            (SetFraction(state.candidate, nxt.fraction, plan.seed),),
            True,
            f"{nxt.label()}: canary {state.candidate} at {nxt.fraction:.0%}",
        )
    if not plan.promotion.promote:
        paused = replace(state, phase=Phase.PAUSED, reason="last step green; plan does not promote")
        return Transition(paused, (), True, "PAUSED: last step green, promotion left to operator")
    promoted = replace(
        state,
        phase=Phase.PROMOTED,
        step_started_ns=now_ns,
        green_streak=0,
        red_streak=0,
        guard_until_ns=now_ns + int(plan.promotion.guard_window_s * 1e9),
        reason="every step green: promoted",
    )
    return Transition(
        promoted,
        (Promote(state.candidate),),
        True,
        f"PROMOTED {state.candidate} (previous {state.baseline} kept warm); guarding for "
        f"{plan.promotion.guard_window_s:.0f}s",
    )


def pause(state: RolloutState, now_ns: int, reason: str) -> Transition:
    if state.phase != Phase.ANALYSING:
        raise ValueError(f"cannot pause a rollout that is {state.label()}; only one analysing")
    new = replace(state, phase=Phase.PAUSED, reason=f"operator: {reason}", updated_ns=now_ns)
    return Transition(new, (), True, f"PAUSED at {state.fraction:.0%} by operator: {reason}")


def resume(state: RolloutState, now_ns: int, reason: str) -> Transition:
    """Back to the same step; its clock and streaks restart, its evidence is kept."""
    if state.phase != Phase.PAUSED:
        raise ValueError(f"cannot resume a rollout that is {state.label()}; only a paused one")
    new = replace(
        state,
        phase=Phase.ANALYSING,
        step_started_ns=now_ns,
        last_decision_ns=now_ns,
        green_streak=0,
        red_streak=0,
        reason=f"operator: {reason}",
        updated_ns=now_ns,
    )
    return Transition(new, (), True, f"{new.label()}: resumed by operator: {reason}")


def abort(state: RolloutState, now_ns: int, reason: str) -> Transition:
    """An operator's (or an outside change's) abort: no cooldown is started."""
    if state.phase not in LIVE:
        raise ValueError(f"cannot abort a rollout that is {state.label()}; it is already over")
    new = replace(state, phase=Phase.ABORTED, reason=reason, updated_ns=now_ns)
    return Transition(
        new, (AbortCanary(reason, None),), True, f"ABORTED {state.candidate}: {reason}"
    )


def time_to_decision_s(state: RolloutState, now_ns: int) -> float | None:
    """Seconds until the next analysis window closes (None when nothing is left to judge)."""
    if state.phase not in (Phase.ANALYSING, Phase.PAUSED) and not (
        state.phase == Phase.PROMOTED and now_ns < state.guard_until_ns
    ):
        return None
    return max(0.0, (state.next_decision_ns() - now_ns) / 1e9)
