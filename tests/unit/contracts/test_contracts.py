import json

import pytest
from pydantic import ValidationError

from geodesic.contracts import MODELS, ScoredSignal, Tick, load_topics, make_signal_id
from geodesic.contracts.export import SCHEMA_DIR, render_schemas

GOOD_TICK = dict(venue="X", symbol="ES", seq=1, ts_ns=1, bid=99.0, ask=100.0, last=99.5, size=1)


def test_checked_in_schemas_match_models():
    rendered = render_schemas()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    assert set(on_disk) == set(rendered), "run: python -m geodesic.contracts.export"
    for name, text in rendered.items():
        assert json.loads(on_disk[name]) == json.loads(text), f"{name} is stale"


def test_tick_round_trips_through_json_bytes():
    tick = Tick(**GOOD_TICK)
    assert Tick.from_bytes(tick.to_bytes()) == tick


@pytest.mark.parametrize(
    ("patch", "error_type"),
    [
        ({"bid": float("nan")}, "finite_number"),
        ({"ask": float("inf")}, "finite_number"),
        ({"bid": -1.0}, "greater_than"),
        ({"last": 0.0}, "greater_than"),
        ({"bid": 101.0}, "value_error"),
        ({"extra": 1}, "extra_forbidden"),
        ({"seq": "one"}, "int_parsing"),
    ],
)
def test_tick_rejects_hostile_values_with_a_typed_error(patch, error_type):
    with pytest.raises(ValidationError) as info:
        Tick(**{**GOOD_TICK, **patch})
    assert error_type in {e["type"] for e in info.value.errors()}


def test_tick_rejects_missing_field():
    payload = {k: v for k, v in GOOD_TICK.items() if k != "bid"}
    with pytest.raises(ValidationError) as info:
        Tick(**payload)
    assert info.value.errors()[0]["type"] == "missing"


def test_models_are_frozen():
    tick = Tick(**GOOD_TICK)
    with pytest.raises(ValidationError):
        tick.bid = 1.0  # type: ignore[misc]


def test_signal_id_is_deterministic_and_distinguishes_inputs():
    a = make_signal_id("ES", 10, "m1")
    assert a == make_signal_id("ES", 10, "m1")
    assert len({a, make_signal_id("ES", 11, "m1"), make_signal_id("ES", 10, "m2")}) == 3


def test_scored_signal_bounds_prob_and_degrade_level():
    base = dict(
        signal_id="s",
        symbol="ES",
        bar_index=1,
        ts_ns=1,
        prob_up=0.5,
        side="flat",
        model_id="m",
        route="active",
        eff_k=3.0,
        degrade_level=0,
        halted=False,
        tradable=True,
    )
    ScoredSignal(**base)
    with pytest.raises(ValidationError):
        ScoredSignal(**{**base, "prob_up": 1.5})
    with pytest.raises(ValidationError):
        ScoredSignal(**{**base, "degrade_level": 4})
    with pytest.raises(ValidationError):
        ScoredSignal(**{**base, "route": "shadow"})


def test_topics_file_names_known_schemas_and_symbol_keyed_partitions():
    topics = load_topics()
    assert {"md.ticks.raw", "md.ticks", "md.ticks.dlq", "features.v1", "signals.scored"} <= set(
        topics
    )
    for spec in topics.values():
        assert spec.model is MODELS[spec.schema]
        assert spec.partitions >= 1
    assert topics["control.events"].partitions == 1
