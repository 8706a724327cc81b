"""The supervisor's decision state: what it has seen, and what it decides to do about it.

Pure logic with an injected clock: the risk-supervisor service feeds outcomes, feature
vectors, bars and shadow parity counts in, calls `evaluate(snapshot, now)` on a timer and
executes the actions through the control plane. Everything here is testable without
Kafka or Redis, and every action carries the guard decision that caused it.

Policy:
- Canary worse than baseline (statistically, beyond winrate_delta) -> Rollback.
- Parity failures over the limit -> Rollback.
- Drift on the active model's features -> Rollback when there is something to roll back
  (a rollout in flight, or a previous model); otherwise the global state goes REDUCING
  (new entries stop, exits continue) until an operator clears it.
- Volatility halts per symbol: REDUCING past k x reference, HALTED past 2k.
- Precision of the active model under the floor -> global REDUCING.
- Nothing is rolled back during a cooldown; the guards keep reporting.
States only escalate automatically; de-escalation is an operator's decision.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from geodesic.contracts import Bar, FeatureVector, Outcome
from geodesic.control.state import ControlSnapshot, TradingState
from geodesic.risk.guards import (
    FeatureDrift,
    GuardDecision,
    RolloutGuardConfig,
    canary_vs_baseline,
    drift_decision,
    ks_alarm_level,
    parity_decision,
    precision_decision,
    psi_alarm_level,
    volatility_decision,
)
from geodesic.risk.winrate import RollingWinRate
from lorentzcore.metrics import IncrementalKS, IncrementalPSI

_ORDER = [TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED]


@dataclass(frozen=True)
class Rollback:
    reason: str
    decision: GuardDecision


@dataclass(frozen=True)
class SetTradingState:
    state: TradingState
    reason: str
    decision: GuardDecision
    symbol: str | None = None


Action = Rollback | SetTradingState


class DriftReferenceLike(Protocol):
    """What a drift monitor needs of lifecycle.drift.DriftReference (the risk package does
    not depend on the training lifecycle)."""

    @property
    def doc(self) -> Mapping[str, Any]: ...

    def incremental_psi(self, name: str, *, window: int | None = None) -> IncrementalPSI: ...

    def incremental_ks(self, name: str, *, window: int | None = None) -> IncrementalKS: ...


@dataclass
class DriftMonitor:
    """Windowed PSI/KS per feature against one model's drift reference."""

    model_id: str
    names: list[str]
    psi: dict[str, IncrementalPSI]
    ks: dict[str, IncrementalKS]
    ref_n: dict[str, int]
    bins: int
    lookback: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_reference(
        cls, model_id: str, ref: DriftReferenceLike, window: int = 500
    ) -> DriftMonitor:
        """Monitors for the model features of a lifecycle.drift.DriftReference."""
        doc = ref.doc
        names = list(doc["feature_names"])
        features = doc["features"]
        return cls(
            model_id=model_id,
            names=names,
            psi={n: ref.incremental_psi(n, window=window) for n in names},
            ks={n: ref.incremental_ks(n, window=window) for n in names},
            ref_n={n: int(features[n]["n"]) for n in names},
            lookback={n: int(features[n].get("lookback_bars", 1)) for n in names},
            bins=int(doc["psi_bins"]),
        )

    def update(self, values: list[float]) -> None:
        for name, v in zip(self.names, values, strict=False):
            if name in self.psi and math.isfinite(v):
                self.psi[name].update([v])
                self.ks[name].update([v])

    def drifts(self, cfg: RolloutGuardConfig) -> list[FeatureDrift]:
        out = []
        alpha = cfg.drift_alpha / max(len(self.psi), 1)  # Bonferroni over features
        for name, mon in self.psi.items():
            n = mon.count
            if n == 0:
                out.append(FeatureDrift(name, 0, math.nan, math.inf, math.nan, math.inf))
                continue
            m = self.ref_n[name]
            n_eff = max(1.0, n / max(1, self.lookback.get(name, 1)))
            out.append(
                FeatureDrift(
                    name,
                    n,
                    float(mon.value),
                    psi_alarm_level(n_eff, m, self.bins, alpha, cfg.psi_limit),
                    float(self.ks[name].value),
                    ks_alarm_level(n_eff, m, alpha, cfg.ks_limit),
                )
            )
        return out


@dataclass
class _SymbolVol:
    returns: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    last_close: float | None = None


