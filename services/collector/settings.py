"""Collector configuration (env prefix from geodesic.contracts.services.COLLECTOR)."""

from __future__ import annotations

from pydantic import Field

from geodesic.contracts.services import COLLECTOR
from geodesic.runtime.service import ServiceSettings, settings_config


class CollectorSettings(ServiceSettings):
    model_config = settings_config(COLLECTOR)

    in_topic: str = COLLECTOR.topic("in", "Tick")
    out_topic: str = COLLECTOR.topic("out", "Tick")
    dlq_topic: str = COLLECTOR.dlq_topic()
    max_bytes: int = Field(default=4096, ge=64)
    max_future_s: float = Field(default=5.0, ge=0)
    max_age_s: float = Field(default=86_400.0, gt=0)
    allowed_symbols: frozenset[str] | None = None
    max_keys: int = Field(default=100_000, ge=1)
    reset_gap: int | None = Field(default=None, ge=1)
    check_partition: bool = Field(
        default=True,
        description="Dead-letter (wrong_partition) a tick that is not on the partition its "
        "symbol hashes to with Kafka's default murmur2 partitioner: sequence state is kept "
        "per partition, so such a tick would be accepted twice and reorder md.ticks.",
    )
