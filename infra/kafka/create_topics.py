#!/usr/bin/env python3
"""Create the topics of geodesic.contracts topics.yaml on a Kafka cluster, check their shape.

    python infra/kafka/create_topics.py [--topics-file PATH] [--timeout 120] [--dry-run]

The broker comes from GEODESIC_KAFKA_BOOTSTRAP (and the other GEODESIC_KAFKA_* settings:
TLS, SASL, GEODESIC_KAFKA_BROKER_FLAVOR), exactly as the services read it. It is the
topic-init job of docker-compose.yml, and works the same against any cluster.

Idempotent: existing topics are left alone when their partition count matches
topics.yaml; a mismatch is an error naming the topic (partitions can only grow, and
growing them would move keys between partitions and break per-symbol order, so that is
an operator's decision, never this script's). It uses the same code as the embedded
launcher (geodesic.stack.topics.ensure_topics), so both create identical topics. It waits
for the broker up to --timeout seconds, since it normally starts alongside it.

Exit status: 0 done, 1 topic problem (message names it), 2 bad topics file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from aiokafka.errors import KafkaError

from geodesic.contracts import TopicSpec, load_topics
from geodesic.contracts.topics import topics_file
from geodesic.runtime.kafka import KafkaSettings
from geodesic.stack.topics import TopicSetupError, ensure_topics

log = logging.getLogger("create_topics")


def plan(specs: dict[str, TopicSpec]) -> list[str]:
    """One human-readable line per topic: what would be created."""
    return [
        f"{s.name}: partitions={s.partitions} replication_factor={s.replication_factor} "
        f"retention_ms={s.retention_ms} schema={s.schema}"
        for s in specs.values()
    ]


async def create(settings: KafkaSettings, specs: dict[str, TopicSpec], timeout_s: float) -> None:
    created = await ensure_topics(settings, specs.values(), timeout_s=timeout_s)
    existing = sorted(set(specs) - set(created))
    log.info("created %d topic(s): %s", len(created), ", ".join(created) or "-")
    log.info("already present with the declared partitions: %s", ", ".join(existing) or "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--topics-file",
        type=Path,
        default=None,
        help="default: $GEODESIC_TOPICS_FILE or the topics.yaml shipped in geodesic.contracts",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for Kafka")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, touch nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    path = args.topics_file or topics_file()
    try:
        specs = load_topics(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("cannot use topics file %s: %s", path, exc)
        return 2
    for line in plan(specs):
        log.info("topic %s", line)
    if args.dry_run:
        return 0

    settings = KafkaSettings()
    log.info("ensuring %d topics on %s", len(specs), settings.bootstrap)
    try:
        asyncio.run(create(settings, specs, args.timeout))
    except TopicSetupError as exc:
        log.error("%s", exc)
        return 1
    except (KafkaError, OSError) as exc:
        log.error("Kafka at %s not usable within %.0f s: %r", settings.bootstrap, args.timeout, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