class SupervisorState:
    def __init__(
        self, cfg: RolloutGuardConfig, *, winrate_window: int = 500, vol_window: int = 20
    ) -> None:
        self.cfg = cfg
        self.window = winrate_window
        self.vol_window = vol_window
        self.winrates: dict[tuple[str, str], RollingWinRate] = {}
        self.precision: dict[str, RollingWinRate] = {}
        self.drift: DriftMonitor | None = None
        self.vol: dict[str, _SymbolVol] = {}
        self.parity_failures_seen = 0
        self.parity_failures_at_last_rollout: int | None = None
        self.last_decisions: dict[str, GuardDecision] = {}
        self._rollout_key: tuple[str, str | None, str | None] | None = None

    # ---- inputs ---------------------------------------------------------------------
    def on_outcome(self, o: Outcome) -> None:
        if o.win is None:
            return
        key = (o.route, o.model_id)
        if key not in self.winrates:
            self.winrates[key] = RollingWinRate(self.window)
        self.winrates[key].add(o.win)
        if o.route == "active" and o.tradable:
            self.precision.setdefault(o.model_id, RollingWinRate(self.window)).add(o.win)

    def on_features(self, fv: FeatureVector) -> None:
        if self.drift is not None:
            self.drift.update(fv.values)

    def on_bar(self, bar: Bar) -> None:
        sv = self.vol.setdefault(bar.symbol, _SymbolVol())
        if sv.last_close is not None and sv.last_close > 0:
            sv.returns.append(math.log(bar.close / sv.last_close))
        sv.last_close = bar.close

    def on_parity_failures(self, total: int) -> None:
        self.parity_failures_seen = total

    def set_drift_monitor(self, monitor: DriftMonitor | None) -> None:
        self.drift = monitor

    # ---- decisions ------------------------------------------------------------------
    def winrate(self, route: str, model_id: str | None) -> RollingWinRate:
        return self.winrates.get((route, model_id or ""), RollingWinRate(self.window))

    def evaluate(
        self, snap: ControlSnapshot, now_ns: int, *, canary_judged_by_plan: bool = False
    ) -> list[Action]:
        """The guards' actions. With `canary_judged_by_plan`, a rollout plan's sequential
        test judges the canary's win rate (geodesic.rollout) and the fixed-level test here,
        which inflates false rollbacks when looked at every interval, stands aside."""
        cfg = self.cfg
        actions: list[Action] = []
        rollout_key = (snap.rollout.mode, snap.rollout.candidate, snap.active)
        if rollout_key != self._rollout_key:  # a new change in flight: parity restarts
            self._rollout_key = rollout_key
            self.parity_failures_at_last_rollout = self.parity_failures_seen
        in_flight = snap.rollout.mode != "disabled" and snap.rollout.candidate
        cooling = snap.cooldown_until_ns > now_ns

        base = self.winrate("active", snap.active).value()
        canary = self.winrate("canary", snap.rollout.candidate).value()
        if not in_flight:
            d_canary = GuardDecision("canary_winrate", "ok", "no canary in flight")
        elif canary_judged_by_plan:
            d_canary = GuardDecision("canary_winrate", "ok", "judged by the rollout plan")
        else:
            d_canary = canary_vs_baseline(base.wins, base.n, canary.wins, canary.n, cfg)
        d_parity = parity_decision(
            self.parity_failures_seen - (self.parity_failures_at_last_rollout or 0), cfg
        )
        d_drift = (
            drift_decision(self.drift.drifts(cfg), cfg)
            if self.drift is not None
            else GuardDecision("drift", "insufficient_data", "no drift reference for model")
        )
        prec = self.precision.get(snap.active or "", RollingWinRate(self.window)).value()
        d_prec = precision_decision(prec.wins, prec.n, cfg)
        for d in (d_canary, d_parity, d_drift, d_prec):
            self.last_decisions[d.guard] = d

        rollback_cause = next(
            (d for d in (d_canary, d_parity, d_drift) if d.verdict == "rollback"), None
        )
        if rollback_cause is not None and not cooling:
            if in_flight or snap.previous or rollback_cause.guard != "drift":
                actions.append(Rollback(rollback_cause.reason, rollback_cause))
            elif _more_restrictive(TradingState.REDUCING, snap.global_state):
                actions.append(
                    SetTradingState(TradingState.REDUCING, rollback_cause.reason, rollback_cause)
                )
        if d_prec.verdict == "reduce" and _more_restrictive(
            TradingState.REDUCING, snap.global_state
        ):
            actions.append(SetTradingState(TradingState.REDUCING, d_prec.reason, d_prec))
        for symbol, sv in sorted(self.vol.items()):
            d_vol = self._vol_decision(sv)
            self.last_decisions[f"volatility:{symbol}"] = d_vol
            target = {"reduce": TradingState.REDUCING, "halt": TradingState.HALTED}.get(
                d_vol.verdict
            )
            current = snap.symbol_states.get(symbol, TradingState.ACTIVE)
            if target is not None and _more_restrictive(target, current):
                actions.append(SetTradingState(target, d_vol.reason, d_vol, symbol=symbol))
        return actions

    def _vol_decision(self, sv: _SymbolVol) -> GuardDecision:
        rets = np.asarray(sv.returns, dtype=np.float64)
        k = self.vol_window
        if rets.size < max(4 * k, self.cfg.vol_min_bars):
            return GuardDecision("volatility", "insufficient_data", f"{rets.size} returns")
        recent = float(np.std(rets[-k:], ddof=1))
        reference = float(np.median(np.abs(rets[:-k]))) * 1.4826  # robust sigma of history
        return volatility_decision(recent, reference, k, self.cfg)


def _more_restrictive(target: TradingState, current: TradingState) -> bool:
    return _ORDER.index(target) > _ORDER.index(current)
