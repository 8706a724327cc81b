"""Hosting one service process: settings, Redis, Kafka clients, HTTP, the stream loop.

A service is a :class:`Service` subclass (its declaration, settings class and logic);
:class:`ServiceRunner` does the wiring the same way for all five, so each service's
app.py stays a page of its own logic. Starting is explicit (`await runner.start()`):
importing a service has no effects. ``python -m <service>`` is :func:`serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

import redis.asyncio as aioredis
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from geodesic.contracts.services import ServiceSpec
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.http import ServiceHttp
from geodesic.runtime.kafka import KafkaSettings, make_consumer, make_producer
from geodesic.runtime.pipeline import PartitionProcessor, StreamLoop

log = logging.getLogger(__name__)


class ServiceSettings(BaseSettings):
    """Settings every service shares; each service subclasses with its own env_prefix.

    Shared connection settings are read from the same variables for every service
    (GEODESIC_REDIS_URL, GEODESIC_KAFKA_*), whatever the service's own prefix.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_nested_delimiter="__")

    dlq_topic: str = Field(description="Where records this service cannot process go.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    redis_url: SecretStr = Field(  # may carry a password: never printed or logged
        default=SecretStr("redis://127.0.0.1:6379/0"),
        validation_alias=AliasChoices("GEODESIC_REDIS_URL", "redis_url"),
    )
    redis_prefix: str = Field(
        default="geodesic", validation_alias=AliasChoices("GEODESIC_REDIS_PREFIX", "redis_prefix")
    )
    redis_timeout_s: float = Field(
        default=2.0,
        gt=0,
        validation_alias=AliasChoices("GEODESIC_REDIS_TIMEOUT_S", "redis_timeout_s"),
        description="Connect/read timeout of every Redis call; with at most two quick "
        "retries, an unreachable Redis fails a call in well under a second instead of "
        "stalling the stream loop (redis-py's default retries take seconds).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    group_id: str = ""
    max_records: int = Field(default=500, ge=1)
    poll_timeout_ms: int = Field(default=100, ge=1)
    commit_interval_ms: int = Field(default=250, ge=0)
    log_level: str = Field(
        default="INFO", validation_alias=AliasChoices("GEODESIC_LOG_LEVEL", "log_level")
    )


def settings_config(spec: ServiceSpec) -> SettingsConfigDict:
    """A service's settings config: its declared prefix, frozen, nested with __."""
    return SettingsConfigDict(
        env_prefix=spec.env_prefix, frozen=True, extra="ignore", env_nested_delimiter="__"
    )


@dataclass(frozen=True)
class LoopContext:
    """What a service's logic may use of its host: the state store and the stream loop."""

    redis: aioredis.Redis
    #: True while a partition has records in the log not processed yet.
    behind: Callable[[TopicPartition], bool]
    #: Partition count of a topic as the broker reports it (None until known).
    partitions_for: Callable[[str], int | None]


S = TypeVar("S", bound=ServiceSettings)


class Service(ABC, Generic[S]):
    """One service: what the runner asks of it, in the order it asks.

    ``start`` (connect to what the service needs besides Kafka), ``processor`` (the
    stream logic, built once), then ``info`` / ``ready`` while it runs, ``stop`` last.
    """

    spec: ClassVar[ServiceSpec]
    settings_class: ClassVar[type[ServiceSettings]]

    def __init__(self, settings: S | None = None) -> None:
        # settings_class is the service's own S; a ClassVar cannot name the type variable
        self.settings: S = settings if settings is not None else cast(S, self.settings_class())
        self.registry = CollectorRegistry()
        self.dead_letters = DeadLetterSink(
            self.settings.dlq_topic, self.registry, service=self.spec.name
        )

    @abstractmethod
    def topics(self) -> list[str]:
        """The topics the stream loop subscribes to."""

    async def start(self, ctx: LoopContext) -> None:
        """Connect what the processor needs (control plane, models) before it is built."""

    @abstractmethod
    def processor(self, ctx: LoopContext) -> PartitionProcessor: ...

    def info(self) -> dict[str, Any]:
        return {}

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    async def stop(self) -> None:
        """Release what start() took."""


class ServiceRunner:
    """Starts and stops one service's moving parts in the right order."""

    def __init__(self, service: Service[Any]) -> None:
        self.service = service
        self.spec = service.spec
        self.name = service.spec.name
        self.settings: ServiceSettings = service.settings
        self.topics = service.topics()
        self.registry = service.registry
        self.redis: aioredis.Redis | None = None
        self.loop: StreamLoop | None = None
        self.http: ServiceHttp | None = None
        self._task: asyncio.Task[None] | None = None
        self.processor: PartitionProcessor | None = None

    def ready(self) -> tuple[bool, str]:
        if self.loop is not None and self.loop.stats.restoring:
            return False, "restoring partition state (state store unreachable?)"
        if self.loop is None or not self.loop.stats.ready:
            return False, "waiting for partition assignment"
        if self._task is not None and self._task.done():
            return False, "stream loop stopped"
        return self.service.ready()

    def info(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "service": self.name,
            "topics": self.topics,
            "group_id": self.group_id,
            "dead_letters": {
                "topic": self.service.dead_letters.topic,
                "count": self.service.dead_letters.count,
                "by_reason": dict(self.service.dead_letters.by_reason),
            },
        }
        if self.loop is not None:
            st = self.loop.stats
            base["loop"] = {
                "batches": st.batches,
                "records": st.records,
                "outputs": st.outputs,
                "last_batch_ns": st.last_batch_ns,
                "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in st.assigned),
                "lag": self.lag(),
                "state_store_errors": st.state_store_errors,
                "log_resets": st.log_resets,
                "transactional": self.loop.transactional,
                "transactions": st.transactions,
                "replayed": st.replayed,
            }
        base.update(self.service.info())
        return base

    def lag(self) -> dict[str, int]:
        """Records in the log not processed yet, per assigned partition (fetch high watermark
        minus position; a partition not fetched yet is left out)."""
        if self.loop is None:
            return {}
        out: dict[str, int] = {}
        for tp in self.loop.stats.assigned:
            highwater = self.loop.consumer.highwater(tp)
            position = self.loop.position(tp)
            if highwater is not None and position is not None:
                out[f"{tp.topic}:{tp.partition}"] = max(0, highwater - position)
        return out

    @property
    def group_id(self) -> str:
        return self.settings.group_id or self.spec.group_id

    def _behind(self, tp: TopicPartition) -> bool:
        return self.loop is not None and self.loop.behind(tp)

    def _partitions_for(self, topic: str) -> int | None:
        if self.loop is None:
            return None
        parts = self.loop.consumer.partitions_for_topic(topic)
        return len(parts) if parts else None

    async def start(self) -> int:
        s = self.settings
        self.redis = redis_client(s)
        ctx = LoopContext(self.redis, self._behind, self._partitions_for)
        await self.service.start(ctx)
        self.processor = self.service.processor(ctx)
        consumer = make_consumer(s.kafka, group_id=self.group_id, client_id=self.name)
        # Transactional on Kafka (exactly-once). The id is unique per process so copies
        # of a service never fence each other; a killed process's open transaction is
        # aborted by the broker after transaction_timeout_ms.
        txn = (
            {
                "transactional_id": f"{self.group_id}.{self.name}.{uuid.uuid4().hex[:12]}",
                "transaction_timeout_ms": s.kafka.transaction_timeout_ms,
            }
            if s.kafka.transactional
            else {}
        )
        producer = make_producer(s.kafka, client_id=self.name, **txn)
        await producer.start()
        await consumer.start()
        self.loop = StreamLoop(
            consumer,
            producer,
            self.processor,
            self.topics,
            max_records=s.max_records,
            poll_timeout_ms=s.poll_timeout_ms,
            commit_interval_ms=s.commit_interval_ms,
            dead_letters=self.service.dead_letters,
            transactional=s.kafka.transactional,
            group_id=self.group_id,
        )
        self.http = ServiceHttp(
            self.name, self.registry, self.info, self.ready, host=s.http_host, port=s.http_port
        )
        port = await self.http.start()
        self._task = asyncio.create_task(self.loop.run(), name=f"{self.name}-loop")
        log.info("%s started: http=%s:%s topics=%s", self.name, s.http_host, port, self.topics)
        return port

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.ready()[0]:
            if self._task is not None and self._task.done():
                self._task.result()
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.name} not ready: {self.ready()[1]}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.service.stop()
        if self.loop is not None:
            with contextlib.suppress(Exception):
                await self.loop.consumer.stop()
            with contextlib.suppress(Exception):
                await self.loop.producer.stop()
        if self.http is not None:
            await self.http.stop()
        if self.redis is not None:
            await self.redis.aclose()

    async def run_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then stop cleanly (outputs acked, offsets committed)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        print(f"{self.name} http_port={self.http.port if self.http else 0}", flush=True)
        waiter = asyncio.create_task(stop.wait())
        assert self._task is not None
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        try:
            if self._task in done:
                self._task.result()  # surface a crash of the loop
        finally:
            await self.stop()


