"""What each broker flavor's settings give the clients: pure configuration, no broker.

The behaviour behind these choices is measured on the real brokers in
tests/integration/test_broker_quirks.py and docs/broker-notes.md.
"""

from __future__ import annotations

import pytest

from geodesic.runtime.kafka import KafkaSettings, producer_config


def test_tansu_flavor_shortens_the_session_timeout_that_decides_join_time():
    tansu, kafka = KafkaSettings(broker_flavor="tansu"), KafkaSettings(broker_flavor="kafka")
    assert tansu.session_timeout_ms <= 3000 < 6000 <= kafka.session_timeout_ms
    assert tansu.heartbeat_interval_ms * 3 <= tansu.session_timeout_ms


@pytest.mark.parametrize(
    "override", [{"enable_idempotence": True}, {"transactional_id": "tx"}], ids=str
)
def test_make_producer_rejects_idempotence_and_transactions_on_tansu_only(override: dict):
    with pytest.raises(ValueError, match="refused"):
        producer_config(KafkaSettings(broker_flavor="tansu"), **override)
    assert producer_config(KafkaSettings(broker_flavor="kafka"), **override).items() >= (
        override.items()
    )


def test_producer_config_is_acks_all_idempotent_on_kafka_only():
    for flavor, idempotent in (("tansu", False), ("kafka", True)):
        config = producer_config(KafkaSettings(broker_flavor=flavor))
        assert config["acks"] == "all"
        assert config["enable_idempotence"] is idempotent
        assert "transactional_id" not in config
