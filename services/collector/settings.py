"""Collector configuration (env prefix GEODESIC_COLLECTOR_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from geodesic.runtime.service import ServiceSettings


class CollectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="GEODESIC_COLLECTOR_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    in_topic: str = "md.ticks.raw"
    out_topic: str = "md.ticks"
    dlq_topic: str = "md.ticks.dlq"
    max_bytes: int = Field(default=4096, ge=64)
    max_future_s: float = Field(default=5.0, ge=0)
    max_age_s: float = Field(default=86_400.0, gt=0)
    allowed_symbols: frozenset[str] | None = None
    max_keys: int = Field(default=100_000, ge=1)
    reset_gap: int | None = Field(default=None, ge=1)
