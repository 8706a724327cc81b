"""One hop of the soak's floor: a bare aiokafka consume -> produce relay, no processing.

    python -m bench.relay --source floor.t0 --sink floor.t1 --group floor-r1 [--closing-only]

The floor is what Geodesic's topology costs on a broker before any service does work:
the same number of processes and hops, the same client settings (``make_consumer`` /
``make_producer`` from GEODESIC_KAFKA_* variables), the same per-batch acknowledgement
and interval commits as the services' stream loop, and the same record rate per hop
(``--closing-only`` forwards only the records that close a bar, as the feature service
turns every tick into at most one bar). Headers travel with each record, so the last
consumer can time the whole path from the producer's stamp.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

from aiokafka.structs import OffsetAndMetadata

from geodesic.runtime.kafka import KafkaSettings, make_consumer, make_producer

#: header a floor record carries when it closes its symbol's bar
CLOSING = "closing"


def is_closing(headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]) -> bool:
    return any(k == CLOSING for k, _ in headers)


async def relay(
    source: str, sink: str, group: str, *, closing_only: bool, commit_interval_s: float
) -> None:
    settings = KafkaSettings()
    consumer = make_consumer(settings, topics=[source], group_id=group)
    producer = make_producer(settings)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    positions: dict = {}
    last_commit = 0.0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            pending = []
            for tp, records in batches.items():
                for rec in records:
                    if closing_only and not is_closing(rec.headers):
                        continue
                    pending.append(
                        await producer.send(sink, rec.value, key=rec.key, headers=list(rec.headers))
                    )
                positions[tp] = records[-1].offset + 1
            if pending:
                await asyncio.gather(*pending)
            now = time.monotonic()
            if positions and now - last_commit >= commit_interval_s:
                await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in positions.items()})
                positions = {}
                last_commit = now
    finally:
        if positions:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in positions.items()})
        await producer.stop()
        await consumer.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="topic to consume")
    ap.add_argument("--sink", required=True, help="topic to produce to")
    ap.add_argument("--group", required=True, help="consumer group id")
    ap.add_argument(
        "--closing-only",
        action="store_true",
        help="forward only records with the closing header (the feature hop's rate)",
    )
    ap.add_argument(
        "--commit-interval-ms",
        type=float,
        default=250.0,
        help="offset commit period (the services' stream loop default)",
    )
    args = ap.parse_args(argv)
    asyncio.run(
        relay(
            args.source,
            args.sink,
            args.group,
            closing_only=args.closing_only,
            commit_interval_s=args.commit_interval_ms / 1000,
        )
    )


if __name__ == "__main__":
    main()
