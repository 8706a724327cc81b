"""Record Kafka topics (md.bars, features.v1) into the .npz recording format.

:func:`record` reads topics from the beginning with a group-less consumer (manual
assignment of every partition) until no record has arrived for ``until_idle_s`` and every
partition's position has reached the high watermark of a fetch response (never
``end_offsets()``, which lags on Tansu: docs/broker-notes.md), or ``max_seconds`` passed.
The format itself is :mod:`geodesic.marketdata.recording`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka import TopicPartition

from geodesic.contracts import load_topics
from geodesic.marketdata.recording import (
    RecorderStats,
    RecordKind,
    kind_of_topic,
    make_recorder,
)
from geodesic.runtime.kafka import KafkaSettings, make_consumer, topic_partitions

log = logging.getLogger(__name__)

StopReason = Literal["idle", "max_seconds"]


@dataclass(frozen=True, slots=True)
class RecordResult:
    """Where the recording went, what was read, and why reading stopped."""

    path: Path
    kind: RecordKind
    topics: tuple[str, ...]
    stats: RecorderStats
    seconds: float
    stopped: StopReason


async def record(
    kafka_settings: KafkaSettings | None,
    topics: Sequence[str] | str,
    out_path: str | os.PathLike[str],
    *,
    kind: RecordKind | None = None,
    until_idle_s: float = 2.0,
    max_seconds: float = 600.0,
) -> RecordResult:
    """Read ``topics`` from the beginning into one recording and write it to ``out_path``.

    Stops once no record has arrived for ``until_idle_s`` *and* every partition is caught
    up with its fetch high watermark (so a slow first fetch is not mistaken for an empty
    topic), or after ``max_seconds`` (a live topic never idles); it writes what it has
    either way. ``kind`` defaults to the topics' schema in topics.yaml. No consumer group
    is joined and nothing is committed, so recording never disturbs the services.
    """
    names = (topics,) if isinstance(topics, str) else tuple(topics)
    if not names:
        raise ValueError("topics: at least one topic is needed")
    if until_idle_s <= 0 or max_seconds <= 0:
        raise ValueError(f"until_idle_s ({until_idle_s}) and max_seconds must be > 0")
    known = load_topics()
    if kind is None:
        kinds = {kind_of_topic(t) for t in names}
        if len(kinds) > 1:
            raise ValueError(f"topics {names} hold different kinds {sorted(kinds)}")
        kind = kinds.pop()
    for t in names:  # a declared topic of the other kind would be rejected record by record
        if t in known and kind_of_topic(t) != kind:
            raise ValueError(f"topic {t!r} holds {known[t].schema}, not {kind}")
    recorder = make_recorder(kind)
    out = Path(out_path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"directory of {out} does not exist")

    consumer = make_consumer(
        kafka_settings,
        group_id=None,
        client_id=f"geodesic-recorder-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    started = time.monotonic()
    try:
        await consumer.start()  # inside try: a failed start must still close the client
        # All topics' metadata, never one by name (the broker would auto-create a typo).
        partitions = await topic_partitions(kafka_settings, names, timeout_s=0)
        tps = [TopicPartition(t, p) for t in names for p in sorted(partitions[t])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        began = last_arrival = time.monotonic()
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=100)
            now = time.monotonic()
            for batch in batches.values():
                for rec in batch:
                    recorder.add_raw(rec.value)
                    last_arrival = now
            if now - began >= max_seconds:
                stopped: StopReason = "max_seconds"
                break
            if now - last_arrival >= until_idle_s and await _caught_up(consumer, tps):
                stopped = "idle"
                break
    finally:
        await consumer.stop()
    if recorder.stats.rejected:
        log.warning("recording %s: rejected %s", names, dict(recorder.stats.rejected))
    recorder.to_npz(out)
    return RecordResult(
        path=out,
        kind=kind,
        topics=names,
        stats=recorder.stats,
        seconds=time.monotonic() - started,
        stopped=stopped,
    )


async def _caught_up(consumer: Any, tps: Sequence[Any]) -> bool:
    for tp in tps:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
