import numpy as np

from geodesic.contracts import Bar, FeatureVector, Outcome
from geodesic.control.state import ControlSnapshot, Rollout, TradingState
from geodesic.lifecycle.drift import DriftReference, drift_reference
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.risk.supervisor import DriftMonitor, Rollback, SetTradingState, SupervisorState

CFG = RolloutGuardConfig(min_samples=50, drift_min_window=200, precision_min_samples=50)
NAMES = ("a", "b", "c")


def outcome(route: str, model: str, win: bool, i: int) -> Outcome:
    return Outcome(
        signal_id=f"{route}{model}{i}",
        symbol="ES",
        bar_index=i,
        route=route,
        model_id=model,
        side="long",
        horizon_bars=1,
        entry_price=1.0,
        exit_price=1.0,
        gross_bp=0.0,
        net_bp=1.0 if win else -1.0,
        win=win,
    )


def canary_snapshot(**kw) -> ControlSnapshot:
    return ControlSnapshot(
        active="m1",
        previous="m0",
        rollout=Rollout(mode="canary", canary_fraction=0.2, candidate="m2"),
        **kw,
    )


def feed_winrates(state: SupervisorState, p_base: float, p_canary: float, n: int = 300):
    rng = np.random.default_rng(0)
    for i in range(n):
        state.on_outcome(outcome("active", "m1", bool(rng.random() < p_base), i))
        state.on_outcome(outcome("canary", "m2", bool(rng.random() < p_canary), i))


def test_worse_canary_is_rolled_back_but_not_during_a_cooldown():
    state = SupervisorState(CFG)
    feed_winrates(state, 0.6, 0.3)
    (action,) = state.evaluate(canary_snapshot(), now_ns=10)
    assert isinstance(action, Rollback) and action.decision.guard == "canary_winrate"
    assert state.evaluate(canary_snapshot(cooldown_until_ns=100), now_ns=10) == []


def test_no_action_on_insufficient_data_and_it_is_reported():
    state = SupervisorState(CFG)
    feed_winrates(state, 0.6, 0.3, n=20)
    assert state.evaluate(canary_snapshot(), now_ns=0) == []
    assert state.last_decisions["canary_winrate"].verdict == "insufficient_data"


def test_parity_failures_since_the_change_trigger_rollback():
    state = SupervisorState(CFG)
    state.on_parity_failures(3)
    assert state.evaluate(canary_snapshot(), now_ns=0) == []  # failures before: baseline
    state.on_parity_failures(4)
    (action,) = state.evaluate(canary_snapshot(), now_ns=0)
    assert isinstance(action, Rollback) and action.decision.guard == "parity"


def _monitor(rng) -> DriftMonitor:
    X = rng.standard_normal((5000, 3))
    ref = DriftReference(drift_reference(X, NAMES))
    return DriftMonitor.from_reference("m1", ref, window=400)


def _fv(values, i) -> FeatureVector:
    return FeatureVector(
        symbol="ES", bar_index=i, ts_ns=i, close=1.0, values=list(values), schema_hash="deadbeef00"
    )


def test_drift_rolls_back_when_there_is_a_previous_model_and_reduces_when_not():
    rng = np.random.default_rng(1)
    state = SupervisorState(CFG)
    state.set_drift_monitor(_monitor(rng))
    for i in range(400):
        state.on_features(_fv(rng.standard_normal(3) + 1.0, i))
    (action,) = state.evaluate(ControlSnapshot(active="m1", previous="m0"), now_ns=0)
    assert isinstance(action, Rollback) and action.decision.guard == "drift"
    (action,) = state.evaluate(ControlSnapshot(active="m1"), now_ns=0)
    assert isinstance(action, SetTradingState) and action.state is TradingState.REDUCING


def test_no_drift_on_matching_distribution():
    rng = np.random.default_rng(2)
    state = SupervisorState(CFG)
    state.set_drift_monitor(_monitor(rng))
    for i in range(400):
        state.on_features(_fv(rng.standard_normal(3), i))
    assert state.evaluate(ControlSnapshot(active="m1", previous="m0"), now_ns=0) == []
    assert state.last_decisions["drift"].verdict == "ok"


def test_volatility_spike_reduces_then_halts_the_symbol_only():
    rng = np.random.default_rng(3)
    state = SupervisorState(CFG, vol_window=20)
    price = 100.0
    for i in range(200):
        price *= np.exp(rng.normal(0, 0.001))
        state.on_bar(
            Bar(
                symbol="ES",
                bar_index=i,
                bar_seconds=1,
                open=price,
                high=price,
                low=price,
                close=price,
                vwap=price,
                volume=1,
                n_ticks=1,
                mean_spread=0.0,
                open_ts_ns=i,
                close_ts_ns=i,
            )
        )
    assert state.evaluate(ControlSnapshot(active="m1"), now_ns=0) == []
    for i in range(200, 220):
        price *= np.exp(rng.normal(0, 0.02))  # 20x the usual volatility
        state.on_bar(
            Bar(
                symbol="ES",
                bar_index=i,
                bar_seconds=1,
                open=price,
                high=price,
                low=price,
                close=price,
                vwap=price,
                volume=1,
                n_ticks=1,
                mean_spread=0.0,
                open_ts_ns=i,
                close_ts_ns=i,
            )
        )
    (action,) = state.evaluate(ControlSnapshot(active="m1"), now_ns=0)
    assert isinstance(action, SetTradingState)
    assert action.symbol == "ES" and action.state is TradingState.HALTED
    halted = ControlSnapshot(active="m1", symbol_states={"ES": TradingState.HALTED})
    assert state.evaluate(halted, now_ns=0) == []  # already there: no repeated event


def test_active_precision_under_floor_reduces_globally():
    state = SupervisorState(CFG)
    for i in range(100):
        state.on_outcome(outcome("active", "m1", i % 5 == 0, i))  # 20% precision
    (action,) = state.evaluate(ControlSnapshot(active="m1"), now_ns=0)
    assert isinstance(action, SetTradingState) and action.symbol is None
    assert action.decision.guard == "precision"
