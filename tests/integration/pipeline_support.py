"""Helpers for end-to-end tests: topic sets, a model in a registry, services, readers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from collector.app import CollectorService
from collector.settings import CollectorSettings
from feature.app import FeatureService
from feature.settings import FeatureSettings
from geodesic.control import ControlPlane
from geodesic.features import FEATURE_NAMES, SCHEMA_HASH
from geodesic.lifecycle.registry import sign_model
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.runtime.kafka import KafkaSettings, make_consumer
from geodesic.runtime.service import Service, ServiceRunner, ServiceSettings
from geodesic.stack.topics import TopicShape, delete_topics, ensure_topics
from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams
from risk_supervisor.app import RiskSupervisorService
from risk_supervisor.settings import RiskSettings
from scorer.app import ScorerService
from scorer.settings import ScorerSettings
from shadow.app import ShadowService
from shadow.settings import ShadowSettings

STALENESS_FOR_BEHAVIOUR_TESTS_MS = 30_000.0

TOPIC_KEYS = (
    "raw",
    "ticks",
    "dlq",
    "bars",
    "features",
    "signals",
    "shadow",
    "outcomes",
    "control",
    "pdlq",
)


@dataclass
class Topics:
    raw: str
    ticks: str
    dlq: str
    bars: str
    features: str
    signals: str
    shadow: str
    outcomes: str
    control: str
    pdlq: str

    @classmethod
    async def create(
        cls,
        kafka: KafkaSettings,
        partitions: int = 2,
        configs: tuple[tuple[str, str], ...] = (),
    ) -> Topics:
        tag = uuid.uuid4().hex[:8]
        names = {k: f"e2e.{tag}.{k}" for k in TOPIC_KEYS}
        shapes = [TopicShape(n, partitions, configs=configs) for n in names.values()]
        await ensure_topics(kafka, shapes)
        return cls(**names)

    async def delete(self, kafka: KafkaSettings) -> None:
        await delete_topics(kafka, list(self.__dict__.values()))


def fit_model(registry: Path, model_id: str, seed: int = 0, n: int = 3000) -> AnalogModel:
    """A small real AnalogModel whose schema matches the live feature service's."""
    rng = np.random.default_rng(seed)
    d = len(FEATURE_NAMES)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + 0.5 * rng.standard_normal(n) > 0).astype(np.float32)
    model = AnalogModel.fit(
        X,
        y,
        np.arange(n),
        directory=registry / model_id,
        model_id=model_id,
        feature_names=FEATURE_NAMES,
        schema_hash=SCHEMA_HASH,
        kernel=KernelConfig(period=5.0),
        params=ScorerParams(k=16, k_cand=64),
    )
    sign_model(model)  # the services verify signatures, like in production
    return model


@dataclass
class Pipeline:
    collector: ServiceRunner
    feature: ServiceRunner
    scorer: ServiceRunner
    shadow: ServiceRunner
    risk: ServiceRunner

    def all(self) -> list[ServiceRunner]:
        return [self.collector, self.feature, self.scorer, self.shadow, self.risk]


def runner_of(service: type[Service[Any]], settings: ServiceSettings) -> ServiceRunner:
    return ServiceRunner(service(settings))


