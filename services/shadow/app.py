"""Shadow service: features.v1 (+ signals.scored for the join) -> signals.shadow."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from geodesic.contracts.services import SHADOW
from geodesic.control.keys import Keys
from geodesic.runtime.service import LoopContext, Service
from geodesic.serving.follower import ModelFollower
from shadow.processor import ShadowMetrics, ShadowProcessor, stats_json
from shadow.settings import ShadowSettings

STATS = "stats"
assert STATS in SHADOW.state


class ShadowService(Service[ShadowSettings]):
    spec = SHADOW
    settings_class = ShadowSettings

    def __init__(self, settings: ShadowSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        self.metrics = ShadowMetrics(self.registry)
        self.follower = ModelFollower(
            s,
            staleness_s=s.control_staleness_s,
            warm=lambda snap: (snap.shadow,),
            serve=lambda snap: (snap.shadow,),
        )
        self._stats_key = Keys(s.redis_prefix).service_state(self.spec.name, STATS)
        self._processor: ShadowProcessor | None = None

    def topics(self) -> list[str]:
        return [self.settings.features_topic, self.settings.live_topic]

    async def start(self, ctx: LoopContext) -> None:
        await self.follower.start(ctx.redis)

    def processor(self, ctx: LoopContext) -> ShadowProcessor:
        s = self.settings
        redis: Redis = ctx.redis

        async def write_stats(stats: dict[str, Any]) -> None:
            await redis.set(self._stats_key, stats_json(stats))

        self._processor = ShadowProcessor(
            watcher=self.follower.watcher,
            models=self.follower.models,
            features_topic=s.features_topic,
            live_topic=s.live_topic,
            out_topic=s.out_topic,
            metrics=self.metrics,
            dead_letters=self.dead_letters,
            match_window=s.match_window,
            join_capacity=s.join_capacity,
            parity_tolerance=s.parity_tolerance,
            stats_writer=write_stats,
        )
        return self._processor

    async def stop(self) -> None:
        await self.follower.stop()

    def info(self) -> dict[str, Any]:
        proc = self._processor
        return {**self.follower.info(), "stats": proc.stats() if proc else {}}
