"""The embedded launcher: servers answer, topics match topics.yaml, nothing is orphaned."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from geodesic.contracts import load_topics
from geodesic.runtime.kafka import KafkaSettings, make_admin, make_producer, read_to_end
from geodesic.stack import EmbeddedStack, StackInfo, embedded, find_running_stacks, stop_from_state
from geodesic.stack.embedded import state_is_running
from geodesic.stack.kafka_broker import KafkaBrokerConfig
from geodesic.stack.processes import free_port, is_alive, port_is_free
from geodesic.stack.topics import TopicShape, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.broker_compat]

#: A line each broker logs once it serves clients.
_READY_LINE = {"tansu": "listening on", "kafka": "Kafka Server started"}


def _wait_dead(pids: list[int], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(is_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _run_owner(run_root: Path, *, detach: bool) -> tuple[subprocess.Popen, dict]:
    """Start a stack in another Python process; return it with the stack's state."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from geodesic.stack import EmbeddedStack
        info = EmbeddedStack(run_root=Path({str(run_root)!r}), use_env=False,
                             detach={detach!r}, topics={{}}).start()
        print(info.state_file, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    state_file = Path(owner.stdout.readline().strip())
    return owner, json.loads(state_file.read_text()) | {"_path": str(state_file)}


async def test_session_stack_has_every_declared_topic_with_its_partitions(
    stack: StackInfo, kafka_settings: KafkaSettings
):
    admin = make_admin(kafka_settings)
    await admin.start()
    try:
        described = await admin.describe_topics(list(load_topics()))
    finally:
        await admin.close()
    got = {entry["topic"]: len(entry["partitions"]) for entry in described}
    assert got == {name: spec.partitions for name, spec in load_topics().items()}
    assert got["control.events"] == 1


async def test_session_stack_redis_answers_and_env_points_at_the_stack(stack: StackInfo):
    client = aioredis.from_url(stack.redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    assert os.environ["GEODESIC_KAFKA_BOOTSTRAP"] == stack.bootstrap
    assert os.environ["GEODESIC_REDIS_URL"] == stack.redis_url
    assert KafkaSettings().bootstrap == stack.bootstrap


def test_state_file_records_live_servers_and_their_logs(stack: StackInfo):
    if stack.external:
        pytest.skip("external servers: nothing started")
    state = json.loads(stack.state_file.read_text())
    assert state["bootstrap"] == stack.bootstrap
    assert state["redis_url"] == stack.redis_url
    assert {n: p["pid"] for n, p in state["processes"].items()} == dict(stack.pids)
    assert state_is_running(stack.state_file)
    assert stack.broker is not None
    assert _READY_LINE[stack.broker] in (stack.run_dir / "broker.log").read_text()
    assert "Ready to accept connections" in (stack.run_dir / "redis.log").read_text()


def test_stop_kills_both_servers_and_frees_their_ports(tmp_path: Path):
    stack = EmbeddedStack(run_root=tmp_path, use_env=False, topics={})
    info = stack.start()
    ports = [int(info.bootstrap.rsplit(":", 1)[1]), int(info.redis_url.rsplit(":", 1)[1][:-2])]
    stack.stop()
    assert _wait_dead(list(info.pids.values()), timeout_s=0.5)
    assert all(port_is_free(p) for p in ports)
    assert json.loads(info.state_file.read_text())["stopped"] is True
    stack.stop()  # idempotent


def test_a_port_taken_before_the_server_binds_is_retried_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        def ports() -> Iterator[int]:  # Kafka's controller port is asked for too
            yield from (taken, free_port(), taken)
            while True:
                yield free_port()

        handed_out = ports()
        monkeypatch.setattr(embedded, "free_port", lambda host: next(handed_out))
        with EmbeddedStack(run_root=tmp_path, use_env=False, topics={}) as info:
            assert str(taken) not in info.bootstrap + info.redis_url
            assert len(info.pids) == 2


def test_context_manager_stops_servers_when_the_body_raises(tmp_path: Path):
    with (
        pytest.raises(RuntimeError, match="boom"),
        EmbeddedStack(run_root=tmp_path, use_env=False, topics={}) as info,
    ):
        pids = list(info.pids.values())
        raise RuntimeError("boom")
    assert _wait_dead(pids, timeout_s=0.5)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_servers_die_with_their_owner_process(tmp_path: Path, how: str):
    owner, state = _run_owner(tmp_path, detach=False)
    pids = [p["pid"] for p in state["processes"].values()]
    assert all(is_alive(pid) for pid in pids)
    owner.send_signal(getattr(signal, how))
    owner.wait(timeout=10)
    assert _wait_dead(pids), f"orphaned servers after {how} to the owner"


def test_down_stops_a_detached_stack_started_by_another_process(tmp_path: Path):
    owner, state = _run_owner(tmp_path, detach=True)
    owner.kill()  # the `geodesic up` process is gone; its servers are not
    owner.wait(timeout=10)
    pids = [p["pid"] for p in state["processes"].values()]
    assert all(is_alive(pid) for pid in pids)
    state_file = Path(state["_path"])
    assert find_running_stacks(tmp_path) == [state_file]

    assert sorted(stop_from_state(state_file)) == ["broker", "redis"]
    assert _wait_dead(pids)
    assert find_running_stacks(tmp_path) == []
    assert stop_from_state(state_file) == []  # second `down` is a no-op


def test_stop_from_state_never_signals_a_recycled_pid(tmp_path: Path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        state_file = tmp_path / "state.json"
        fake = {"pid": sleeper.pid, "started": 1, "argv": ["x"], "log": ""}
        state_file.write_text(json.dumps({"processes": {"broker": fake}}))
        assert stop_from_state(state_file) == []
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_restart_broker_keeps_the_port_recreates_topics_and_clients_recover(
    private_stack: EmbeddedStack,
):
    settings = private_stack.kafka_settings
    before = private_stack.info
    producer = make_producer(settings, request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait("md.ticks", b"before", key=b"ES")
        await asyncio.to_thread(private_stack.restart_broker)
        after = private_stack.info
        assert after.bootstrap == before.bootstrap
        assert after.pids["broker"] != before.pids["broker"]
        assert after.pids["redis"] == before.pids["redis"]
        # The same producer reconnects by itself.
        await producer.send_and_wait("md.ticks", b"after", key=b"ES")
    finally:
        await producer.stop()
    values = [r.value for r in await read_to_end(settings, "md.ticks")]
    # Kafka's log dir survives a restart; Tansu's memory storage forgets the old record.
    assert values == ([b"before", b"after"] if private_stack.broker == "kafka" else [b"after"])
    admin = make_admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(["control.events"])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == 1


async def test_recreate_topics_reshapes_a_topic_a_client_auto_created_after_a_restart(
    private_stack: EmbeddedStack,
):
    if private_stack.broker != "tansu":
        pytest.skip("only memory storage loses its topics on a restart (Tansu)")
    settings = private_stack.kafka_settings
    await asyncio.to_thread(private_stack.kill_broker)
    await asyncio.to_thread(private_stack.start_broker, recreate_topics=False)
    producer = make_producer(settings)
    await producer.start()
    try:  # a client touches control.events first: the broker auto-creates 4 partitions
        await producer.send_and_wait("control.events", b"x")
    finally:
        await producer.stop()
    await asyncio.to_thread(private_stack.recreate_topics)
    consumer_view = await read_to_end(settings, "control.events")
    assert consumer_view == []
    admin = make_admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(["control.events"])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == 1


def test_external_servers_from_env_start_nothing_but_topics_are_ensured(
    stack: StackInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("GEODESIC_KAFKA_BOOTSTRAP", stack.bootstrap)
    monkeypatch.setenv("GEODESIC_REDIS_URL", stack.redis_url)
    name = f"test.external.{os.getpid()}.{time.time_ns()}"
    topics = {name: TopicShape(name, partitions=3)}
    with EmbeddedStack(run_root=tmp_path, topics=topics) as info:
        assert info.pids == {}
        assert info.external == {"kafka", "redis"}
        assert (info.bootstrap, info.redis_url) == (stack.bootstrap, stack.redis_url)
    settings = KafkaSettings(bootstrap=stack.bootstrap)
    assert asyncio.run(ensure_topics(settings, topics.values())) == []  # already there


async def test_fresh_topic_and_redis_fixtures_isolate_a_test(
    fresh_topic, fresh_group: str, redis_client: aioredis.Redis, redis_prefix: str
):
    topic = await fresh_topic(partitions=2)
    assert topic.startswith("test.") and fresh_group.startswith("test-")
    assert redis_prefix.startswith("test:")
    await redis_client.set(f"{redis_prefix}:flag", b"1")
    assert await redis_client.get(f"{redis_prefix}:flag") == b"1"
    assert await read_to_end(KafkaSettings(), topic) == []
    admin = make_admin(KafkaSettings())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == 2


async def test_kafka_topics_keep_their_retention_and_a_byte_cap_so_a_long_run_stays_bounded(
    stack: StackInfo, kafka_settings: KafkaSettings
):
    if stack.broker != "kafka":
        pytest.skip("Tansu accepts retention settings and never applies them")
    topics = load_topics()
    admin = make_admin(kafka_settings)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )
    finally:
        await admin.close()
    configs = {
        name: {key: value for key, value, *_ in entries}
        for response in responses
        for _code, _msg, _type, name, entries in response.resources
    }
    cap = KafkaBrokerConfig().retention_bytes
    for name, spec in topics.items():
        assert int(configs[name]["retention.ms"]) == spec.retention_ms, name
        assert int(configs[name]["retention.bytes"]) == cap, name
        assert int(configs[name]["segment.bytes"]) < cap, name
