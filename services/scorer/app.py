"""Scorer service: features.v1 -> signals.scored, with models and rollout from Redis."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from geodesic.contracts.services import SCORER
from geodesic.control import ControlSnapshot
from geodesic.runtime.service import LoopContext, Service
from geodesic.serving.follower import ModelFollower
from scorer.processor import ScorerMetrics, ScorerProcessor
from scorer.settings import ScorerSettings

log = logging.getLogger(__name__)


class ScorerService(Service[ScorerSettings]):
    spec = SCORER
    settings_class = ScorerSettings

    def __init__(self, settings: ScorerSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        self.metrics = ScorerMetrics(self.registry)
        self.follower = ModelFollower(
            s,
            staleness_s=s.control_staleness_s,
            warm=lambda snap: (snap.active, snap.rollout.candidate, snap.previous),
            serve=lambda snap: (snap.active, snap.rollout.candidate),
            degrade_budget_ms=s.degrade_budget_ms,
        )
        self.follower.listeners.append(self._on_change)
        self._processor: ScorerProcessor | None = None
        self._tuner: asyncio.Task[None] | None = None

    def _on_change(self, snap: ControlSnapshot) -> None:
        self.metrics.kill_switch.set(1 if snap.kill_global else 0)
        self.metrics.model_active.clear()
        if snap.active:
            self.metrics.model_active.labels(model_id=snap.active).set(1)

    def topics(self) -> list[str]:
        return [self.settings.in_topic]

    async def start(self, ctx: LoopContext) -> None:
        await self.follower.start(ctx.redis)

    def processor(self, ctx: LoopContext) -> ScorerProcessor:
        s = self.settings
        proc = ScorerProcessor(
            watcher=self.follower.watcher,
            models=self.follower.models,
            out_topic=s.out_topic,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
            max_signal_age_ms=s.max_signal_age_ms,
            recall_sample_rate=s.recall_sample_rate,
        )
        self._processor = proc
        self._tuner = asyncio.get_running_loop().create_task(self._tune_forever(proc))
        return proc

    async def _tune_forever(self, proc: ScorerProcessor) -> None:
        while True:
            await asyncio.sleep(self.settings.recall_eval_interval_s)
            try:
                await asyncio.to_thread(proc.refresh_tuning)
            except Exception:  # the tuner must never take the scorer down
                log.exception("recall tuning failed")

    async def stop(self) -> None:
        if self._tuner is not None:
            self._tuner.cancel()
        await self.follower.stop()

    def ready(self) -> tuple[bool, str]:
        return self.follower.ready()

    def info(self) -> dict[str, Any]:
        proc = self._processor
        return {
            **self.follower.info(),
            "counts": dict(proc.counts) if proc else {},
            "max_signal_age_ms": self.settings.max_signal_age_ms,
        }
