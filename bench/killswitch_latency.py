"""Kill-switch benchmark: how fast an operator's Enter halts trading, on a running stack.

`python -m bench.killswitch_latency --trials 20`

Two figures, p50/p99 over ``--trials`` flips (alternating on / off):

- enter_to_flag_ms: from starting the real CLI process (`python -m geodesic.cli.main
  kill-switch on ...`, what Enter does) to the flag being set, observed as the control
  channel message the same MULTI/EXEC publishes with the flag;
- flag_to_halted_signal_ms: from the flag being set to the first scored signal decided
  by the scorer after it that carries ``halted: true``. Signals come once per closed bar,
  so this includes waiting for the next bar (``--bar-seconds``); ``propagation_ms`` is
  the part that is not: the latest scorer decision that still came out unhalted after
  the flag was set, minus the flag time (<= 0 when none did).

The collector, feature and scorer run as separate processes on the embedded broker and
Redis, as `geodesic up` starts them; ticks for ``--symbols`` symbols stream throughout.
``--compare-with REV`` also times the CLI of git revision REV (its libs/ and services/
extracted to a temporary directory and put first on PYTHONPATH), alternating with the
current one in the same run, so the two figures share the machine's load.

Not part of the test run (timings depend on the machine); see
tests/integration/test_killswitch_path.py for the behaviour it relies on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from bench.feed import RandomWalkFeed
from geodesic.contracts import ScoredSignal
from geodesic.contracts.model_registry import ENV_MODEL_REGISTRY
from geodesic.contracts.services import COLLECTOR, FEATURE, SCORER
from geodesic.control import ControlPlane
from geodesic.control.keys import Keys
from geodesic.features import WARMUP_BARS
from geodesic.lifecycle.bootstrap import ensure_model
from geodesic.runtime.kafka import KafkaSettings, make_consumer, make_producer
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import Fleet

SERVICES = ("collector", "feature", "scorer")


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 1) if values else math.nan


class Ticker:
    """Streams ticks for a few symbols at a steady rate (bars close once per bar)."""

    def __init__(self, kafka: KafkaSettings, symbols: int, rate: float) -> None:
        self.kafka = kafka
        self.symbols = [f"KS{i:02d}" for i in range(symbols)]
        self.rate = rate
        self.feed = RandomWalkFeed(self.symbols, "BENCH")

    async def run(self, bar_seconds: int, stop: asyncio.Event) -> None:
        producer = make_producer(self.kafka)
        await producer.start()
        try:
            bar_ns = bar_seconds * 1_000_000_000
            first = time.time_ns() // bar_ns - (WARMUP_BARS + 2)
            sends = []
            for b in range(WARMUP_BARS + 2):  # backfill the feature warm-up
                for sym in self.symbols:
                    for j in range(4):
                        t = self.feed.tick(sym, (first + b) * bar_ns + j * bar_ns // 4)
                        sends.append(
                            await producer.send(
                                COLLECTOR.topic("in", "Tick"), t.to_bytes(), key=sym.encode()
                            )
                        )
            await asyncio.gather(*sends)
            i = 0
            while not stop.is_set():
                sym = self.symbols[i % len(self.symbols)]
                i += 1
                t = self.feed.tick(sym, time.time_ns())
                await producer.send(COLLECTOR.topic("in", "Tick"), t.to_bytes(), key=sym.encode())
                await asyncio.sleep(1.0 / self.rate)
        finally:
            await producer.stop()


def extract(rev: str, into: Path) -> dict[str, str]:
    """The environment that runs revision ``rev``'s CLI (its sources first on the path)."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "libs", "services"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    path = os.pathsep.join([str(into / "libs"), str(into / "services")])
    return {**os.environ, "PYTHONPATH": path}


async def flip(
    redis_url: str, on: bool, channel_client: aioredis.Redis, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """Run the real CLI; returns (Enter -> flag set in ms, flag-set wall time in ns)."""
    pubsub = channel_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(Keys().channel)
    try:
        argv = [sys.executable, "-m", "geodesic.cli.main", "kill-switch", "on" if on else "off"]
        argv += ["--reason", "bench", "--actor", "bench", "--redis-url", redis_url]
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
        )
        deadline = time.monotonic() + 10
        while True:  # None also stands for a swallowed subscribe confirmation
            msg = await pubsub.get_message(timeout=0.5)
            if msg is not None and json.loads(msg["data"]).get("kind") == "KILL_SWITCH":
                break
            if time.monotonic() > deadline:
                raise TimeoutError("no control message within 10 s of the CLI starting")
        elapsed_ms = (time.perf_counter() - t0) * 1000
        flag_ns = time.time_ns()
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"kill-switch exited {proc.returncode}: {err.decode()[-500:]}")
        return elapsed_ms, flag_ns
    finally:
        await pubsub.aclose()


