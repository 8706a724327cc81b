"""Choosing the embedded broker and configuring Apache Kafka: pure logic, no JVM started."""

from __future__ import annotations

from pathlib import Path

import pytest

from geodesic.stack import kafka_broker
from geodesic.stack.kafka_broker import (
    KafkaBrokerConfig,
    KafkaUnavailableError,
    choose_broker,
    new_cluster_id,
    pinned_version,
    server_properties,
)


def test_tansu_is_chosen_when_asked_for_even_where_kafka_could_run():
    assert choose_broker("tansu") == "tansu"
    assert choose_broker(None, {"GEODESIC_EMBEDDED_BROKER": "tansu"}) == "tansu"


def test_an_unknown_broker_name_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match=r"GEODESIC_EMBEDDED_BROKER.*redpanda"):
        choose_broker("redpanda")


def test_asking_for_kafka_without_its_jars_says_to_run_make_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GEODESIC_KAFKA_HOME", str(tmp_path))
    with pytest.raises(KafkaUnavailableError, match=r"make install.*--broker tansu"):
        choose_broker("kafka")


def test_auto_falls_back_to_tansu_without_java(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GEODESIC_JAVA", "/nonexistent/java")
    assert choose_broker(None, {}) == "tansu"
    assert choose_broker("auto") == "tansu"


def test_properties_put_broker_and_controller_on_the_given_loopback_ports(tmp_path: Path):
    config = KafkaBrokerConfig()
    props = server_properties(
        host="127.0.0.1", port=1111, controller_port=2222, log_dir=tmp_path, config=config
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1111,CONTROLLER://127.0.0.1:2222"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1111"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:2222"
    assert props["log.dirs"] == str(tmp_path)
    # bounded disk: a byte cap per partition on top of each topic's retention.ms
    assert int(props["log.retention.bytes"]) == config.retention_bytes > 0
    assert int(props["log.segment.bytes"]) < int(props["log.retention.bytes"])
    # single node: internal topics must not ask for three replicas
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_cluster_ids_are_22_url_safe_chars_never_read_as_an_option():
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert all(
        set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for i in ids
    )


def test_the_pinned_version_comes_from_the_pom_and_names_the_cache_dir(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("GEODESIC_KAFKA_HOME", raising=False)
    version = pinned_version()
    assert version.startswith("4.")
    assert kafka_broker.kafka_home().name == f"kafka-{version}"
