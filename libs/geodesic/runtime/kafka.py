"""aiokafka clients configured once, for Apache Kafka and for the embedded Tansu fallback.

Every Kafka client in Geodesic is built here so each broker's measured behaviour is
handled in one place (figures and reproduction commands: docs/broker-notes.md).
``broker_flavor`` picks the timings: ``kafka`` (the default: the embedded broker when
Java 17 is present, and production) or ``tansu``.

Apache Kafka (kafka flavor):
- A waiting fetch is answered as soon as data arrives, so ``fetch_max_wait_ms`` stays at
  500 ms (idle consumers cost little) without adding latency.
- A lone member joins in well under a second whatever the session timeout; a rebalance
  (a member joining or leaving) takes one heartbeat interval, so heartbeats are 1 s
  (3 s costs 3 s per rebalance) with Kafka's usual 10 s session.
- Producers are idempotent (a retried send is not written twice).

Tansu (tansu flavor), workarounds that only it needs:
- It holds a JoinGroup reply for half the member's session timeout, so the session
  timeout decides how fast a member gets its partitions: 3 s (ready in ~2 s).
- It does not answer a waiting fetch as soon as data arrives, so every hop can cost up
  to ``fetch_max_wait_ms``: 10 ms (a few ms per hop for ~5 % of a core per idle consumer).
- Its ListOffsets(latest) answers the last batch's base offset + 1, so ``end_offsets()``
  can sit behind the newest records. :func:`true_end_offsets` and :func:`read_to_end`
  trust the fetch high watermark instead (right on both brokers).
- It refuses idempotent and transactional producers: ``acks="all"`` without idempotence,
  at-least-once delivery, consumers dedupe by event id.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BrokerFlavor = Literal["tansu", "kafka"]

#: Timings that depend on the broker; fields left unset take these per flavor.
FLAVOR_DEFAULTS: Mapping[BrokerFlavor, Mapping[str, int]] = {
    "tansu": {
        "session_timeout_ms": 3000,
        "heartbeat_interval_ms": 500,
        "rebalance_timeout_ms": 3000,
        "fetch_max_wait_ms": 10,
    },
    "kafka": {
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 1000,
        "rebalance_timeout_ms": 30000,
        "fetch_max_wait_ms": 500,
    },
}

_FORBIDDEN_PRODUCER_OVERRIDES = ("enable_idempotence", "transactional_id")


class KafkaSettings(BaseSettings):
    """Connection and tuning for every Kafka client; read from GEODESIC_KAFKA_* variables.

    Timing fields left unset get the defaults of ``broker_flavor`` (see FLAVOR_DEFAULTS),
    so switching to Apache Kafka is one variable: GEODESIC_KAFKA_BROKER_FLAVOR=kafka.
    """

    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_KAFKA_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    bootstrap: str = Field(default="127.0.0.1:9092", min_length=1)
    client_id: str = Field(default="geodesic", min_length=1)
    broker_flavor: BrokerFlavor = "kafka"

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: FilePath | None = None
    ssl_certfile: FilePath | None = None
    ssl_keyfile: FilePath | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    request_timeout_ms: int = Field(default=30000, gt=0)
    metadata_max_age_ms: int = Field(default=300000, gt=0)
    retry_backoff_ms: int = Field(default=100, gt=0)
    connections_max_idle_ms: int = Field(default=540000, gt=0)

    # Consumer. Defaults shown are the kafka flavor's; unset ones follow broker_flavor.
    session_timeout_ms: int = Field(default=FLAVOR_DEFAULTS["kafka"]["session_timeout_ms"], gt=0)
    heartbeat_interval_ms: int = Field(
        default=FLAVOR_DEFAULTS["kafka"]["heartbeat_interval_ms"], gt=0
    )
    rebalance_timeout_ms: int = Field(
        default=FLAVOR_DEFAULTS["kafka"]["rebalance_timeout_ms"], gt=0
    )
    fetch_max_wait_ms: int = Field(default=FLAVOR_DEFAULTS["kafka"]["fetch_max_wait_ms"], ge=0)
    fetch_min_bytes: int = Field(default=1, ge=1)
    max_poll_interval_ms: int = Field(default=300000, gt=0)
    max_poll_records: int | None = Field(default=None, ge=1)
    max_partition_fetch_bytes: int = Field(default=1024 * 1024, gt=0)
    auto_offset_reset: Literal["earliest", "latest", "none"] = "earliest"
    # Off: services commit after their outputs are acknowledged (at-least-once).
    enable_auto_commit: bool = False
    auto_commit_interval_ms: int = Field(default=1000, gt=0)

    # Exactly-once consume-process-produce (one transaction per batch): opt-in on Kafka
    # (docs/broker-notes.md: what it costs), impossible on Tansu (no transactions).
    exactly_once: bool = False
    transaction_timeout_ms: int = Field(default=10000, gt=0)

    # Producer (acks is always "all"; idempotent on Kafka, refused by Tansu).
    linger_ms: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=16384, gt=0)
    max_request_size: int = Field(default=1048576, gt=0)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _flavor_defaults(cls, data: Any) -> Any:
        """Fill timing fields the caller left unset from the broker flavor's table."""
        if not isinstance(data, dict):
            return data
        flavor = data.get("broker_flavor", "kafka")
        if flavor not in FLAVOR_DEFAULTS:
            return data  # the Literal check names the field
        return {**FLAVOR_DEFAULTS[flavor], **data}

    @model_validator(mode="after")
    def _check_consistency(self) -> KafkaSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"session_timeout_ms ({self.session_timeout_ms}); a third of it is usual"
            )
        if self.session_timeout_ms > self.request_timeout_ms:
            raise ValueError(
                f"session_timeout_ms ({self.session_timeout_ms}) must not exceed "
                f"request_timeout_ms ({self.request_timeout_ms})"
            )
        if self.security_protocol.startswith("SASL_"):
            missing = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"security_protocol={self.security_protocol} needs {', '.join(missing)}"
                )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be set together")
        if self.exactly_once and self.broker_flavor == "tansu":
            raise ValueError(
                "exactly_once needs transactions, which Tansu refuses: use Apache Kafka "
                "(broker_flavor=kafka) or leave exactly_once off (at-least-once)"
            )
        return self

    @property
    def transactional(self) -> bool:
        """Whether services run each batch as a transaction (GEODESIC_KAFKA_EXACTLY_ONCE)."""
        return self.exactly_once

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL / SASL_SSL (system CAs unless ssl_cafile is set)."""
        if not self.uses_tls:
            return None
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile,
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            password=self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        )
        context.check_hostname = self.ssl_check_hostname
        return context

    def with_bootstrap(self, bootstrap: str) -> KafkaSettings:
        """A copy pointing at another broker (e.g. the embedded one), same tuning."""
        return self.model_copy(update={"bootstrap": bootstrap})


def _resolve(settings: KafkaSettings | None) -> KafkaSettings:
    return settings if settings is not None else KafkaSettings()


def common_config(
    settings: KafkaSettings | None = None, *, client_id: str | None = None
) -> dict[str, Any]:
    """Connection options every aiokafka client accepts (bootstrap, auth, TLS, timeouts)."""
    s = _resolve(settings)
    config: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap,
        "client_id": client_id or s.client_id,
        "request_timeout_ms": s.request_timeout_ms,
        "metadata_max_age_ms": s.metadata_max_age_ms,
        "retry_backoff_ms": s.retry_backoff_ms,
        "connections_max_idle_ms": s.connections_max_idle_ms,
        "security_protocol": s.security_protocol,
    }
    context = s.ssl_context()
    if context is not None:
        config["ssl_context"] = context
    if s.security_protocol.startswith("SASL_"):
        assert s.sasl_password is not None  # checked by the settings validator
        config["sasl_mechanism"] = s.sasl_mechanism
        config["sasl_plain_username"] = s.sasl_username
        config["sasl_plain_password"] = s.sasl_password.get_secret_value()
    return config


def consumer_config(
    settings: KafkaSettings | None = None,
    *,
    group_id: str | None = None,
    client_id: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """AIOKafkaConsumer keyword arguments; ``overrides`` win over the tuned values."""
    s = _resolve(settings)
    config = common_config(s, client_id=client_id)
    config.update(
        group_id=group_id,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        rebalance_timeout_ms=s.rebalance_timeout_ms,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        fetch_min_bytes=s.fetch_min_bytes,
        max_poll_interval_ms=s.max_poll_interval_ms,
        max_poll_records=s.max_poll_records,
        max_partition_fetch_bytes=s.max_partition_fetch_bytes,
        auto_offset_reset=s.auto_offset_reset,
        enable_auto_commit=s.enable_auto_commit,
        auto_commit_interval_ms=s.auto_commit_interval_ms,
        # aborted transactions' records are never read (a no-op without transactions)
        isolation_level="read_committed" if s.broker_flavor == "kafka" else "read_uncommitted",
    )
    config.update(overrides)
    return config


def producer_config(
    settings: KafkaSettings | None = None, *, client_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """AIOKafkaProducer keyword arguments: acks=all; idempotent on Apache Kafka (a retried
    send is never written twice), never idempotent or transactional on Tansu."""
    s = _resolve(settings)
    bad = [k for k in _FORBIDDEN_PRODUCER_OVERRIDES if overrides.get(k)]
    if bad and s.broker_flavor == "tansu":
        raise ValueError(
            f"{', '.join(bad)} refused: Tansu rejects InitProducerId (idempotent and "
            "transactional producers); use Apache Kafka (broker_flavor=kafka) for them, on "
            "Tansu Geodesic is at-least-once with deduplicating consumers"
        )
    config = common_config(s, client_id=client_id)
    config.update(
        acks="all",
        enable_idempotence=s.broker_flavor == "kafka",
        linger_ms=s.linger_ms,
        max_batch_size=s.max_batch_size,
        max_request_size=s.max_request_size,
        compression_type=s.compression_type,
    )
    config.update(overrides)
    return config


def admin_config(
    settings: KafkaSettings | None = None, *, client_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """AIOKafkaAdminClient keyword arguments."""
    config = common_config(settings, client_id=client_id)
    config.update(overrides)
    return config


def make_consumer(
    settings: KafkaSettings | None = None,
    *,
    topics: Sequence[str] = (),
    group_id: str | None = None,
    client_id: str | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A tuned consumer (not started). Call inside a running event loop."""
    return AIOKafkaConsumer(
        *topics, **consumer_config(settings, group_id=group_id, client_id=client_id, **overrides)
    )


