"""The trading rule: side, tradability and reasons, over every path."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from geodesic.contracts import ScoredSignal
from geodesic.contracts.reasons import BLOCKING_REASONS, INFORMATIONAL_REASONS, SignalReason
from geodesic.control.state import TradingState
from geodesic.serving.decision import decide, side_for

LONG, SHORT = 0.6, 0.4


def run(**overrides: object):
    args: dict[str, object] = dict(
        prob_up=0.7,
        abstain=False,
        long_threshold=LONG,
        short_threshold=SHORT,
        state=TradingState.ACTIVE,
        age_ms=10.0,
        max_age_ms=500.0,
    )
    args.update(overrides)
    return decide(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("prob", "side"), [(0.6, "long"), (0.4, "short"), (0.5, "flat")])
def test_side_follows_the_thresholds_inclusively(prob: float, side: str) -> None:
    assert side_for(prob, LONG, SHORT) == side


def test_a_fresh_confident_signal_on_an_active_symbol_is_tradable_with_no_reason() -> None:
    d = run()
    assert (d.side, d.tradable, d.halted, d.reasons) == ("long", True, False, ())


def test_an_abstention_is_flat_and_not_tradable() -> None:
    d = run(abstain=True)
    assert d.side == "flat" and not d.tradable and d.reasons == (SignalReason.ABSTAIN,)


@pytest.mark.parametrize("age", [500.1, 19_000.0, None])
def test_input_older_than_the_bound_or_of_unknown_age_is_stale_and_not_tradable(
    age: float | None,
) -> None:
    d = run(age_ms=age)
    assert not d.tradable and SignalReason.STALE_INPUT in d.reasons and not d.halted


def test_without_a_bound_age_is_not_checked() -> None:
    assert run(age_ms=None, max_age_ms=None).tradable


def test_halted_and_stale_control_plane_block_and_say_halted() -> None:
    halted = run(state=TradingState.HALTED)
    stale = run(state=None)
    assert not halted.tradable and halted.halted and halted.reasons == (SignalReason.HALTED,)
    assert not stale.tradable and stale.halted
    assert stale.reasons == (SignalReason.CONTROL_PLANE_STALE,)


def test_reducing_blocks_entries_but_lets_exits_through() -> None:
    entry = run(state=TradingState.REDUCING)
    exit_ = run(state=TradingState.REDUCING, prob_up=0.5)
    assert not entry.tradable and entry.reasons == (SignalReason.REDUCING_BLOCKS_ENTRY,)
    assert exit_.tradable and exit_.side == "flat"


def test_degraded_scoring_is_said_but_does_not_block() -> None:
    d = run(degrade_level=2)
    assert d.tradable and d.reasons == (SignalReason.DEGRADED,)


def test_every_reason_is_either_blocking_or_informational() -> None:
    assert set(SignalReason) == BLOCKING_REASONS | INFORMATIONAL_REASONS
    assert not BLOCKING_REASONS & INFORMATIONAL_REASONS


@pytest.mark.parametrize(
    ("state", "abstain", "age", "extra", "level"),
    itertools.product(
        [None, *TradingState],
        [False, True],
        [10.0, 900.0, None],
        [(), (SignalReason.MODEL_UNAVAILABLE,), (SignalReason.SCHEMA_MISMATCH,)],
        [0, 1],
    ),
)
def test_over_every_path_tradable_means_no_blocking_reason_and_the_contract_agrees(
    state: TradingState | None,
    abstain: bool,
    age: float | None,
    extra: tuple[SignalReason, ...],
    level: int,
) -> None:
    d = run(state=state, abstain=abstain, age_ms=age, extra_reasons=extra, degrade_level=level)
    assert d.tradable == (not BLOCKING_REASONS.intersection(d.reasons))
    assert not (d.tradable and d.halted)
    ScoredSignal(  # what the scorer publishes validates for every decision
        signal_id="s",
        symbol="ES",
        bar_index=1,
        ts_ns=1,
        prob_up=0.7,
        side=d.side,
        model_id="m",
        route="active",
        eff_k=1.0,
        degrade_level=level,
        halted=d.halted,
        tradable=d.tradable,
        reasons=list(d.reasons),
    )


def test_the_contract_refuses_a_tradable_signal_with_a_blocking_reason() -> None:
    with pytest.raises(ValidationError, match="no blocking reason"):
        ScoredSignal(
            signal_id="s",
            symbol="ES",
            bar_index=1,
            ts_ns=1,
            prob_up=0.5,
            side="flat",
            model_id="m",
            route="active",
            eff_k=1.0,
            degrade_level=0,
            halted=False,
            tradable=True,
            reasons=["abstain"],
        )
