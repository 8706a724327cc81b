"""Property tests: no record on an internal topic can make feature, scorer, shadow or the
risk supervisor raise (a raise stops the stream loop, and on restart the same record would
stop it again). The scorer answers every record with one signal or one dead letter."""

from __future__ import annotations

import json
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from feature.processor import FeatureMetrics, FeatureProcessor
from geodesic.contracts import Bar, DeadLetter, FeatureVector, ScoredSignal, ShadowScore, Tick
from geodesic.control.state import ControlSnapshot
from geodesic.features import FEATURE_NAMES, SCHEMA_HASH
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import Output
from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams
from lorentzcore.scorer import Scorer
from risk_supervisor.processor import RiskMetrics, RiskProcessor
from scorer.processor import ScorerMetrics, ScorerProcessor
from shadow.processor import ShadowMetrics, ShadowProcessor

MODEL = "m-prop"
D = len(FEATURE_NAMES)
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

TICK = dict(
    v=1, venue="V", symbol="ES", seq=1, ts_ns=10**18, bid=99.0, ask=101.0, last=100.0, size=1.0
)
BAR = dict(
    v=1,
    symbol="ES",
    bar_index=7,
    bar_seconds=1,
    open=1.0,
    high=2.0,
    low=0.5,
    close=1.5,
    vwap=1.2,
    volume=3.0,
    n_ticks=4,
    mean_spread=0.01,
    open_ts_ns=1,
    close_ts_ns=2,
)
VECTOR = dict(
    v=1, symbol="ES", bar_index=7, ts_ns=2, close=1.5, values=[0.1] * D, schema_hash=SCHEMA_HASH
)
SIGNAL = dict(
    v=1,
    signal_id="s",
    symbol="ES",
    bar_index=7,
    ts_ns=2,
    prob_up=0.7,
    side="long",
    model_id=MODEL,
    route="active",
    eff_k=3.0,
    degrade_level=0,
    halted=False,
    tradable=True,
)

hostile_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, 1e308, -1e308, 1e-320, 10**30])
    | st.text(max_size=12)
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda kids: st.lists(kids, max_size=D + 2) | st.dictionaries(st.text(max_size=6), kids),
    max_leaves=20,
)


def mutated(base: dict) -> st.SearchStrategy[bytes]:
    """A valid document with one field replaced, removed or added: near misses are where
    validation and arithmetic disagree."""

    def build(field: str, value: object, how: str) -> bytes:
        doc = dict(base)
        if how == "drop":
            doc.pop(field, None)
        elif how == "extra":
            doc["unexpected"] = value
        else:
            doc[field] = value
        return json.dumps(doc).encode()  # NaN / Infinity are written as JSON extensions

    return st.builds(
        build,
        st.sampled_from(sorted(base)),
        hostile_values,
        st.sampled_from(["replace", "replace", "replace", "drop", "extra"]),
    )


garbage = st.none() | st.binary(max_size=200) | hostile_values.map(lambda v: json.dumps(v).encode())


def records(topic: str, values: list[bytes | None]) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(topic, 0, i, 0, 0, b"ES", v, None, 2, len(v or b""), ())
        for i, v in enumerate(values)
    ]


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the processors' hot path does no I/O)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("processor suspended: it did I/O on the hot path")


class Watcher:
    def __init__(self) -> None:
        self.snapshot = ControlSnapshot(active=MODEL, shadow=MODEL)

    def current(self) -> ControlSnapshot:
        return self.snapshot

    @property
    def last_snapshot(self) -> ControlSnapshot:
        return self.snapshot

    async def ensure_fresh(self) -> ControlSnapshot:
        return self.snapshot


class Models:
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def get(self, model_id: str | None) -> Scorer | None:
        return self.scorer if model_id == MODEL else None


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, D))
    y = (X[:, 0] > 0).astype(np.float32)
    directory = Path(tmp_path_factory.mktemp("prop")) / MODEL
    model = AnalogModel.fit(
        X,
        y,
        np.arange(400),
        directory=directory,
        model_id=MODEL,
        feature_names=FEATURE_NAMES,
        schema_hash=SCHEMA_HASH,
        kernel=KernelConfig(period=5.0),
        params=ScorerParams(k=8, k_cand=32),
    )
    return Models(Scorer(model))


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    logging.disable(logging.CRITICAL)  # every skipped record logs a warning
    yield
    logging.disable(logging.NOTSET)


def feature_processor() -> FeatureProcessor:
    return FeatureProcessor(
        bar_seconds=1,
        price_source="last",
        bars_topic="bars",
        features_topic="features",
        idle_flush_grace_s=0.0,
        checkpoints=None,
        metrics=FeatureMetrics(CollectorRegistry()),
        dead_letters=sink(),
    )


def sink() -> DeadLetterSink:
    return DeadLetterSink("pdlq", CollectorRegistry(), service="test")


def check_outputs(out: list[Output], source: str) -> None:
    """Every output parses as its topic's contract; dead letters name their source."""
    kinds = {"bars": Bar, "features": FeatureVector, "signals": ScoredSignal}
    for o in out:
        if o.topic == "pdlq":
            letter = DeadLetter.model_validate_json(o.value)
            assert letter.reason and letter.source_topic == source
        else:
            kinds[o.topic].model_validate_json(o.value)


