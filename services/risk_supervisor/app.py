"""Risk supervisor service: signals.scored + md.bars -> outcomes.v1, win rates, audit."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.service import ServiceRunner
from risk_supervisor.processor import RiskMetrics, RiskProcessor
from risk_supervisor.settings import RiskSettings

NAME = "risk"


def build(settings: RiskSettings | None = None) -> ServiceRunner:
    s = settings or RiskSettings()
    registry = CollectorRegistry()
    metrics = RiskMetrics(registry)
    parts: dict = {}

    def factory(redis) -> RiskProcessor:  # noqa: ANN001
        proc = RiskProcessor(
            redis=redis,
            prefix=s.redis_prefix,
            checkpoints=CheckpointStore(redis, NAME, s.redis_prefix),
            signals_topic=s.signals_topic,
            bars_topic=s.bars_topic,
            features_topic=s.features_topic,
            outcomes_topic=s.outcomes_topic,
            control_topic=s.control_topic,
            horizon_bars=s.horizon_bars,
            cost_bp=s.cost_bp,
            winrate_window=s.winrate_window,
            checkpoint_interval_s=s.checkpoint_interval_s,
            guard=s.rollout_guard,
            registry_root=s.registry_root,
            drift_window=s.drift_window,
            metrics=metrics,
        )
        parts["proc"] = proc
        return proc

    def info() -> dict:
        proc = parts.get("proc")
        if proc is None:
            return {}
        return {"counts": dict(proc.counts), **proc.status()}

    return ServiceRunner(
        "risk-supervisor",
        s,
        topics=[s.signals_topic, s.bars_topic, s.features_topic],
        processor_factory=factory,
        registry=registry,
        info=info,
    )