def make_producer(
    settings: KafkaSettings | None = None, *, client_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """A tuned producer (not started; idempotent on Kafka). Call inside a running loop."""
    return AIOKafkaProducer(**producer_config(settings, client_id=client_id, **overrides))


def make_admin(
    settings: KafkaSettings | None = None, *, client_id: str | None = None, **overrides: Any
) -> AIOKafkaAdminClient:
    """An admin client (not started)."""
    return AIOKafkaAdminClient(**admin_config(settings, client_id=client_id, **overrides))


async def wait_for_assignment(
    consumer: AIOKafkaConsumer, *, timeout_s: float = 10.0, min_partitions: int = 1
) -> set[TopicPartition]:
    """Wait until a group member owns partitions; produce only after this in tests.

    aiokafka's coordinator runs in the background, so no polling is needed meanwhile.
    """
    deadline = time.monotonic() + timeout_s
    while len(consumer.assignment()) < min_partitions:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no partition assignment within {timeout_s}s "
                f"(have {len(consumer.assignment())}, want {min_partitions})"
            )
        await asyncio.sleep(0.01)
    return set(consumer.assignment())


async def topic_partitions(
    settings: KafkaSettings | None, topics: Sequence[str], *, timeout_s: float = 10.0
) -> dict[str, set[int]]:
    """Partition ids of each of ``topics``, waiting up to ``timeout_s`` for all to show.

    Asks for every topic's metadata, never for one by name (a broker that auto-creates
    topics would create a typo), and not through ``consumer.partitions_for_topic()``: a
    consumer with no subscription keeps no metadata on Apache Kafka (its refresh asks for
    no topics), which Tansu hid by answering that request with every topic. Raises
    LookupError naming the topics still missing.
    """
    deadline = time.monotonic() + timeout_s
    admin = make_admin(settings, client_id=f"geodesic-partitions-{uuid.uuid4().hex[:6]}")
    await admin.start()
    try:
        while True:
            found = {
                entry["topic"]: {p["partition"] for p in entry["partitions"]}
                for entry in await admin.describe_topics(None)
                if entry.get("error_code") == 0 and entry.get("partitions")
            }
            missing = [t for t in topics if t not in found]
            if not missing:
                return {t: found[t] for t in topics}
            if time.monotonic() >= deadline:
                names = ", ".join(repr(t) for t in missing)
                verb = "does" if len(missing) == 1 else "do"
                raise LookupError(f"topic {names} {verb} not exist on the broker")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


