"""Create the topics of geodesic.contracts topics.yaml and prove they have the right shape.

Both brokers auto-create an unknown topic with default settings on the first metadata
request (Tansu: 4 partitions, whatever the client), so topics must be ensured before any
service starts, and a topic that exists with the wrong partition count is an error (or,
for the memory-only embedded broker after a restart, is dropped and recreated).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from geodesic.runtime.kafka import KafkaSettings, make_admin

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


class TopicSetupError(RuntimeError):
    """A topic could not be created or exists with a different shape than declared."""


class TopicLike(Protocol):
    """What topic creation needs; geodesic.contracts.TopicSpec has it."""

    @property
    def name(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def replication_factor(self) -> int: ...
    @property
    def retention_ms(self) -> int: ...


@dataclass(frozen=True)
class TopicShape:
    """A topic outside topics.yaml (tests' and measurements' scratch topics)."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    retention_ms: int = 0
    #: further topic configs, e.g. (("max.message.bytes", "4194304"),)
    configs: tuple[tuple[str, str], ...] = ()


def _new_topic(spec: TopicLike) -> NewTopic:
    configs = dict(getattr(spec, "configs", ()))
    if spec.retention_ms:
        configs["retention.ms"] = str(spec.retention_ms)
    return NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=configs)


async def _start_admin(settings: KafkaSettings, deadline: float) -> AIOKafkaAdminClient:
    while True:
        admin = make_admin(settings, client_id="geodesic-topics")
        try:
            await admin.start()
            return admin
        except KafkaConnectionError:
            await admin.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _create(admin: AIOKafkaAdminClient, specs: list[TopicLike]) -> list[str]:
    if not specs:
        return []
    response = await admin.create_topics([_new_topic(s) for s in specs], timeout_ms=10000)
    created: list[str] = []
    for topic, code, *rest in response.topic_errors:
        if code == 0:
            created.append(topic)
        elif code != _TOPIC_ALREADY_EXISTS:
            message = rest[0] if rest else ""
            raise TopicSetupError(f"creating {topic!r} failed: error {code} {message}")
    return created


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count per topic with a leader for every partition (missing: absent)."""
    counts: dict[str, int] = {}
    for entry in await admin.describe_topics(names):
        partitions = entry.get("partitions") or []
        if entry.get("error_code") == 0 and all(p["leader"] >= 0 for p in partitions):
            counts[entry["topic"]] = len(partitions)
    return counts


async def ensure_topics(
    settings: KafkaSettings,
    specs: Iterable[TopicLike],
    *,
    timeout_s: float = 15.0,
    fix_mismatch: bool = False,
) -> list[str]:
    """Create missing topics, then wait until metadata shows each with its partitions.

    Returns the names this call created. ``fix_mismatch`` deletes and recreates a topic
    whose partition count differs (only sane for a disposable broker); otherwise such a
    topic raises TopicSetupError naming it.
    """
    wanted = {s.name: s for s in specs}
    deadline = time.monotonic() + timeout_s
    admin = await _start_admin(settings, deadline)
    try:
        created = await _create(admin, list(wanted.values()))
        fixes_left = 3
        while True:
            counts = await _partition_counts(admin, list(wanted))
            wrong = {n: c for n, c in counts.items() if c != wanted[n].partitions}
            if wrong and fix_mismatch and fixes_left > 0:
                fixes_left -= 1
                log.warning("recreating topics with the wrong partition count: %s", wrong)
                await admin.delete_topics(list(wrong), timeout_ms=10000)
                created += await _create(admin, [wanted[n] for n in wrong])
                continue
            if wrong:
                detail = ", ".join(
                    f"{n} has {c} partitions, topics.yaml says {wanted[n].partitions}"
                    for n, c in sorted(wrong.items())
                )
                raise TopicSetupError(detail)
            missing = sorted(set(wanted) - set(counts))
            if not missing:
                return created
            if time.monotonic() > deadline:
                raise TopicSetupError(f"topics missing from metadata after create: {missing}")
            await asyncio.sleep(0.05)
    except KafkaError as exc:
        raise TopicSetupError(f"topic setup on {settings.bootstrap} failed: {exc!r}") from exc
    finally:
        await admin.close()


async def delete_topics(settings: KafkaSettings, names: Iterable[str]) -> None:
    """Delete topics (tests' scratch topics); unknown names are ignored."""
    names = list(names)
    if not names:
        return
    admin = make_admin(settings, client_id="geodesic-topics")
    await admin.start()
    try:
        await admin.delete_topics(names, timeout_ms=10000)
    finally:
        await admin.close()