@PROPERTY
@given(st.lists(garbage | mutated(TICK), min_size=1, max_size=12))
def test_feature_service_absorbs_any_md_ticks_record(values):
    proc = feature_processor()
    tp = TopicPartition("ticks", 0)
    out = drive(proc.process(tp, records("ticks", values)))
    valid = proc.metrics.ticks._value.get()
    # each record is parsed or dead-lettered, and only the unparsable ones are letters
    assert proc.dead_letters.by_reason.get("invalid_record", 0) + valid == len(values)
    out += drive(proc.on_idle(2**80))  # flush whatever bars absurd timestamps opened
    assert {o.topic for o in out} <= {"bars", "features", "pdlq"}
    check_outputs(out, "ticks")


extreme_ticks = st.builds(
    lambda seq, ts, bid, spread, last, size: Tick(
        venue="V", symbol="ES", seq=seq, ts_ns=ts, bid=bid, ask=bid + spread, last=last, size=size
    ).to_bytes(),
    st.integers(0, 2**70),
    st.integers(0, 2**70),
    st.floats(min_value=1e-300, max_value=1e300),
    st.floats(min_value=0, max_value=1e300),
    st.floats(min_value=1e-300, max_value=1e300),
    st.floats(min_value=0, max_value=1e308),
)


@PROPERTY
@given(st.lists(extreme_ticks, min_size=1, max_size=80))
def test_contract_valid_ticks_with_absurd_values_never_stop_the_feature_service(values):
    proc = feature_processor()
    tp = TopicPartition("ticks", 0)
    out = drive(proc.process(tp, records("ticks", values)))
    out += drive(proc.on_idle(2**80))
    assert proc.metrics.ticks._value.get() == len(values)  # all parse: none is an invalid record
    assert "invalid_record" not in proc.dead_letters.by_reason
    check_outputs(out, "ticks")


@PROPERTY
@given(st.lists(garbage | mutated(VECTOR), min_size=1, max_size=8))
def test_scorer_answers_every_features_record_with_one_signal_or_one_dead_letter(models, values):
    proc = ScorerProcessor(
        watcher=Watcher(),
        models=models,
        out_topic="signals",
        dead_letters=sink(),
        metrics=ScorerMetrics(CollectorRegistry()),
        recall_sample_rate=0.0,
    )
    out = drive(proc.process(TopicPartition("features", 0), records("features", values)))
    assert len(out) == len(values)
    for o, value in zip(out, values, strict=True):
        if o.topic == "pdlq":
            letter = DeadLetter.model_validate_json(o.value)
            assert letter.reason and letter.source_topic == "features"
        else:
            assert o.topic == "signals"
            ScoredSignal.model_validate_json(o.value)
            FeatureVector.model_validate_json(value or b"")  # only valid vectors are scored


@PROPERTY
@given(
    st.lists(garbage | mutated(VECTOR), max_size=6), st.lists(garbage | mutated(SIGNAL), max_size=6)
)
def test_shadow_absorbs_any_features_or_signals_record(models, vectors, signals):
    proc = ShadowProcessor(
        watcher=Watcher(),
        models=models,
        features_topic="features",
        live_topic="signals",  # type: ignore[arg-type]
        out_topic="shadow",
        metrics=ShadowMetrics(CollectorRegistry()),
        dead_letters=sink(),
    )
    out = drive(proc.process(TopicPartition("features", 0), records("features", vectors)))
    assert {o.topic for o in out} <= {"shadow", "pdlq"}
    for o in out:
        if o.topic == "shadow":
            ShadowScore.model_validate_json(o.value)
        else:
            assert DeadLetter.model_validate_json(o.value).source_topic == "features"
    letters = drive(proc.process(TopicPartition("signals", 0), records("signals", signals)))
    assert {o.topic for o in letters} <= {"pdlq"}  # live signals are joined, never re-emitted
    check_outputs(letters, "signals")
    assert proc.counts["errors"] == proc.dead_letters.count


@PROPERTY
@given(
    st.lists(garbage | mutated(SIGNAL), max_size=6),
    st.lists(garbage | mutated(BAR), max_size=6),
    st.lists(garbage | mutated(VECTOR), max_size=6),
)
def test_risk_supervisor_absorbs_any_record_and_counts_what_it_skips(
    tmp_path: Path, signals, bars, vectors
):
    proc = RiskProcessor(
        redis=None,
        prefix="p",
        checkpoints=None,
        signals_topic="signals",
        bars_topic="bars",  # type: ignore[arg-type]
        features_topic="features",
        outcomes_topic="outcomes",
        control_topic="control",
        horizon_bars=1,
        cost_bp=1.0,
        winrate_window=50,
        checkpoint_interval_s=0.0,
        guard=RolloutGuardConfig(),
        registry_root=tmp_path,
        drift_window=50,
        metrics=RiskMetrics(CollectorRegistry()),
        dead_letters=sink(),
    )
    for topic, values in (("signals", signals), ("bars", bars), ("features", vectors)):
        out = drive(proc.process(TopicPartition(topic, 0), records(topic, values)))
        assert {o.topic for o in out} <= {"outcomes", "pdlq"}
        assert all(
            DeadLetter.model_validate_json(o.value).source_topic == topic
            for o in out
            if o.topic == "pdlq"
        )
    c = proc.counts
    assert c["invalid"] == proc.dead_letters.count  # every skipped record is a dead letter
    assert c["signals"] + c["bars"] + c["features"] + c["invalid"] >= len(signals + bars + vectors)
