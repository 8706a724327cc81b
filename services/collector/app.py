"""Collector service: md.ticks.raw -> md.ticks (+ md.ticks.dlq)."""

from __future__ import annotations

from typing import Any

from collector.processor import CollectorMetrics, CollectorProcessor
from collector.settings import CollectorSettings
from collector.validation import ValidationPolicy
from geodesic.contracts.services import COLLECTOR
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.service import LoopContext, Service


class CollectorService(Service[CollectorSettings]):
    spec = COLLECTOR
    settings_class = CollectorSettings

    def __init__(self, settings: CollectorSettings | None = None) -> None:
        super().__init__(settings)
        self.metrics = CollectorMetrics(self.registry)
        self._processor: CollectorProcessor | None = None

    def topics(self) -> list[str]:
        return [self.settings.in_topic]

    def processor(self, ctx: LoopContext) -> CollectorProcessor:
        s = self.settings
        self._processor = CollectorProcessor(
            policy=ValidationPolicy(
                max_bytes=s.max_bytes,
                max_future_ns=int(s.max_future_s * 1e9),
                max_age_ns=int(s.max_age_s * 1e9),
                allowed_symbols=s.allowed_symbols,
            ),
            out_topic=s.out_topic,
            dead_letters=self.dead_letters,
            checkpoints=CheckpointStore(ctx.redis, self.spec.name, s.redis_prefix),
            metrics=self.metrics,
            max_keys=s.max_keys,
            reset_gap=s.reset_gap,
            partitions_for=ctx.partitions_for if s.check_partition else None,
        )
        return self._processor

    def info(self) -> dict[str, Any]:
        proc = self._processor
        return {"counts": dict(proc.counts) if proc else {}}