def build_pipeline(
    topics: Topics,
    kafka: KafkaSettings,
    redis_url: str,
    prefix: str,
    registry: Path,
    *,
    bar_seconds: int = 1,
    grace_s: float = 0.3,
    guard: RolloutGuardConfig | None = None,
) -> Pipeline:
    common = dict(kafka=kafka, redis_url=redis_url, redis_prefix=prefix, http_port=0)
    group = f"g-{uuid.uuid4().hex[:6]}"
    return Pipeline(
        collector=runner_of(
            CollectorService,
            CollectorSettings(
                **common,
                group_id=f"{group}-collector",
                in_topic=topics.raw,
                out_topic=topics.ticks,
                dlq_topic=topics.dlq,
            ),
        ),
        feature=runner_of(
            FeatureService, feature_settings(topics, common, group, bar_seconds, grace_s)
        ),
        scorer=runner_of(
            ScorerService,
            ScorerSettings(
                **common,
                group_id=f"{group}-scorer",
                in_topic=topics.features,
                out_topic=topics.signals,
                dlq_topic=topics.pdlq,
                registry_root=registry,
                recall_eval_interval_s=0.5,
                recall_sample_rate=0.2,
                # these tests check other behaviour on a shared 2-core box: staleness has
                # its own tests (test_stale_signals.py) with the default bound
                max_signal_age_ms=STALENESS_FOR_BEHAVIOUR_TESTS_MS,
            ),
        ),
        shadow=runner_of(
            ShadowService,
            ShadowSettings(
                **common,
                group_id=f"{group}-shadow",
                features_topic=topics.features,
                live_topic=topics.signals,
                out_topic=topics.shadow,
                dlq_topic=topics.pdlq,
                registry_root=registry,
            ),
        ),
        risk=runner_of(
            RiskSupervisorService,
            RiskSettings(
                **common,
                group_id=f"{group}-risk",
                signals_topic=topics.signals,
                bars_topic=topics.bars,
                features_topic=topics.features,
                outcomes_topic=topics.outcomes,
                control_topic=topics.control,
                dlq_topic=topics.pdlq,
                registry_root=registry,
                checkpoint_interval_s=0.0,
                rollout_guard=guard or RolloutGuardConfig(),
            ),
        ),
    )


def feature_settings(
    topics: Topics, common: dict, group: str, bar_seconds: int, grace_s: float
) -> FeatureSettings:
    return FeatureSettings(
        **common,
        group_id=f"{group}-feature",
        in_topic=topics.ticks,
        bars_topic=topics.bars,
        features_topic=topics.features,
        dlq_topic=topics.pdlq,
        bar_seconds=bar_seconds,
        idle_flush_grace_s=grace_s,
    )


class TopicReader:
    """Collects every record of some topics in the background (its own consumer group)."""

    def __init__(self, kafka: KafkaSettings, *topics: str) -> None:
        self.consumer: AIOKafkaConsumer = make_consumer(
            kafka, topics=topics, group_id=f"reader-{uuid.uuid4().hex[:8]}"
        )
        self.records: dict[str, list] = {t: [] for t in topics}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=50)
            for tp, recs in batches.items():
                self.records[tp.topic].extend(recs)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self._task is not None and self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                counts = {t: len(r) for t, r in self.records.items()}
                raise TimeoutError(f"timed out waiting for {what}; have {counts}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


@contextlib.asynccontextmanager
async def running_pipeline(
    kafka: KafkaSettings,
    redis_url: str,
    redis_client: aioredis.Redis,
    prefix: str,
    registry: Path,
    *,
    model_id: str,
    seed: int,
    read: Callable[[Topics], tuple[str, ...]],
    topic_configs: tuple[tuple[str, str], ...] = (),
) -> AsyncIterator[tuple[Pipeline, Topics, TopicReader]]:
    """Fresh topics, a signed model active and in the shadow slot, the five services
    in-process and ready, and a reader on the topics ``read`` picks; all torn down after."""
    topics = await Topics.create(kafka, configs=topic_configs)
    fit_model(registry, model_id, seed=seed, n=1500)
    plane = ControlPlane(redis_client, prefix)
    await plane.promote(model_id, actor="test", reason="pipeline under test")
    await plane.set_slot("shadow", model_id, actor="test", reason="shadow")
    pipe = build_pipeline(topics, kafka, redis_url, prefix, registry)
    for svc in pipe.all():
        await svc.start()
    await asyncio.gather(*(svc.wait_ready(30) for svc in pipe.all()))
    reader = TopicReader(kafka, *read(topics))
    await reader.start()
    try:
        yield pipe, topics, reader
    finally:
        await reader.stop()
        for svc in pipe.all():
            await svc.stop()
        await topics.delete(kafka)
