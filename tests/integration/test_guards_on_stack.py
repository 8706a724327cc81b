"""The risk supervisor's guards acting on the real stack: rollback, cooldown, audit, drift."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import numpy as np
import pytest
from pipeline_support import TopicReader, Topics, build_pipeline

from geodesic.contracts import ControlEvent
from geodesic.control import ControlPlane, Rollout
from geodesic.control.plane import CooldownActiveError
from geodesic.features import FEATURE_NAMES, SCHEMA_HASH, compute_features_batch
from geodesic.lifecycle.drift import DRIFT_FILE, drift_reference
from geodesic.lifecycle.registry import sign_model
from geodesic.marketdata import BarSeries, load_dataset
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, interleave, replay_ticks
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.runtime.kafka import make_producer
from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams

pytestmark = pytest.mark.integration
COST_BP = 1.0


def features_and_labels(series: BarSeries):
    close = np.asarray(series.close, dtype=np.float64)
    X = compute_features_batch(
        close,
        np.asarray(series.high, float),
        np.asarray(series.low, float),
        np.asarray(series.volume, float),
        close * 2.0 / 1e4,
    )
    fwd_bp = np.full(len(close), np.nan)
    fwd_bp[:-1] = (close[1:] / close[:-1] - 1.0) * 1e4
    ok = np.isfinite(X).all(axis=1) & np.isfinite(fwd_bp)
    return X[ok], (fwd_bp[ok] > COST_BP).astype(np.float32), np.flatnonzero(ok)


def fit(
    registry,
    model_id: str,
    parts: list[BarSeries],
    *,
    invert: bool = False,
    drift_from: list[BarSeries] | None = None,
) -> None:
    Xs, ys, ts = zip(*(features_and_labels(p) for p in parts), strict=True)
    X, y = np.vstack(Xs), np.concatenate(ys)
    if invert:
        y = 1.0 - y
    model = AnalogModel.fit(
        X,
        y,
        np.concatenate(ts),
        directory=registry / model_id,
        model_id=model_id,
        feature_names=FEATURE_NAMES,
        schema_hash=SCHEMA_HASH,
        kernel=KernelConfig(period=5.0, rbf_length_scale=0.1),
        params=ScorerParams(k=4, k_cand=64, long_threshold=0.55, short_threshold=0.45),
    )
    ref_X = np.vstack([features_and_labels(p)[0] for p in (drift_from or parts)])
    (registry / model_id / DRIFT_FILE).write_text(json.dumps(drift_reference(ref_X, FEATURE_NAMES)))
    sign_model(model)  # the drift reference is part of the signed artifact set


async def publish(kafka, topic, series_list, t0_ns: int, seq_start: int = 0) -> None:
    streams = [
        replay_ticks(
            s, ReplayConfig(seed=i, ticks_per_bar=(5, 7), seq_start=seq_start), t0_ns=t0_ns
        )
        for i, s in enumerate(series_list)
    ]
    producer = make_producer(kafka)
    await producer.start()
    try:
        futs = [
            await producer.send(topic, t.to_bytes(), key=t.symbol.encode())
            for t in interleave(*streams)
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return resp.read().decode()


async def metrics_text(port: int) -> str:
    """Fetched off the event loop: the service's HTTP server runs on this loop."""
    return await asyncio.to_thread(_metrics_text, port)


async def start(pipe):
    for svc in pipe.all():
        await svc.start()
    await asyncio.gather(*(svc.wait_ready(30) for svc in pipe.all()))


