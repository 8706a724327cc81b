"""Following the control plane with models kept warm: what scorer and shadow share.

Both services watch the Redis control plane (pushed changes plus polling, failing closed
when it goes stale) and load the models its slots name before traffic reaches them, so a
promotion or a canary start never scores its first events on a cold model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis

from geodesic.control import ControlSnapshot, ControlWatcher
from geodesic.serving.models import ModelCache, model_loader
from geodesic.serving.settings import ModelServingSettings

log = logging.getLogger(__name__)

SlotPicker = Callable[[ControlSnapshot], Iterable[str | None]]


class ModelFollower:
    """A ControlWatcher plus the ModelCache warmed for the slots ``warm`` picks.

    ``serve`` names the models to load (not only prefetch) at start, so the first batch
    finds them ready; a model that fails to load is reported by the cache and the signals
    that need it say ``model_unavailable``.
    """

    def __init__(
        self,
        settings: ModelServingSettings,
        *,
        staleness_s: float,
        warm: SlotPicker,
        serve: SlotPicker,
        degrade_budget_ms: float | None = None,
    ) -> None:
        self.settings = settings
        self.staleness_s = staleness_s
        self.models = ModelCache(
            settings.registry_root,
            loader=model_loader(settings.verify_models),
            degrade_budget_ms=degrade_budget_ms,
        )
        self._warm = warm
        self._serve = serve
        self.listeners: list[Callable[[ControlSnapshot], None]] = []
        self._watcher: ControlWatcher | None = None

    @property
    def watcher(self) -> ControlWatcher:
        if self._watcher is None:
            raise RuntimeError("ModelFollower.start() has not run")
        return self._watcher

    def _on_change(self, snap: ControlSnapshot) -> None:
        for model_id in self._warm(snap):
            self.models.prefetch(model_id)
        for listener in self.listeners:
            listener(snap)

    async def start(self, redis: aioredis.Redis) -> None:
        watcher = ControlWatcher(
            redis,
            self.settings.redis_prefix,
            poll_interval_s=self.settings.control_poll_interval_s,
            staleness_s=self.staleness_s,
        )
        watcher.listeners.append(self._on_change)
        await watcher.start()
        self._watcher = watcher
        snap = watcher.last_snapshot
        if snap is None:
            return
        self._on_change(snap)
        for model_id in self._serve(snap):
            if model_id:
                # a broken model must not stop the service: it is reported and skipped
                with contextlib.suppress(Exception):
                    await self.models.ensure(model_id)

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()

    def ready(self) -> tuple[bool, str]:
        if self._watcher is None or self._watcher.current() is None:
            return False, "control plane stale (failing closed)"
        return True, "ok"

    def info(self) -> dict[str, object]:
        snap = self._watcher.last_snapshot if self._watcher else None
        return {
            "models_loaded": self.models.loaded(),
            "control_version": snap.version if snap else None,
            "control_age_s": round(self._watcher.age_s, 3) if self._watcher else None,
        }
