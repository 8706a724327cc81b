"""Shared fixtures: one embedded stack per session, fresh topics, groups and Redis keys.

The stack starts lazily (only when an integration test asks for it). Its broker is
embedded Apache Kafka when Java 17 and `make install`'s jars are present, else Tansu;
GEODESIC_EMBEDDED_BROKER=tansu|kafka forces one (CI runs the ``broker_compat`` subset on
Tansu that way). With GEODESIC_KAFKA_BOOTSTRAP / GEODESIC_REDIS_URL set it uses those
servers instead. While it
runs, both variables point at it, so services started in-process or as subprocesses
find it the same way they would in production.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from geodesic.runtime.kafka import KafkaSettings
from geodesic.stack import EmbeddedStack, StackInfo
from geodesic.stack.topics import TopicShape, delete_topics, ensure_topics

FreshTopic = Callable[..., Awaitable[str]]


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:limit] or "t"


@pytest.fixture(scope="session")
def run_root(pytestconfig: pytest.Config) -> Path:
    """Where test stacks keep logs and state: $GEODESIC_RUN_DIR or <repo>/run."""
    return Path(os.environ.get("GEODESIC_RUN_DIR") or pytestconfig.rootpath / "run")


@pytest.fixture(scope="session")
def embedded_stack(run_root: Path) -> Iterator[EmbeddedStack]:
    """The session's EmbeddedStack object (for its settings; do not restart it)."""
    stack = EmbeddedStack(run_root=run_root)
    info = stack.start()
    patch = pytest.MonkeyPatch()
    for name, value in info.env().items():
        patch.setenv(name, value)
    try:
        yield stack
    finally:
        patch.undo()
        stack.stop()


@pytest.fixture(scope="session")
def stack(embedded_stack: EmbeddedStack) -> StackInfo:
    """Addresses of the session's broker and Redis, with every topics.yaml topic created."""
    return embedded_stack.info


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: StackInfo) -> str:
    return stack.bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: StackInfo) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def kafka_settings(embedded_stack: EmbeddedStack) -> KafkaSettings:
    """Client settings for the session broker (tuned for its flavor; env for external)."""
    return embedded_stack.kafka_settings


@pytest.fixture
def private_stack(run_root: Path) -> Iterator[EmbeddedStack]:
    """A stack of this test's own, for fault injection (restarts) that must not disturb
    the shared one. Always embedded (on the session's broker kind), whatever
    GEODESIC_KAFKA_BOOTSTRAP / GEODESIC_REDIS_URL say."""
    stack = EmbeddedStack(run_root=run_root, use_env=False)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def fresh_topic(
    request: pytest.FixtureRequest, kafka_settings: KafkaSettings
) -> AsyncIterator[FreshTopic]:
    """Factory: ``name = await fresh_topic(partitions=1)`` makes a uniquely named topic,
    deleted after the test."""
    created: list[str] = []

    async def make(partitions: int = 1) -> str:
        name = f"test.{_slug(request.node.name)}.{uuid.uuid4().hex[:8]}"
        await ensure_topics(kafka_settings, [TopicShape(name, partitions)])
        created.append(name)
        return name

    yield make
    if created:
        await delete_topics(kafka_settings, created)


@pytest.fixture
def fresh_group(request: pytest.FixtureRequest) -> str:
    """A consumer group id no other test uses."""
    return f"test-{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own (pass it as the code under test's redis_prefix)."""
    return f"test:{_slug(request.node.name)}:{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """An async Redis client on the session server; keys under ``redis_prefix`` are
    deleted afterwards (nothing else is touched, so external servers are safe)."""
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