def _scratch_consumer(settings: KafkaSettings | None, purpose: str) -> AIOKafkaConsumer:
    return make_consumer(
        settings,
        group_id=None,
        client_id=f"geodesic-{purpose}-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _await_highwaters(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], deadline: float
) -> None:
    pending = list(partitions)
    while any(consumer.highwater(tp) is None for tp in pending):
        if time.monotonic() > deadline:
            raise TimeoutError("no fetch response (high watermark) from the broker in time")
        await consumer.getmany(*pending, timeout_ms=50)


async def true_end_offsets(
    settings: KafkaSettings | None,
    partitions: Iterable[TopicPartition],
    *,
    timeout_s: float = 10.0,
) -> dict[TopicPartition, int]:
    """The offset after the newest record of each partition.

    Tansu's ListOffsets (what ``end_offsets()`` sends) stops at the last batch's base
    offset + 1; the high watermark in a fetch response is right. So: seek to the
    ListOffsets answer, fetch once, and take the high watermark.
    """
    tps = list(partitions)
    if not tps:
        return {}
    consumer = _scratch_consumer(settings, "end-offsets")
    await consumer.start()
    try:
        consumer.assign(tps)
        listed = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, listed[tp])
        await _await_highwaters(consumer, tps, time.monotonic() + timeout_s)
        return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()


