"""Pipeline benchmark: sustained ticks/s through collector -> feature -> scorer, and
latency p50/p99 per hop and end to end (the tick that closes a bar -> its scored signal).

`python -m bench.pipeline_latency --rate 1000 --symbols 10 --seconds 30`

The five services run as separate processes on the embedded broker and Redis, exactly as
`geodesic up` starts them. Ticks are stamped with the wall clock when sent, so per-hop
latency comes straight from the hop timestamps every event carries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from geodesic.contracts import ScoredSignal, Tick
from geodesic.contracts.model_registry import ENV_MODEL_REGISTRY
from geodesic.contracts.services import COLLECTOR, FEATURE, SCORER
from geodesic.control import ControlPlane
from geodesic.features import WARMUP_BARS
from geodesic.lifecycle.bootstrap import ensure_model
from geodesic.runtime.kafka import KafkaSettings, make_consumer, make_producer
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import Fleet

RAW_TICKS = COLLECTOR.topic("in", "Tick")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


async def drive(args: argparse.Namespace, kafka: KafkaSettings) -> dict:
    consumer = make_consumer(
        kafka, topics=[SCORER.topic("out", "ScoredSignal")], group_id="bench-executor"
    )
    await consumer.start()
    producer = make_producer(kafka)
    await producer.start()
    received: list[tuple[ScoredSignal, int]] = []

    async def read() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=20)
            now = time.time_ns()
            for recs in batches.values():
                received.extend((ScoredSignal.model_validate_json(r.value), now) for r in recs)

    reader = asyncio.create_task(read())
    symbols = [f"SYM{i:02d}" for i in range(args.symbols)]
    price = dict.fromkeys(symbols, 100.0)
    seq = dict.fromkeys(symbols, 0)
    rng = random.Random(1)

    # Warm-up: the feature history needs WARMUP_BARS bars per symbol before the first
    # vector. Backfill them (timestamps in the recent past), then wait for their signals.
    bar_ns = args.bar_seconds * 1_000_000_000
    first_bar = time.time_ns() // bar_ns - (WARMUP_BARS + 2)
    backfill = []
    for b in range(WARMUP_BARS + 2):
        for sym in symbols:
            for j in range(4):
                price[sym] *= math.exp(rng.gauss(0, 2e-4))
                seq[sym] += 1
                p = price[sym]
                ts = (first_bar + b) * bar_ns + j * bar_ns // 4
                t = Tick(
                    venue="BENCH",
                    symbol=sym,
                    seq=seq[sym],
                    ts_ns=ts,
                    bid=p * (1 - 1e-4),
                    ask=p * (1 + 1e-4),
                    last=p,
                    size=1.0,
                )
                backfill.append(await producer.send(RAW_TICKS, t.to_bytes(), key=sym.encode()))
    await asyncio.gather(*backfill)
    deadline = time.monotonic() + 60
    while len(received) < len(symbols) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    received.clear()
    interval = 1.0 / args.rate
    start = time.perf_counter()
    sent = 0
    pending = []
    lag_s = 0.0
    while (elapsed := time.perf_counter() - start) < args.seconds:
        due = int(elapsed / interval) + 1
        while sent < due:
            sym = symbols[sent % len(symbols)]
            price[sym] *= math.exp(rng.gauss(0, 2e-4))
            seq[sym] += 1
            p = price[sym]
            tick = Tick(
                venue="BENCH",
                symbol=sym,
                seq=seq[sym],
                ts_ns=time.time_ns(),
                bid=p * (1 - 1e-4),
                ask=p * (1 + 1e-4),
                last=p,
                size=1.0,
            )
            pending.append(await producer.send(RAW_TICKS, tick.to_bytes(), key=sym.encode()))
            sent += 1
        if len(pending) > 2000:
            await asyncio.gather(*pending)
            pending.clear()
        lag_s = max(lag_s, elapsed - sent * interval)
        await asyncio.sleep(interval * 5)
    await asyncio.gather(*pending)
    send_s = time.perf_counter() - start
    await asyncio.sleep(args.bar_seconds + 3)  # let the last bars close and drain
    reader.cancel()
    await producer.stop()
    await consumer.stop()

    hops: dict[str, list[float]] = {
        k: []
        for k in (
            "collector",
            "to_feature",
            "feature",
            "to_scorer",
            "scorer",
            "to_executor",
            "end_to_end",
        )
    }
    for s, got in received:
        h = s.hops
        if "collector" not in h:
            continue  # idle-flushed bar: no closing tick to trace
        hops["collector"].append((h["collector"] - h["tick_ts"]) / 1e6)
        hops["to_feature"].append((h["feature_in"] - h["collector"]) / 1e6)
        hops["feature"].append((h["feature_out"] - h["feature_in"]) / 1e6)
        hops["to_scorer"].append((h["scorer_in"] - h["feature_out"]) / 1e6)
        hops["scorer"].append((h["scorer_out"] - h["scorer_in"]) / 1e6)
        hops["to_executor"].append((got - h["scorer_out"]) / 1e6)
        hops["end_to_end"].append((got - h["tick_ts"]) / 1e6)
    return {
        "rate_target": args.rate,
        "ticks_sent": sent,
        "ticks_per_s": round(sent / send_s, 1),
        "max_send_lag_s": round(lag_s, 3),
        "signals": len(received),
        "traced_signals": len(hops["end_to_end"]),
        "latency_ms": {
            k: {"p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)} for k, v in hops.items()
        },
    }


async def activate(redis_url: str, model_id: str) -> None:
    client = aioredis.from_url(redis_url)
    await ControlPlane(client).promote(model_id, actor="bench", reason="pipeline bench")
    await client.aclose()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000.0, help="ticks per second")
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--bar-seconds", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry"
        model_id = ensure_model(registry)
        stack = EmbeddedStack(run_root=Path(tmp) / "run", use_env=False)
        info = stack.start()
        fleet = Fleet(
            stack.run_dir,
            {
                **info.env(),
                ENV_MODEL_REGISTRY: str(registry),
                f"{FEATURE.env_prefix}BAR_SECONDS": str(args.bar_seconds),
                "GEODESIC_LOG_LEVEL": "WARNING",
            },
        )
        try:
            asyncio.run(activate(info.redis_url, model_id))
            fleet.start_all()
            fleet.wait_healthy(90)
            result = asyncio.run(drive(args, stack.kafka_settings))
        finally:
            fleet.stop_all()
            stack.stop()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
