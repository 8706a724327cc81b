"""`geodesic replay`: publish a data set as ticks to md.ticks.raw, as a producer would.

Real E-mini trades (``es_trades``) go out one tick per trade with the tick-rule quote
model of :func:`geodesic.marketdata.replay.trade_ticks`; daily data sets (``sp500``, ...)
as synthetic ticks inside each bar (:func:`~geodesic.marketdata.replay.replay_ticks`,
one bar per second). Timestamps are laid so that none is ahead of the wall clock when it
is sent (the collector refuses ticks from the future) and none older than a day.

Exit codes: 0 everything acknowledged, 1 some sends failed, 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geodesic.contracts import Tick

from geodesic.cli.operator.args import number_in

TRADES = "es_trades"
ES_TICK = 0.25


def _rate(text: str) -> float:
    return number_in(text, above=0.0, at_most=100_000.0)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="publish a data set as ticks to md.ticks.raw (real E-mini trades or daily bars)",
        description="Publishes keyed by symbol with Kafka's default partitioner, like a "
        "well-behaved producer. Finds the broker of the running `geodesic up` stack unless "
        "--bootstrap or $GEODESIC_KAFKA_BOOTSTRAP says otherwise.",
    )
    p.add_argument(
        "dataset",
        help=f"{TRADES} (500k real E-mini trades, one tick each) or a daily data set "
        "(see `geodesic train --help`), replayed as ticks inside 1-second bars",
    )
    p.add_argument("--rate", type=_rate, default=500.0, help="ticks per second (default 500)")
    p.add_argument(
        "--limit", type=int, default=20_000, help="ticks to send at most (default 20000)"
    )
    p.add_argument("--bootstrap", help="broker host:port (default: the running stack's)")
    p.add_argument("--topic", default=None, help="topic to publish to (default md.ticks.raw)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_replay)


def plan_ticks(dataset: str, limit: int, rate: float, now_ns: int) -> Iterator[Tick]:
    """The ticks of ``dataset`` timed for publishing at ``rate`` from ``now_ns``.

    The data set is loaded here, so an unknown name or a missing package fails before
    anything is sent; the ticks themselves are made as they are published.
    """
    from geodesic.marketdata.datasets import DATASETS, INTRADAY

    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if dataset == TRADES:
        INTRADAY["es_1min"].path()  # raises DatasetUnavailableError without mlfinpy
    elif dataset not in DATASETS:
        raise LookupError(
            f"unknown data set {dataset!r}: replay {TRADES} (real trades) or a daily data "
            f"set: {', '.join(sorted(DATASETS))}"
        )
    return _ticks(dataset, limit, rate, now_ns)


def _ticks(dataset: str, limit: int, rate: float, now_ns: int) -> Iterator[Tick]:
    import numpy as np

    from geodesic.marketdata.datasets import INTRADAY, Trades, load_dataset, load_trades
    from geodesic.marketdata.replay import (
        ReplayConfig,
        backfill_start_ns,
        replay_ticks,
        trade_ticks,
    )

    if dataset == TRADES:
        t = load_trades(INTRADAY["es_1min"].path())
        trades = Trades(t.ts_ns[:limit], t.price[:limit], t.size[:limit])
        n = len(trades.ts_ns)
        elapsed = trades.ts_ns - trades.ts_ns[0]
        send_at = np.arange(n) * (1e9 / rate)  # when each tick goes out, from now
        speed = max(float(elapsed[-1]) / max(float(send_at[-1]), 1.0), 1e-9)
        lead = float(np.max(elapsed / speed - send_at))  # how far ahead the trades run
        t0 = now_ns - int(lead) - 1
        yield from trade_ticks(
            trades, symbol="ES", t0_ns=t0, tick_size=ES_TICK, venue="XCME", speed=speed
        )
        return
    series = load_dataset(dataset)
    bars = min(len(series), max(1, limit // 20))  # ~20-50 ticks per bar
    series = series.take(slice(len(series) - bars, len(series)))
    t0 = backfill_start_ns(now_ns, 1, bars)  # every bar ends before now: never ahead
    for k, tick in enumerate(replay_ticks(series, ReplayConfig(seed=0), t0_ns=t0)):
        if k >= limit:
            return
        yield tick


def _replay(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError
    from pydantic import ValidationError

    from geodesic.contracts.services import COLLECTOR
    from geodesic.marketdata.datasets import DatasetUnavailableError
    from geodesic.marketdata.replay import PublishResult, encode_ticks, publish
    from geodesic.runtime.kafka import KafkaSettings, make_producer

    try:  # the data set first: a typo is refused before any connection
        ticks = plan_ticks(args.dataset, args.limit, args.rate, time.time_ns())
    except (DatasetUnavailableError, ValueError, LookupError) as exc:
        print(f"geodesic replay: {exc}", file=sys.stderr)
        return 2
    bootstrap = args.bootstrap or os.environ.get("GEODESIC_KAFKA_BOOTSTRAP") or _stack_bootstrap()
    if not bootstrap:
        print(
            "geodesic replay: no broker: start one with `geodesic up`, or pass --bootstrap",
            file=sys.stderr,
        )
        return 2
    topic = args.topic or COLLECTOR.topic("in", "Tick")
    try:
        settings = KafkaSettings().with_bootstrap(bootstrap)

        async def run() -> PublishResult:
            producer = make_producer(settings)
            try:
                await producer.start()
                return await publish(producer, encode_ticks(ticks), topic, args.rate)
            finally:
                await producer.stop()

        result = asyncio.run(run())
    except KafkaError as exc:
        print(
            f"geodesic replay: broker {bootstrap} did not answer ({exc}): is the stack up "
            "(`geodesic status`)? Or pass the right --bootstrap",
            file=sys.stderr,
        )
        return 2
    except (ValidationError, ValueError) as exc:
        print(f"geodesic replay: {exc}", file=sys.stderr)
        return 2
    summary = {
        "dataset": args.dataset,
        "topic": topic,
        "sent": result.sent,
        "delivered": result.delivered,
        "failed": result.failed,
        "seconds": round(result.elapsed_s, 2),
        "first_error": result.first_error,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"sent {result.sent} ticks of {args.dataset} to {topic} in "
            f"{result.elapsed_s:.1f} s: {result.delivered} delivered, {result.failed} failed"
        )
    return 1 if result.failed else 0


def _stack_bootstrap() -> str | None:
    from geodesic.stack.home import up_stack_fleet

    state = up_stack_fleet()
    return None if state is None else str(state.get("bootstrap") or "") or None
