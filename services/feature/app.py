"""Feature service: md.ticks -> md.bars + features.v1."""

from __future__ import annotations

from typing import Any

from feature.processor import FeatureMetrics, FeatureProcessor
from feature.settings import FeatureSettings
from geodesic.contracts.services import FEATURE
from geodesic.features.compute import WARMUP_BARS
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.service import LoopContext, Service


class FeatureService(Service[FeatureSettings]):
    spec = FEATURE
    settings_class = FeatureSettings

    def __init__(self, settings: FeatureSettings | None = None) -> None:
        super().__init__(settings)
        self.metrics = FeatureMetrics(self.registry)
        self._processor: FeatureProcessor | None = None

    def topics(self) -> list[str]:
        return [self.settings.in_topic]

    def processor(self, ctx: LoopContext) -> FeatureProcessor:
        s = self.settings
        self._processor = FeatureProcessor(
            bar_seconds=s.bar_seconds,
            price_source=s.price_source,
            bars_topic=s.bars_topic,
            features_topic=s.features_topic,
            idle_flush_grace_s=s.idle_flush_grace_s,
            checkpoints=CheckpointStore(ctx.redis, self.spec.name, s.redis_prefix),
            metrics=self.metrics,
            dead_letters=self.dead_letters,
            is_behind=ctx.behind,
        )
        return self._processor

    def info(self) -> dict[str, Any]:
        proc = self._processor
        if proc is None:
            return {}
        progress = proc.warmup()
        return {
            "schema_hash": proc.schema_hash,
            "bar_seconds": self.settings.bar_seconds,
            "bars": {str(tp): st.bars.stats_dict() for tp, st in proc.parts.items()},
            # Signals start once a symbol holds this many bars: say how far each one is.
            "warmup": {
                "bars_needed": WARMUP_BARS,
                "symbols_ready": sum(1 for n in progress.values() if n >= WARMUP_BARS),
                "symbols_warming": {s: n for s, n in sorted(progress.items()) if n < WARMUP_BARS},
            },
        }
