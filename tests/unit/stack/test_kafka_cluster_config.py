"""The three-node cluster's configuration (pure): one quorum, replicated everything."""

from __future__ import annotations

from pathlib import Path

from geodesic.contracts.topics import load_topics
from geodesic.stack.kafka_broker import KafkaBrokerConfig
from geodesic.stack.kafka_cluster import NodeAddress, node_properties, quorum_voters, replicated

NODES = [
    NodeAddress(1, "127.0.0.1", 9001, 9101),
    NodeAddress(2, "127.0.0.2", 9002, 9102),
    NodeAddress(3, "127.0.0.3", 9003, 9103),
]


def test_every_node_lists_the_same_three_voters_and_its_own_id_and_address() -> None:
    voters = "1@127.0.0.1:9101,2@127.0.0.2:9102,3@127.0.0.3:9103"
    assert quorum_voters(NODES) == voters
    for node in NODES:
        props = node_properties(node, NODES, Path("/x"), KafkaBrokerConfig())
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == voters
        assert props["advertised.listeners"] == f"PLAINTEXT://{node.host}:{node.port}"
        assert f"CONTROLLER://{node.host}:{node.controller_port}" in props["listeners"]


def test_internal_topics_and_defaults_are_replicated_three_ways_with_two_in_sync() -> None:
    props = node_properties(NODES[0], NODES, Path("/x"), KafkaBrokerConfig())
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"


def test_topics_yaml_topics_keep_partitions_and_retention_and_gain_rf3_min_isr2() -> None:
    specs = list(load_topics().values())
    shapes = replicated(specs)
    assert [s.name for s in shapes] == [s.name for s in specs]
    for spec, shape in zip(specs, shapes, strict=True):
        assert shape.partitions == spec.partitions
        assert shape.retention_ms == spec.retention_ms
        assert shape.replication_factor == 3
        assert ("min.insync.replicas", "2") in shape.configs
