"""Collector service: md.ticks.raw -> md.ticks (+ md.ticks.dlq)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from collector.processor import CollectorMetrics, CollectorProcessor
from collector.settings import CollectorSettings
from collector.validation import ValidationPolicy
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.service import ServiceRunner

NAME = "collector"


def build(settings: CollectorSettings | None = None) -> ServiceRunner:
    s = settings or CollectorSettings()
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry)
    policy = ValidationPolicy(
        max_bytes=s.max_bytes,
        max_future_ns=int(s.max_future_s * 1e9),
        max_age_ns=int(s.max_age_s * 1e9),
        allowed_symbols=s.allowed_symbols,
    )
    holder: dict[str, CollectorProcessor] = {}

    def factory(redis):  # noqa: ANN001 - redis.asyncio.Redis
        proc = CollectorProcessor(
            policy=policy,
            out_topic=s.out_topic,
            dlq_topic=s.dlq_topic,
            checkpoints=CheckpointStore(redis, NAME, s.redis_prefix),
            metrics=metrics,
            max_keys=s.max_keys,
            reset_gap=s.reset_gap,
        )
        holder["p"] = proc
        return proc

    def info() -> dict:
        proc = holder.get("p")
        return {"counts": dict(proc.counts) if proc else {}}

    return ServiceRunner(
        NAME, s, topics=[s.in_topic], processor_factory=factory, registry=registry, info=info
    )