async def measure(args: argparse.Namespace, kafka: KafkaSettings, redis_url: str) -> dict:
    consumer = make_consumer(
        kafka, topics=[SCORER.topic("out", "ScoredSignal")], group_id="bench-ks-executor"
    )
    await consumer.start()
    signals: list[ScoredSignal] = []

    async def read() -> None:
        while True:
            for recs in (await consumer.getmany(timeout_ms=20)).values():
                signals.extend(ScoredSignal.model_validate_json(r.value) for r in recs)

    reader = asyncio.create_task(read())
    stop = asyncio.Event()
    ticker = Ticker(kafka, args.symbols, args.rate)
    feeding = asyncio.create_task(ticker.run(args.bar_seconds, stop))
    client = aioredis.from_url(redis_url)
    enter, to_halted, propagation, baseline = [], [], [], []
    try:
        deadline = time.monotonic() + 90
        while not any(not s.halted for s in signals):  # warm-up done, signals flow
            if time.monotonic() > deadline:
                raise TimeoutError("no signal within 90 s of starting the feed")
            await asyncio.sleep(0.1)
        for trial in range(args.trials):
            on = trial % 2 == 0
            seen = len(signals)
            if args.baseline_env is not None:  # same load for both: alternate
                baseline.append((await flip(redis_url, on, client, args.baseline_env))[0])
            ms, flag_ns = await flip(redis_url, on, client)
            enter.append(ms)
            if not on:
                await asyncio.sleep(args.bar_seconds)
                continue
            deadline = time.monotonic() + 10 * args.bar_seconds + 10
            first = None
            while first is None and time.monotonic() < deadline:
                later = [s for s in signals[seen:] if s.hops.get("scorer_out", 0) > flag_ns]
                first = next((s for s in later if s.halted), None)
                await asyncio.sleep(0.005)
            if first is None:
                raise TimeoutError("no halted signal after the kill switch")
            got_ns = time.time_ns()
            to_halted.append((got_ns - flag_ns) / 1e6)
            unhalted = [
                s.hops["scorer_out"]
                for s in signals[seen:]
                if not s.halted and s.hops.get("scorer_out", 0) > flag_ns
            ]
            propagation.append((max(unhalted) - flag_ns) / 1e6 if unhalted else 0.0)
    finally:
        stop.set()
        await feeding
        reader.cancel()
        await consumer.stop()
        await ControlPlane(client).set_kill_switch(False, actor="bench", reason="bench done")
        await client.aclose()
    return {
        "trials": args.trials,
        "bar_seconds": args.bar_seconds,
        "enter_to_flag_ms": {"p50": pct(enter, 50), "p99": pct(enter, 99), "n": len(enter)},
        "flag_to_halted_signal_ms": {
            "p50": pct(to_halted, 50),
            "p99": pct(to_halted, 99),
            "n": len(to_halted),
        },
        "propagation_ms": {"max": round(max(propagation), 1) if propagation else math.nan},
        **(
            {
                f"enter_to_flag_ms_at_{args.compare_with}": {
                    "p50": pct(baseline, 50),
                    "p99": pct(baseline, 99),
                    "n": len(baseline),
                }
            }
            if baseline
            else {}
        ),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="kill-switch flips (on/off)")
    ap.add_argument("--symbols", type=int, default=5, help="symbols streamed")
    ap.add_argument("--rate", type=float, default=200.0, help="ticks per second")
    ap.add_argument("--bar-seconds", type=int, default=1, help="feature bar size")
    ap.add_argument(
        "--broker", choices=("kafka", "tansu"), default=None, help="embedded broker flavor"
    )
    ap.add_argument("--compare-with", metavar="REV", help="also time the CLI of this git revision")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args.baseline_env = None
        if args.compare_with:
            (Path(tmp) / "baseline").mkdir()
            args.baseline_env = extract(args.compare_with, Path(tmp) / "baseline")
        registry = Path(tmp) / "registry"
        model_id = ensure_model(registry)
        stack = EmbeddedStack(run_root=Path(tmp) / "run", use_env=False, broker=args.broker)
        info = stack.start()
        fleet = Fleet(
            stack.run_dir,
            {
                **info.env(),
                ENV_MODEL_REGISTRY: str(registry),
                f"{FEATURE.env_prefix}BAR_SECONDS": str(args.bar_seconds),
                "GEODESIC_LOG_LEVEL": "WARNING",
            },
            names=SERVICES,
        )
        try:
            asyncio.run(_activate(info.redis_url, model_id))
            fleet.start_all()
            fleet.wait_healthy(90)
            result = asyncio.run(measure(args, stack.kafka_settings, info.redis_url))
        finally:
            fleet.stop_all()
            stack.stop()
    print(json.dumps(result, indent=2))
    return result


async def _activate(redis_url: str, model_id: str) -> None:
    client = aioredis.from_url(redis_url)
    await ControlPlane(client).promote(model_id, actor="bench", reason="kill-switch bench")
    await client.aclose()


if __name__ == "__main__":
    main()
