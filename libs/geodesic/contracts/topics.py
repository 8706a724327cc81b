"""Topic definitions, read from topics.yaml beside this module (the single source of truth).

Shipped as package data, so an installed package finds it without the repository;
GEODESIC_TOPICS_FILE points at another file (a deployment's own topic plan).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from geodesic.contracts.models import MODELS, Contract

_DEFAULT_FILE = Path(__file__).with_name("topics.yaml")

#: Stands for anything outside Geodesic in producers / consumers (feeds, executors).
EXTERNAL = "external"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    schema: str
    partitions: int
    replication_factor: int
    retention_ms: int
    description: str
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()

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
            producers=tuple(entry.get("producers", ())),
            consumers=tuple(entry.get("consumers", ())),
        )
    return specs