def serve(service_class: type[Service[Any]]) -> None:
    """``python -m <service>``: settings from the environment, run until SIGTERM."""
    settings = load_settings(service_class.settings_class, service_class.spec.name)
    configure_logging(settings.log_level)
    asyncio.run(ServiceRunner(service_class(settings)).run_forever())


def redis_client(settings: ServiceSettings) -> aioredis.Redis:
    """The service's Redis client: bounded timeouts and retries (see redis_timeout_s)."""
    return aioredis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2),
    )


B = TypeVar("B", bound=BaseSettings)


def load_settings(cls: type[B], service: str) -> B:
    """Settings from the environment, or exit with status 2 and one line per problem.

    For ``python -m <service>``: an operator sees which variable is wrong instead of a
    traceback. Each line names the environment variable and the field; input values are
    never printed, since they may be secrets.
    """
    try:
        return cls()
    except ValidationError as exc:
        model: type[BaseSettings] = KafkaSettings if exc.title == KafkaSettings.__name__ else cls
        lines = [f"{service}: invalid configuration ({model.__name__}):"]
        for error in exc.errors(include_input=False, include_url=False):
            lines.append("  " + _describe_error(model, error["loc"], error["msg"]))
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def _describe_error(model: type[BaseSettings], loc: tuple[int | str, ...], msg: str) -> str:
    if not loc:
        return msg
    path = [str(part) for part in loc]
    if path[0].startswith("GEODESIC_"):  # a field read through an explicit env alias
        env = "__".join(path).upper()
        path[0] = next(
            (
                name
                for name, info in model.model_fields.items()
                if path[0] in getattr(info.validation_alias, "choices", ())
            ),
            path[0],
        )
    else:
        env = str(model.model_config.get("env_prefix", "")) + "__".join(path).upper()
    return f"{env} ({'.'.join(path)}): {msg}"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
