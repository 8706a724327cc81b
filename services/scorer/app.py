"""Scorer service: features.v1 -> signals.scored, with models and rollout from Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry

from geodesic.control import ControlSnapshot, ControlWatcher
from geodesic.runtime.service import ServiceRunner
from geodesic.serving import ModelCache
from geodesic.serving.models import model_loader
from scorer.processor import ScorerMetrics, ScorerProcessor
from scorer.settings import ScorerSettings

NAME = "scorer"
log = logging.getLogger(__name__)


def build(settings: ScorerSettings | None = None) -> ServiceRunner:
    s = settings or ScorerSettings()
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    models = ModelCache(
        s.registry_root,
        loader=model_loader(s.verify_models),
        degrade_budget_ms=s.degrade_budget_ms,
    )
    parts: dict = {}

    def on_change(snap: ControlSnapshot) -> None:
        """Warm the models a snapshot names before traffic reaches them (hot reload)."""
        for model_id in (snap.active, snap.rollout.candidate, snap.previous):
            models.prefetch(model_id)
        metrics.kill_switch.set(1 if snap.kill_global else 0)
        metrics.model_active.clear()
        if snap.active:
            metrics.model_active.labels(model_id=snap.active).set(1)

    async def tune_forever(proc: ScorerProcessor) -> None:
        while True:
            await asyncio.sleep(s.recall_eval_interval_s)
            try:
                await asyncio.to_thread(proc.refresh_tuning)
            except Exception:  # the tuner must never take the scorer down
                log.exception("recall tuning failed")

    async def on_start(redis) -> None:  # noqa: ANN001 - redis.asyncio.Redis
        watcher = ControlWatcher(
            redis,
            s.redis_prefix,
            poll_interval_s=s.control_poll_interval_s,
            staleness_s=s.control_staleness_s,
        )
        watcher.listeners.append(on_change)
        await watcher.start()
        snap = watcher.last_snapshot
        if snap is not None:
            on_change(snap)
            for model_id in (snap.active, snap.rollout.candidate):
                if model_id:
                    with contextlib.suppress(Exception):
                        await models.ensure(model_id)
        parts["watcher"] = watcher

    def factory(_redis) -> ScorerProcessor:  # noqa: ANN001
        proc = ScorerProcessor(
            watcher=parts["watcher"],
            models=models,
            out_topic=s.out_topic,
            dlq_topic=s.dlq_topic,
            metrics=metrics,
            recall_sample_rate=s.recall_sample_rate,
        )
        parts["proc"] = proc
        parts["tuner"] = asyncio.get_running_loop().create_task(tune_forever(proc))
        return proc

    async def on_stop() -> None:
        task = parts.get("tuner")
        if task is not None:
            task.cancel()
        watcher = parts.get("watcher")
        if watcher is not None:
            await watcher.stop()

    def readiness() -> tuple[bool, str]:
        watcher = parts.get("watcher")
        if watcher is None or watcher.current() is None:
            return False, "control plane stale (failing closed)"
        return True, "ok"

    def info() -> dict:
        proc = parts.get("proc")
        watcher = parts.get("watcher")
        snap = watcher.last_snapshot if watcher else None
        return {
            "models_loaded": models.loaded(),
            "counts": dict(proc.counts) if proc else {},
            "control_version": snap.version if snap else None,
            "control_age_s": round(watcher.age_s, 3) if watcher else None,
        }

    return ServiceRunner(
        NAME,
        s,
        topics=[s.in_topic],
        processor_factory=factory,
        registry=registry,
        info=info,
        readiness=readiness,
        on_start=on_start,
        on_stop=on_stop,
    )