async def read_to_end(
    settings: KafkaSettings | None,
    topic: str,
    *,
    start_offsets: Mapping[int, int] | None = None,
    timeout_s: float = 10.0,
) -> list[ConsumerRecord]:
    """Every record of ``topic`` present now (from the beginning or ``start_offsets``).

    Stops when each partition's position reaches the high watermark of a fetch response,
    never trusting ListOffsets (which can miss the tail of the last batch on Tansu).
    Records come back ordered by (partition, offset).
    """
    consumer = _scratch_consumer(settings, "read-to-end")
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions = (await topic_partitions(settings, [topic], timeout_s=timeout_s))[topic]
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        offsets = start_offsets or {}
        for tp in tps:
            if tp.partition in offsets:
                consumer.seek(tp, offsets[tp.partition])
        if len(offsets) < len(tps):
            await consumer.seek_to_beginning(*[tp for tp in tps if tp.partition not in offsets])
        pending = set(tps)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read_to_end({topic!r}) not done after {timeout_s}s")
            batches = await consumer.getmany(*pending, timeout_ms=50)
            for batch in batches.values():
                records.extend(batch)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def faust_settings(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """faust.App keyword arguments carrying the same tuning (faust wants seconds).

    faust hard-codes ``fetch_max_wait_ms=1500`` for worker consumers, which on Tansu adds
    up to 1.5 s per hop; prefer the aiokafka stream loop for latency-critical paths.
    """
    s = _resolve(settings)
    config: dict[str, Any] = {
        "broker": [f"kafka://{host.strip()}" for host in s.bootstrap.split(",") if host.strip()],
        "broker_client_id": s.client_id,
        "broker_session_timeout": s.session_timeout_ms / 1000,
        "broker_heartbeat_interval": s.heartbeat_interval_ms / 1000,
        "broker_rebalance_timeout": s.rebalance_timeout_ms / 1000,
        "broker_request_timeout": s.request_timeout_ms / 1000,
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        "producer_linger": s.linger_ms / 1000,
        "consumer_auto_offset_reset": s.auto_offset_reset,
    }
    if s.security_protocol != "PLAINTEXT":
        import faust  # heavy import, only when someone asks for faust credentials

        context = s.ssl_context()
        if s.security_protocol.startswith("SASL_"):
            assert s.sasl_password is not None
            config["broker_credentials"] = faust.SASLCredentials(
                username=s.sasl_username,
                password=s.sasl_password.get_secret_value(),
                mechanism=s.sasl_mechanism,
                ssl_context=context,
            )
        else:
            config["broker_credentials"] = faust.SSLCredentials(context)
    return config


__all__ = [
    "FLAVOR_DEFAULTS",
    "BrokerFlavor",
    "KafkaSettings",
    "admin_config",
    "common_config",
    "consumer_config",
    "faust_settings",
    "make_admin",
    "make_consumer",
    "make_producer",
    "producer_config",
    "read_to_end",
    "topic_partitions",
    "true_end_offsets",
    "wait_for_assignment",
]
