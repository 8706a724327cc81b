"""The embedded Apache Kafka broker: single-node KRaft (broker + controller in one JVM).

`make install` copies the jars of a pinned Kafka release into ``.cache/kafka-<version>/``
(infra/kafka/embedded/pom.xml, fetched by Maven with strict checksums). This module turns
them into a running server without any script from a Kafka tarball: it writes
``server.properties`` into the stack's run dir, formats the KRaft log dir with
``kafka.tools.StorageTool`` and returns the ``java ... kafka.Kafka`` command line that
:class:`geodesic.stack.embedded.EmbeddedStack` spawns and stops by PID like its other
servers.

Sizing is for a shared 2-core box and a day-long run: a bounded heap, two network and two
I/O threads, small segments and a per-partition byte cap on top of each topic's
``retention.ms`` from topics.yaml, so disk use stays bounded whatever the feed rate.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

EmbeddedBroker = Literal["kafka", "tansu"]

ENV_EMBEDDED_BROKER = "GEODESIC_EMBEDDED_BROKER"
ENV_KAFKA_HOME = "GEODESIC_KAFKA_HOME"
ENV_JAVA = "GEODESIC_JAVA"
MIN_JAVA = 17

_REPO_ROOT = Path(__file__).resolve().parents[3]
_POM = _REPO_ROOT / "infra" / "kafka" / "embedded" / "pom.xml"
_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_MIB = 1024 * 1024


class KafkaUnavailableError(RuntimeError):
    """Java 17 or the Kafka jars are missing; the message says how to get them."""


@dataclass(frozen=True)
class KafkaBrokerConfig:
    """Sizing of the embedded broker (defaults fit a 2-core box with ~1 GB to spare).

    ``retention_bytes`` caps every partition on top of each topic's retention.ms, so a
    day at 1,000 ticks/s (~17 GB of raw ticks) stays within
    partitions x (retention_bytes + segment_bytes) on disk.
    """

    heap: str = "512m"
    network_threads: int = 2
    io_threads: int = 2
    segment_bytes: int = 16 * _MIB
    retention_bytes: int = 64 * _MIB
    retention_check_interval_ms: int = 60_000
    internal_topic_partitions: int = 4
    # Lets the tansu-style 3 s consumer sessions join too; Kafka's own default is 6 s.
    group_min_session_timeout_ms: int = 1000


def pinned_version(pom: Path = _POM) -> str:
    """The Kafka version infra/kafka/embedded/pom.xml pins (one place to change it)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise KafkaUnavailableError(f"no <kafka.version> in {pom}")
    return match.group(1).strip()


def kafka_home() -> Path:
    """Where `make install` put the jars: $GEODESIC_KAFKA_HOME or .cache/kafka-<version>."""
    override = os.environ.get(ENV_KAFKA_HOME)
    if override:
        return Path(override)
    return _REPO_ROOT / ".cache" / f"kafka-{pinned_version()}"


def java_binary() -> str:
    """$GEODESIC_JAVA, else $JAVA_HOME/bin/java, else java on PATH."""
    override = os.environ.get(ENV_JAVA)
    if override:
        return override
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaUnavailableError(
            f"java not found: install Java {MIN_JAVA}+ (apt-get install openjdk-17-jre-headless)"
            " and re-run make install, or use --broker tansu"
        )
    return found


