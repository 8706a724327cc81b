import pytest
from hypothesis import given
from hypothesis import strategies as st

from geodesic.control import ControlSnapshot, Rollout, TradingState, route_for


def test_canary_routing_is_deterministic_and_matches_fraction():
    picks = [route_for(7, "ES", i, 0.1) for i in range(20_000)]
    assert picks == [route_for(7, "ES", i, 0.1) for i in range(20_000)]
    share = sum(picks) / len(picks)
    assert 0.09 < share < 0.11  # binomial sd ~0.002


def test_canary_routing_depends_on_seed():
    a = [route_for(1, "ES", i, 0.5) for i in range(1000)]
    b = [route_for(2, "ES", i, 0.5) for i in range(1000)]
    assert a != b


@given(st.integers(0, 2**31), st.text(min_size=1, max_size=8), st.integers(0, 10**9))
def test_canary_routing_edges(seed, symbol, bar):
    assert route_for(seed, symbol, bar, 0.0) is False
    assert route_for(seed, symbol, bar, 1.0) is True


def test_rollout_validation_names_the_field():
    with pytest.raises(ValueError, match="canary_fraction"):
        Rollout(mode="canary", canary_fraction=1.5, candidate="m2")
    with pytest.raises(ValueError, match="candidate"):
        Rollout(mode="canary", canary_fraction=0.1)
    with pytest.raises(ValueError, match="mode"):
        Rollout(mode="sometimes", candidate="m2")  # type: ignore[arg-type]


def test_route_uses_candidate_only_inside_the_canary_fraction():
    snap = ControlSnapshot(
        active="m1", rollout=Rollout(mode="canary", canary_fraction=0.25, seed=3, candidate="m2")
    )
    routes = [snap.route("ES", i) for i in range(4000)]
    canary = [r for r in routes if r[1] == "canary"]
    assert all(m == "m2" for m, _ in canary)
    assert all(m == "m1" for m, r in routes if r == "active")
    assert 0.2 < len(canary) / len(routes) < 0.3
    full = ControlSnapshot(active="m1", rollout=Rollout(mode="full", candidate="m2"))
    assert full.route("ES", 1) == ("m2", "canary")
    assert ControlSnapshot(active="m1").route("ES", 1) == ("m1", "active")


def test_trading_state_takes_the_most_restrictive_of_kill_halt_and_symbol_state():
    snap = ControlSnapshot(symbol_states={"ES": TradingState.REDUCING})
    assert snap.trading_state("ES") is TradingState.REDUCING
    assert snap.trading_state("NQ") is TradingState.ACTIVE
    halted = ControlSnapshot(global_state=TradingState.HALTED)
    assert halted.trading_state("NQ") is TradingState.HALTED
    killed = ControlSnapshot(kill_symbols=frozenset({"NQ"}))
    assert killed.trading_state("NQ") is TradingState.HALTED
    assert killed.trading_state("ES") is TradingState.ACTIVE
    assert ControlSnapshot(kill_global=True).trading_state("ES") is TradingState.HALTED
