"""The one way a service rejects a record: a bounded DeadLetter on its DLQ, counted.

Every service sends what it cannot process to its dead-letter topic (the collector to
md.ticks.dlq, the others to pipeline.dlq) with a reason from
:mod:`geodesic.contracts.reasons`, and counts it in ``dlq_total{reason}``. A letter keeps
at most :data:`~geodesic.contracts.models.DEAD_LETTER_RAW_MAX` bytes of the original, so
it can always be produced: a 2 MB poison pill cannot turn into a dead letter the broker
refuses, which would stop the service on every restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from geodesic.contracts import make_dead_letter
from geodesic.contracts.reasons import RejectReason
from geodesic.runtime.pipeline import Output


class DeadLetterSink:
    """Builds dead-letter outputs for one service and counts them by reason."""

    def __init__(
        self,
        topic: str,
        registry: CollectorRegistry | None,
        *,
        service: str,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.topic = topic
        self.service = service
        self.clock = clock
        self.count = 0
        self.by_reason: dict[str, int] = {}
        self._counter = Counter(
            "dlq_total", "records dead-lettered, by reason", ["reason"], registry=registry
        )

    def reject(
        self,
        reason: RejectReason | str,
        detail: str,
        *,
        raw: bytes,
        key: bytes | None,
        source_topic: str,
        partition: int,
        offset: int,
    ) -> Output:
        reason = str(reason)
        self.count += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self._counter.labels(reason=reason).inc()
        letter = make_dead_letter(
            reason,
            f"[{self.service}] {detail}",
            raw=raw,
            key=key,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            now_ns=self.clock(),
        )
        return Output(self.topic, key[:256] if key else key, letter.to_bytes())

    def reject_record(
        self, reason: RejectReason | str, detail: str, tp: TopicPartition, rec: ConsumerRecord
    ) -> Output:
        return self.reject(
            reason,
            detail,
            raw=rec.value or b"",
            key=rec.key,
            source_topic=tp.topic,
            partition=tp.partition,
            offset=rec.offset,
        )

    def unproducible(self, out: Output, exc: BaseException, context: str) -> Output:
        """A dead letter standing in for an output the broker will not take."""
        return self.reject(
            RejectReason.OUTPUT_TOO_LARGE,
            f"output of {len(out.value)} bytes for {out.topic} refused ({type(exc).__name__}) "
            f"{context}",
            raw=out.value,
            key=out.key,
            source_topic=out.topic,
            partition=-1,
            offset=-1,
        )