def java_major(java: str) -> int:
    """The major version of ``java`` (17 for "17.0.15"), from ``java -version``."""
    out = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=30, check=False
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        raise KafkaUnavailableError(f"cannot read the version of {java}: {out.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def classpath(home: Path | None = None) -> str:
    """The broker's classpath (every jar Maven copied), or KafkaUnavailableError saying why."""
    home = home or kafka_home()
    jars = sorted((home / "lib").glob("*.jar"))
    if not (home / ".complete").is_file() or not any(j.name.startswith("kafka_") for j in jars):
        raise KafkaUnavailableError(
            f"Apache Kafka jars not found in {home}: run `make install` (needs Java "
            f"{MIN_JAVA}+ and Maven), or use --broker tansu"
        )
    return os.pathsep.join(str(j) for j in jars)


def check_available() -> None:
    """Raise KafkaUnavailableError (with what to do) unless Java 17+ and the jars are there."""
    java = java_binary()
    classpath()
    if java_major(java) < MIN_JAVA:
        raise KafkaUnavailableError(
            f"{java} is older than Java {MIN_JAVA}: Kafka 4 needs {MIN_JAVA}+ "
            "(apt-get install openjdk-17-jre-headless), or use --broker tansu"
        )


def kafka_available() -> bool:
    """Whether the embedded stack can run Apache Kafka here (its default if so)."""
    try:
        check_available()
    except (KafkaUnavailableError, OSError, subprocess.SubprocessError):
        return False
    return True


def choose_broker(
    requested: str | None = None, env: Mapping[str, str] | None = None
) -> EmbeddedBroker:
    """The embedded broker to run: ``requested``, else $GEODESIC_EMBEDDED_BROKER, else
    Apache Kafka when Java 17+ and the jars are present, else Tansu.

    An explicit "kafka" that cannot run raises KafkaUnavailableError (saying what to install)
    rather than quietly starting the broker with Tansu's limits.
    """
    choice = requested or (env if env is not None else os.environ).get(ENV_EMBEDDED_BROKER)
    if choice in (None, "", "auto"):
        return "kafka" if kafka_available() else "tansu"
    if choice == "tansu":
        return "tansu"
    if choice == "kafka":
        check_available()
        return "kafka"
    raise ValueError(f"{ENV_EMBEDDED_BROKER}/--broker must be kafka, tansu or auto, not {choice!r}")


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never
    starting with "-" (Kafka's Uuid.randomUuid rule: it would parse as a CLI option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    config: KafkaBrokerConfig,
) -> dict[str, str]:
    """The KRaft combined-mode configuration (pure: no files, no processes)."""
    internal = str(config.internal_topic_partitions)
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "4",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "num.network.threads": str(config.network_threads),
        "num.io.threads": str(config.io_threads),
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "num.replica.fetchers": "1",
        "log.segment.bytes": str(config.segment_bytes),
        "log.retention.bytes": str(config.retention_bytes),
        "log.retention.check.interval.ms": str(config.retention_check_interval_ms),
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(8 * _MIB),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": internal,
        "offsets.topic.segment.bytes": str(config.segment_bytes),
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": internal,
        "transaction.state.log.segment.bytes": str(config.segment_bytes),
        # a killed service's open transaction blocks read_committed readers until it is
        # aborted: look for timed-out ones every second (default 10 s)
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": str(config.group_min_session_timeout_ms),
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
    }


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def jvm_options(config: KafkaBrokerConfig, home: Path) -> list[str]:
    """Bounded heap, G1 with short pauses, exit (not limp) on OOM, our log4j2 config."""
    log_config = home / "log4j2.properties"
    return [
        f"-Xmx{config.heap}",
        f"-Xms{min(128, _heap_mib(config.heap))}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
    ]


def _heap_mib(heap: str) -> int:
    value, unit = int(heap[:-1]), heap[-1].lower()
    return value * 1024 if unit == "g" else value if unit == "m" else value // _MIB


@dataclass(frozen=True)
class KafkaLayout:
    """Files of one embedded broker inside a stack's run dir."""

    run_dir: Path

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "kafka-logs"

    @property
    def properties(self) -> Path:
        return self.run_dir / "kafka.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.run_dir / "kafka.cluster-id"

    def cluster_id(self) -> str:
        """This stack's cluster id, made once and kept so restarts reuse the log dir."""
        if self.cluster_id_file.is_file():
            return self.cluster_id_file.read_text().strip()
        cluster_id = new_cluster_id()
        self.cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id


def prepare(
    run_dir: Path,
    *,
    host: str,
    port: int,
    controller_port: int,
    config: KafkaBrokerConfig | None = None,
    format_timeout_s: float = 60.0,
) -> list[str]:
    """Write the properties, format the log dir if new, return the broker's argv.

    Formatting is skipped when the log dir already holds this cluster (a restart keeps
    every topic, record and group offset, unlike Tansu's memory storage).
    """
    config = config or KafkaBrokerConfig()
    java = java_binary()
    home = kafka_home()
    cp = classpath(home)
    layout = KafkaLayout(run_dir)
    props = server_properties(
        host=host,
        port=port,
        controller_port=controller_port,
        log_dir=layout.log_dir,
        config=config,
    )
    _write_properties(layout.properties, props)
    jvm = jvm_options(config, home)
    if not (layout.log_dir / "meta.properties").is_file():
        done = subprocess.run(
            [
                java,
                *jvm[:1],
                "-Xms32m",
                f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
                "-cp",
                cp,
                _STORAGE_TOOL,
                "format",
                "--cluster-id",
                layout.cluster_id(),
                "--config",
                str(layout.properties),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            timeout=format_timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"formatting the Kafka log dir {layout.log_dir} failed "
                f"(exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}"
            )
    return [java, *jvm, "-cp", cp, _MAIN, str(layout.properties)]


__all__ = [
    "ENV_EMBEDDED_BROKER",
    "ENV_JAVA",
    "ENV_KAFKA_HOME",
    "EmbeddedBroker",
    "KafkaBrokerConfig",
    "KafkaLayout",
    "KafkaUnavailableError",
    "check_available",
    "choose_broker",
    "classpath",
    "java_binary",
    "kafka_available",
    "kafka_home",
    "pinned_version",
    "prepare",
    "server_properties",
]
