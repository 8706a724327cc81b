"""Feature service: md.ticks -> md.bars + features.v1."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from feature.processor import FeatureMetrics, FeatureProcessor
from feature.settings import FeatureSettings
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.service import ServiceRunner

NAME = "feature"


def build(settings: FeatureSettings | None = None) -> ServiceRunner:
    s = settings or FeatureSettings()
    registry = CollectorRegistry()
    metrics = FeatureMetrics(registry)
    holder: dict[str, FeatureProcessor] = {}
    runner: ServiceRunner | None = None

    def is_behind(tp: TopicPartition) -> bool:
        return runner is not None and runner.loop is not None and runner.loop.behind(tp)

    def factory(redis):  # noqa: ANN001 - redis.asyncio.Redis
        proc = FeatureProcessor(
            bar_seconds=s.bar_seconds,
            price_source=s.price_source,
            bars_topic=s.bars_topic,
            features_topic=s.features_topic,
            idle_flush_grace_s=s.idle_flush_grace_s,
            checkpoints=CheckpointStore(redis, NAME, s.redis_prefix),
            metrics=metrics,
            is_behind=is_behind,
        )
        holder["p"] = proc
        return proc

    def info() -> dict:
        proc = holder.get("p")
        if proc is None:
            return {}
        return {
            "schema_hash": proc.schema_hash,
            "bar_seconds": s.bar_seconds,
            "invalid_input": proc.invalid,
            "bars": {str(tp): st.bars.stats_dict() for tp, st in proc.parts.items()},
        }

    runner = ServiceRunner(
        NAME, s, topics=[s.in_topic], processor_factory=factory, registry=registry, info=info
    )
    return runner