async def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_rollback_when_canary_underperforms_then_cooldown_blocks_promotion(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
):
    n = 160
    parts = [load_dataset(name).take(slice(3000, 3000 + n)) for name in ("sp500", "nasdaq")]
    registry = tmp_path / "registry"
    fit(registry, "m-good", parts)  # in-sample analogs: it knows these bars' futures
    fit(registry, "m-bad", parts, invert=True)  # the same analogs with every label flipped
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-good", actor="test", reason="baseline")
    await plane.set_rollout(
        Rollout(mode="canary", canary_fraction=0.5, seed=3, candidate="m-bad"),
        actor="test",
        reason="canary the candidate",
    )
    topics = await Topics.create(kafka_settings)
    guard = RolloutGuardConfig(
        min_samples=30, cooldown_s=600, eval_interval_s=0.2, drift_min_window=10_000
    )
    pipe = build_pipeline(topics, kafka_settings, redis_url, redis_prefix, registry, guard=guard)
    await start(pipe)
    reader = TopicReader(kafka_settings, topics.control)
    await reader.start()
    try:
        t0 = backfill_start_ns(time.time_ns(), 1, n + 10)
        await publish(kafka_settings, topics.raw, parts, t0)

        async def rolled_back() -> bool:
            return (await plane.snapshot()).rollout.mode == "disabled"

        await wait_until(rolled_back, 60, "automatic rollback")
        snap = await plane.snapshot()
        assert snap.active == "m-good"  # the baseline keeps serving
        assert snap.cooldown_until_ns > time.time_ns()
        with pytest.raises(CooldownActiveError):
            await plane.promote("m-bad", actor="operator", reason="try again too soon")
        audit = await plane.audit_log()
        kinds = [e["kind"] for e in audit]
        assert "ROLLBACK" in kinds and "MODE_SWITCH" in kinds
        rollback = next(e for e in audit if e["kind"] == "ROLLBACK")
        assert rollback["actor"] == "risk-supervisor"
        assert rollback["reason"].startswith("canary_winrate:")

        async def counted() -> bool:  # the counters follow the audited writes they count
            text = await metrics_text(pipe.risk.http.port)  # type: ignore[union-attr]
            return "rollback_total 1.0" in text and "mode_switch_total 1.0" in text

        await wait_until(counted, 10, "rollback_total and mode_switch_total at 1")
        text = await metrics_text(pipe.risk.http.port)  # type: ignore[union-attr]
        assert "winrate_canary" in text and "sample_canary" in text
        await reader.wait_for(
            lambda: any(
                ControlEvent.model_validate_json(r.value).kind == "ROLLBACK"
                for r in reader.records[topics.control]
            ),
            30,
            "ROLLBACK event",
        )
        # an operator can clear the cooldown; then promotion works again
        await plane.clear_cooldown(actor="operator", reason="reviewed")
        await plane.promote("m-bad", actor="operator", reason="forced after review")
    finally:
        await reader.stop()
        for svc in pipe.all():
            await svc.stop()
        await topics.delete(kafka_settings)


async def test_drift_over_the_psi_limit_rolls_back_to_the_previous_model(
    tmp_path, kafka_settings, redis_url, redis_client, redis_prefix
):
    calm, _ = generate_market(
        SyntheticConfig(n_bars=1500, seed=1, sigma=0.002, high_vol_mult=1.0, symbol="CALM")
    )
    wild, _ = generate_market(
        SyntheticConfig(n_bars=260, seed=2, sigma=0.03, high_vol_mult=1.0, symbol="WILD")
    )
    registry = tmp_path / "registry"
    fit(registry, "m-prev", [calm])
    fit(registry, "m-calm", [calm])  # trained, and drift-referenced, on a calm market
    plane = ControlPlane(redis_client, redis_prefix)
    await plane.promote("m-prev", actor="test", reason="first")
    await plane.promote("m-calm", actor="test", reason="second")
    topics = await Topics.create(kafka_settings)
    guard = RolloutGuardConfig(
        drift_min_window=100, eval_interval_s=0.2, min_samples=10_000, precision_min_samples=10_000
    )
    pipe = build_pipeline(topics, kafka_settings, redis_url, redis_prefix, registry, guard=guard)
    await start(pipe)
    try:
        await publish(kafka_settings, topics.raw, [wild], backfill_start_ns(time.time_ns(), 1, 270))

        async def reverted() -> bool:
            return (await plane.snapshot()).active == "m-prev"

        await wait_until(reverted, 90, "drift rollback")
        audit = await plane.audit_log()
        rollback = next(e for e in audit if e["kind"] == "ROLLBACK")
        assert rollback["reason"].startswith("drift:")
        text = await metrics_text(pipe.risk.http.port)  # type: ignore[union-attr]
        assert 'psi{feature="rvol_20"}' in text or 'psi{feature="pvol_20"}' in text
        status = pipe.risk.processor.status()  # type: ignore[union-attr]
        assert status["guards"]["drift"]["verdict"] in ("rollback", "ok")
    finally:
        for svc in pipe.all():
            await svc.stop()
        await topics.delete(kafka_settings)
