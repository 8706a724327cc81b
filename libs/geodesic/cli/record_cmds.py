"""`geodesic record`: save md.bars or features.v1 to an .npz file for training.

Reads the topic from the beginning without joining a consumer group, stops when nothing
new has arrived for --idle-s (or after --max-s), and writes the recording atomically.
Load it back with ``geodesic.marketdata.recorder.load_bars_npz`` / ``read_recording``.

Exit codes, for scripts: 0 written, 1 written but empty (wrong topic or broker?),
2 usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from geodesic.cli.operator.args import positive


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "record",
        help="record md.bars or features.v1 to an .npz file (for training)",
        description="Deduplicates by (symbol, bar_index), keeping the first delivery.",
    )
    p.add_argument(
        "--topic",
        action="append",
        required=True,
        help="topic to record (md.bars or features.v1); repeat for several of one kind",
    )
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. session.npz")
    p.add_argument(
        "--kind",
        choices=("bars", "features"),
        help="payload kind; needed only for topics not in topics.yaml",
    )
    p.add_argument(
        "--idle-s", type=positive, default=2.0, help="stop after this long with no new record"
    )
    p.add_argument("--max-s", type=positive, default=600.0, help="stop after this long anyway")
    p.add_argument("--bootstrap", help="broker host:port (default: $GEODESIC_KAFKA_BOOTSTRAP)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_record)


def _record(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError
    from pydantic import ValidationError

    from geodesic.marketdata.recorder import record
    from geodesic.runtime.kafka import KafkaSettings

    try:
        settings = KafkaSettings()
        if args.bootstrap:
            settings = settings.with_bootstrap(args.bootstrap)
        result = asyncio.run(
            record(
                settings,
                args.topic,
                args.out,
                kind=args.kind,
                until_idle_s=args.idle_s,
                max_seconds=args.max_s,
            )
        )
    except (ValidationError, ValueError, LookupError, OSError, KafkaError) as exc:
        print(f"geodesic record: {exc}", file=sys.stderr)
        return 2
    stats = result.stats
    summary = {
        "out": str(result.path),
        "kind": result.kind,
        "topics": list(result.topics),
        **stats.as_dict(),
        "stopped": result.stopped,
        "seconds": round(result.seconds, 3),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items())) or "none"
        print(
            f"wrote {stats.kept} {result.kind} to {result.path} "
            f"({stats.received} read, {stats.duplicates} duplicates of which "
            f"{stats.conflicts} conflicting, rejected: {rejected}; "
            f"stopped on {result.stopped} after {result.seconds:.1f} s)"
        )
    if stats.kept == 0:
        print(f"geodesic record: nothing recorded from {', '.join(result.topics)}", file=sys.stderr)
        return 1
    return 0
