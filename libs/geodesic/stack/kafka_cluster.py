"""A three-broker Apache Kafka KRaft cluster on one machine (what users outgrowing one box run).

Each node is a combined broker + controller JVM on its own loopback address (127.0.0.1,
127.0.0.2, 127.0.0.3: Linux routes all of 127.0.0.0/8 to ``lo``), with its own log dir
formatted with one shared cluster id and a static three-voter controller quorum. Nodes are
spawned and stopped by PID through :mod:`geodesic.stack.processes`, like the single-node
embedded broker, and reuse its jars, JVM options and sizing (:mod:`kafka_broker`).

Durability settings, the reason this exists: every topic (and the internal offsets and
transaction topics) has replication factor 3 and ``min.insync.replicas`` 2, and the
services' producers use ``acks=all`` with idempotence. An acknowledged record is then on
at least two brokers, so SIGKILL of any one broker loses nothing acknowledged; the
partitions it led move to another in-sync replica and producers keep going (two in-sync
replicas are left, which still satisfies min.insync.replicas).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.errors import KafkaError

from geodesic.runtime.kafka import KafkaSettings, make_admin
from geodesic.stack import kafka_broker
from geodesic.stack.kafka_broker import KafkaBrokerConfig
from geodesic.stack.processes import ServerProcess, free_port, spawn, terminate
from geodesic.stack.topics import TopicLike, TopicShape, ensure_topics

REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
_STORAGE_TOOL = "kafka.tools.StorageTool"
_MAIN = "kafka.Kafka"


@dataclass(frozen=True)
class NodeAddress:
    """Where one node listens: clients on ``port``, the controller quorum on
    ``controller_port``, both on ``host``."""

    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def quorum_voters(nodes: Sequence[NodeAddress]) -> str:
    """``controller.quorum.voters`` for a static quorum of every node."""
    return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)


def node_properties(
    node: NodeAddress,
    nodes: Sequence[NodeAddress],
    log_dir: Path,
    config: KafkaBrokerConfig,
    *,
    min_insync: int = MIN_INSYNC_REPLICAS,
    heartbeat_interval_ms: int = 500,
    session_timeout_ms: int = 3000,
) -> dict[str, str]:
    """One node's configuration (pure): the single-node properties from kafka_broker with
    the node id, the shared quorum and replicated defaults and internal topics."""
    rf = str(len(nodes))
    isr = str(min(min_insync, len(nodes)))
    props = kafka_broker.server_properties(
        host=node.host,
        port=node.port,
        controller_port=node.controller_port,
        log_dir=log_dir,
        config=config,
    )
    props.update(
        {
            "node.id": str(node.node_id),
            "controller.quorum.voters": quorum_voters(nodes),
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            # A replica that restarts catches up and re-enters the ISR; never elect one
            # that is behind (that would drop acknowledged records).
            "unclean.leader.election.enable": "false",
            # A SIGKILLed broker is fenced (its partitions' leadership moved, and it leaves
            # every ISR so acks=all stops waiting for it) when it misses heartbeats for
            # broker.session.timeout.ms: 9 s by default, 3 s here (docs/broker-notes.md).
            "broker.heartbeat.interval.ms": str(heartbeat_interval_ms),
            "broker.session.timeout.ms": str(session_timeout_ms),
            # Auto-created topics would get the defaults above, but a typo should fail.
            "auto.create.topics.enable": "false",
        }
    )
    return props


def replicated(
    specs: Iterable[TopicLike], *, min_insync: int = MIN_INSYNC_REPLICAS
) -> list[TopicShape]:
    """``specs`` (e.g. topics.yaml's) at replication factor 3 and min.insync.replicas 2."""
    return [
        TopicShape(
            name=s.name,
            partitions=s.partitions,
            replication_factor=REPLICATION_FACTOR,
            retention_ms=s.retention_ms,
            configs=(
                *tuple(getattr(s, "configs", ())),
                ("min.insync.replicas", str(min_insync)),
            ),
        )
        for s in specs
    ]


@dataclass
class KafkaCluster:
    """``n`` KRaft nodes under ``run_dir``; ``start()``, ``await wait_ready()``, ``stop()``.

    ``kill(node)`` (SIGKILL by default) and ``restart(node)`` exercise failover; a node
    restarts on the same address and log dir, so it rejoins as the same replica.
    """

    run_dir: Path
    n: int = 3
    config: KafkaBrokerConfig = field(default_factory=lambda: KafkaBrokerConfig(heap="256m"))
    hosts: Sequence[str] = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    stop_timeout_s: float = 15.0
    #: how long a silent (killed) broker keeps its leaderships and ISR places
    session_timeout_ms: int = 3000
    heartbeat_interval_ms: int = 500
    nodes: list[NodeAddress] = field(default_factory=list, init=False)
    procs: dict[int, ServerProcess] = field(default_factory=dict, init=False)
    cluster_id: str = field(default_factory=kafka_broker.new_cluster_id, init=False)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def kafka_settings(self) -> KafkaSettings:
        """Client settings listing every node, so clients find the cluster with one down."""
        return KafkaSettings(bootstrap=self.bootstrap, broker_flavor="kafka")

    def node_dir(self, node_id: int) -> Path:
        return self.run_dir / f"node-{node_id}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KafkaCluster:
        """Pick ports, format every log dir with one cluster id, spawn every node."""
        kafka_broker.check_available()
        if not self.nodes:
            self.nodes = [
                NodeAddress(i + 1, host, free_port(host), free_port(host))
                for i, host in zip(range(self.n), _cycle(self.hosts, self.n), strict=True)
            ]
        try:
            for node in self.nodes:
                self._format(node)
            for node in self.nodes:
                self._spawn(node)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node by PID (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""
        procs = list(self.procs.values())
        if procs:
            # All at once: a node stopping last, alone, would wait for a controller quorum
            # that no longer exists and only go down at the SIGKILL.
            with ThreadPoolExecutor(max_workers=len(procs)) as pool:
                list(pool.map(lambda p: terminate(p, timeout_s=self.stop_timeout_s), procs))
        self.procs.clear()

    def kill(self, node_id: int, *, graceful: bool = False) -> None:
        """Kill one node: SIGKILL (kill -9) unless ``graceful``."""
        proc = self.procs.pop(node_id)
        terminate(proc, graceful=graceful, timeout_s=self.stop_timeout_s)

    def restart(self, node_id: int) -> None:
        """Start a killed node again on its address and log dir."""
        if node_id in self.procs and self.procs[node_id].alive():
            raise RuntimeError(f"node {node_id} is running; kill it before restart")
        self._spawn(self._node(node_id))

    def alive(self, node_id: int) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.alive()

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ readiness

    async def wait_ready(self, *, brokers: int | None = None, timeout_s: float = 90.0) -> None:
        """Wait until the cluster answers with ``brokers`` (default: every running node)
        registered; raises TimeoutError naming the node logs otherwise."""
        want = brokers if brokers is not None else len(self.procs)
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            self._check_running()
            admin = make_admin(self.kafka_settings(), client_id="geodesic-cluster")
            try:
                await admin.start()
                info = await admin.describe_cluster()
                last = sorted(b["node_id"] for b in info["brokers"])
                if len(info["brokers"]) >= want and info.get("controller_id", -1) >= 0:
                    return
            except Exception as exc:
                last = exc
            finally:
                await admin.close()
            await asyncio.sleep(0.25)
        raise TimeoutError(
            f"cluster not ready with {want} brokers in {timeout_s}s (last: {last!r}); "
            f"see the node logs under {self.run_dir}"
        )

    async def create_topics(self, specs: Iterable[TopicLike], *, timeout_s: float = 30.0) -> None:
        """Create ``specs`` at replication factor 3, min.insync.replicas 2."""
        await ensure_topics(self.kafka_settings(), replicated(specs), timeout_s=timeout_s)

    async def partition_leaders(
        self, topic: str, *, timeout_s: float = 30.0
    ) -> dict[int, tuple[int, list[int]]]:
        """partition -> (leader node id, in-sync replica ids) as the cluster reports now.

        Retries with a fresh client while the node it asked is the one just killed."""
        deadline = time.monotonic() + timeout_s
        while True:
            admin = make_admin(self.kafka_settings(), client_id="geodesic-cluster")
            try:
                await admin.start()
                (entry,) = await admin.describe_topics([topic])
                return {p["partition"]: (p["leader"], list(p["isr"])) for p in entry["partitions"]}
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
            finally:
                await admin.close()
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ internals

    def _node(self, node_id: int) -> NodeAddress:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id}; nodes are {[n.node_id for n in self.nodes]}")

    def _properties_path(self, node: NodeAddress) -> Path:
        return self.node_dir(node.node_id) / "kafka.properties"

    def _format(self, node: NodeAddress) -> None:
        """Write the node's properties and format its log dir (once) with the cluster id."""
        directory = self.node_dir(node.node_id)
        directory.mkdir(parents=True, exist_ok=True)
        log_dir = directory / "kafka-logs"
        props = node_properties(
            node,
            self.nodes,
            log_dir,
            self.config,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            session_timeout_ms=self.session_timeout_ms,
        )
        path = self._properties_path(node)
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        if (log_dir / "meta.properties").is_file():
            return
        home = kafka_broker.kafka_home()
        done = subprocess.run(
            [
                kafka_broker.java_binary(),
                "-Xmx128m",
                f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
                "-cp",
                kafka_broker.classpath(home),
                _STORAGE_TOOL,
                "format",
                "--cluster-id",
                self.cluster_id,
                "--config",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"formatting {log_dir} for node {node.node_id} failed (exit {done.returncode}):"
                f" {(done.stderr or done.stdout).strip()[-800:]}"
            )

    def _spawn(self, node: NodeAddress) -> None:
        home = kafka_broker.kafka_home()
        argv = [
            kafka_broker.java_binary(),
            *kafka_broker.jvm_options(self.config, home),
            "-cp",
            kafka_broker.classpath(home),
            _MAIN,
            str(self._properties_path(node)),
        ]
        log_path = self.node_dir(node.node_id) / "kafka.log"
        self.procs[node.node_id] = spawn(f"kafka-{node.node_id}", argv, log_path)

    def _check_running(self) -> None:
        dead = [i for i, p in self.procs.items() if not p.alive()]
        if dead:
            raise RuntimeError(
                f"Kafka node(s) {dead} exited during start-up; see "
                + ", ".join(str(self.node_dir(i) / "kafka.log") for i in dead)
            )


def _cycle(hosts: Sequence[str], n: int) -> list[str]:
    return [hosts[i % len(hosts)] for i in range(n)]


__all__ = [
    "MIN_INSYNC_REPLICAS",
    "REPLICATION_FACTOR",
    "KafkaCluster",
    "NodeAddress",
    "node_properties",
    "quorum_voters",
    "replicated",
]
