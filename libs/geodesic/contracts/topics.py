"""Topic definitions, read from infra/kafka/topics.yaml (the single source of truth)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from geodesic.contracts.models import MODELS, Contract

_DEFAULT_FILE = Path(__file__).resolve().parents[3] / "infra" / "kafka" / "topics.yaml"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    schema: str
    partitions: int
    replication_factor: int
    retention_ms: int
    description: str

    @property
    def model(self) -> type[Contract]:
        return MODELS[self.schema]


def topics_file() -> Path:
    return Path(os.environ.get("GEODESIC_TOPICS_FILE", _DEFAULT_FILE))


@lru_cache(maxsize=4)
def load_topics(path: Path | None = None) -> dict[str, TopicSpec]:
    """Parse and validate topics.yaml; unknown schema names fail here, not at runtime."""
    path = path or topics_file()
    doc = yaml.safe_load(path.read_text())
    defaults = doc.get("defaults", {})
    specs: dict[str, TopicSpec] = {}
    for entry in doc["topics"]:
        schema = entry["schema"]
        if schema not in MODELS:
            raise ValueError(f"{path}: topic {entry['name']!r} names unknown schema {schema!r}")
        specs[entry["name"]] = TopicSpec(
            name=entry["name"],
            schema=schema,
            partitions=int(entry.get("partitions", defaults.get("partitions", 1))),
            replication_factor=int(
                entry.get("replication_factor", defaults.get("replication_factor", 1))
            ),
            retention_ms=int(entry.get("retention_ms", defaults.get("retention_ms", -1))),
            description=entry.get("description", ""),
        )
    return specs


def topic_names() -> list[str]:
    return list(load_topics())
