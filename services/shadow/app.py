"""Shadow service: features.v1 (+ signals.scored for the join) -> signals.shadow."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry

from geodesic.control import ControlSnapshot, ControlWatcher
from geodesic.control.keys import Keys
from geodesic.runtime.service import ServiceRunner
from geodesic.serving import ModelCache
from geodesic.serving.models import model_loader
from shadow.processor import ShadowMetrics, ShadowProcessor, stats_json
from shadow.settings import ShadowSettings

NAME = "shadow"


def build(settings: ShadowSettings | None = None) -> ServiceRunner:
    s = settings or ShadowSettings()
    registry = CollectorRegistry()
    metrics = ShadowMetrics(registry)
    models = ModelCache(s.registry_root, loader=model_loader(s.verify_models))
    parts: dict = {}
    stats_key = Keys(s.redis_prefix).service_state(NAME, "stats")

    def on_change(snap: ControlSnapshot) -> None:
        models.prefetch(snap.shadow)

    async def on_start(redis) -> None:  # noqa: ANN001
        watcher = ControlWatcher(
            redis,
            s.redis_prefix,
            poll_interval_s=s.control_poll_interval_s,
            staleness_s=s.control_staleness_s,
        )
        watcher.listeners.append(on_change)
        await watcher.start()
        parts["watcher"] = watcher
        parts["redis"] = redis
        snap = watcher.last_snapshot
        if snap is not None and snap.shadow:
            # a broken shadow model must not stop the service: it is reported and skipped
            with contextlib.suppress(Exception):
                await models.ensure(snap.shadow)

    async def write_stats(stats: dict) -> None:
        await parts["redis"].set(stats_key, stats_json(stats))

    def factory(_redis) -> ShadowProcessor:  # noqa: ANN001
        proc = ShadowProcessor(
            watcher=parts["watcher"],
            models=models,
            features_topic=s.features_topic,
            live_topic=s.live_topic,
            out_topic=s.out_topic,
            metrics=metrics,
            match_window=s.match_window,
            join_capacity=s.join_capacity,
            parity_tolerance=s.parity_tolerance,
            stats_writer=write_stats,
        )
        parts["proc"] = proc
        return proc

    async def on_stop() -> None:
        watcher = parts.get("watcher")
        if watcher is not None:
            await watcher.stop()

    def info() -> dict:
        proc = parts.get("proc")
        return {"models_loaded": models.loaded(), "stats": proc.stats() if proc else {}}

    return ServiceRunner(
        NAME,
        s,
        topics=[s.features_topic, s.live_topic],
        processor_factory=factory,
        registry=registry,
        info=info,
        on_start=on_start,
        on_stop=on_stop,
    )
