"""Helpers for fault tests on a private embedded stack with the services as processes.

Ticks are generated bar by bar with timestamps in the recent past, so bars close by event
time as later ticks arrive and a test controls exactly which bars exist. The expected bars
and feature vectors are computed offline with the same BarBuilder / FeatureEngine the
feature service runs, so "nothing lost" is checked against an independent replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from aiokafka import TopicPartition

from geodesic.contracts import Bar, Tick
from geodesic.control import ControlPlane
from geodesic.features import BarBuilder, FeatureEngine
from geodesic.runtime.kafka import KafkaSettings, make_consumer, make_producer, topic_partitions
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import Fleet

BAR_NS = 1_000_000_000
TOPICS = (
    "md.ticks.raw",
    "md.ticks",
    "md.ticks.dlq",
    "pipeline.dlq",
    "md.bars",
    "features.v1",
    "signals.scored",
    "signals.shadow",
    "outcomes.v1",
)


def bar_ticks(
    symbols: Sequence[str],
    n_bars: int,
    *,
    first_bar: int,
    ticks_per_bar: int = 4,
    seed: int = 0,
    venue: str = "FAULT",
    seq_start: int = 1,
) -> list[list[Tick]]:
    """Ticks grouped by bar (every symbol's ticks of bar i in chunk i), deterministic."""
    rng = random.Random(seed)
    price = {s: 100.0 + 10 * i for i, s in enumerate(symbols)}
    seq = dict.fromkeys(symbols, seq_start - 1)
    chunks: list[list[Tick]] = []
    for b in range(n_bars):
        chunk = []
        for j in range(ticks_per_bar):
            for s in symbols:
                price[s] *= math.exp(rng.gauss(0, 1e-3))
                seq[s] += 1
                p = round(price[s], 6)
                chunk.append(
                    Tick(
                        venue=venue,
                        symbol=s,
                        seq=seq[s],
                        ts_ns=(first_bar + b) * BAR_NS + j * (BAR_NS // ticks_per_bar) + 1,
                        bid=round(p * (1 - 1e-4), 6),
                        ask=round(p * (1 + 1e-4), 6),
                        last=p,
                        size=1.0 + j,
                    )
                )
        chunks.append(chunk)
    return chunks


def expected_outputs(ticks: Iterable[Tick]) -> tuple[dict, set]:
    """Bars {(symbol, bar_index): Bar} and vector keys {(symbol, bar_index)} a clean run makes.

    Every symbol's last bar is included: the live service closes it by the idle flush.
    """
    builder = BarBuilder(1, "last")
    engine = FeatureEngine()
    bars: dict[tuple[str, int], Bar] = {}
    vectors: set[tuple[str, int]] = set()

    def emit(bar: Bar) -> None:
        bars[(bar.symbol, bar.bar_index)] = bar
        if engine.on_bar(bar) is not None:
            vectors.add((bar.symbol, bar.bar_index))

    for t in ticks:
        closed = builder.on_tick(t, 0).closed
        if closed is not None:
            emit(closed)
    for bar in builder.flush_due(2**62, 0):
        emit(bar)
    return bars, vectors


def bar_content(bar: Bar) -> tuple:
    return (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.n_ticks, bar.close_ts_ns)


def signal_content(raw: dict) -> tuple:
    """What must be identical between two copies of one signal: the model's answer.

    Timing fields are excluded, and so is tradability: it is decided at decision time
    (a copy re-scored from a backlog after a restart is stale_input, not tradable)."""
    return tuple(
        raw[k]
        for k in (
            "signal_id",
            "symbol",
            "bar_index",
            "prob_up",
            "side",
            "model_id",
            "route",
            "eff_k",
        )
    )


class TopicTail:
    """Reads whole topics from the beginning with manual assignment (no group to join).

    Survives a broker restart: the consumer is rebuilt and re-reads what the new broker
    holds (memory storage: only what was produced after the restart).
    """

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str]) -> None:
        self.kafka = kafka
        self.topics = list(topics)
        self.records: dict[str, list] = {t: [] for t in self.topics}
        self._task: asyncio.Task | None = None
        self._consumer = None
        self.generation = 0

    async def start(self) -> None:
        await self._open()
        self._task = asyncio.create_task(self._run())

    async def _open(self) -> None:
        consumer = make_consumer(
            self.kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        partitions = await topic_partitions(self.kafka, self.topics, timeout_s=5.0)
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(partitions[t])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._consumer = consumer

    async def reopen(self) -> None:
        """Forget what was read and read every topic again from its beginning."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            try:
                await self._consumer.stop()
            except asyncio.CancelledError:
                # after a broker restart aiokafka's fetch task can surface its own
                # cancellation from stop(); only a cancellation of this task is ours
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception:  # the old connection is gone with the old broker
                pass
        self.records = {t: [] for t in self.topics}
        self.generation += 1
        await self._open()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=50)
            for tp, recs in batches.items():
                self.records[tp.topic].extend(recs)

    async def wait_for(self, predicate, timeout_s: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self._task is not None and self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                counts = {t: len(r) for t, r in self.records.items()}
                raise TimeoutError(f"timed out waiting for {what}; have {counts}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def publish(kafka: KafkaSettings, topic: str, ticks: Iterable[Tick]) -> int:
    producer = make_producer(kafka)
    await producer.start()
    try:
        futs = [await producer.send(topic, t.to_bytes(), key=t.symbol.encode()) for t in ticks]
        await asyncio.gather(*futs)
        return len(futs)
    finally:
        await producer.stop()


@dataclass
class FleetEnv:
    """A private stack with the five services running as processes against it."""

    stack: EmbeddedStack
    fleet: Fleet
    registry: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kafka(self) -> KafkaSettings:
        return self.stack.kafka_settings

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        """Start a killed/stopped service again on the same HTTP port and wait until ready."""
        port = self.fleet.services[name].http_port
        self.fleet.start(name, port)
        self.fleet.wait_healthy(timeout_s, names=(name,))

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.fleet.services[name].proc.log_path
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def fleet_env_vars(registry: Path, **extra: str) -> dict[str, str]:
    """Settings for the service processes: 1 s bars, fast idle flush, tight staleness."""
    return {
        "GEODESIC_MODEL_REGISTRY": str(registry),
        "GEODESIC_FEATURE_BAR_SECONDS": "1",
        "GEODESIC_FEATURE_IDLE_FLUSH_GRACE_S": "0.3",
        "GEODESIC_RISK_SUPERVISOR_CHECKPOINT_INTERVAL_S": "0",
        "GEODESIC_SCORER_CONTROL_STALENESS_S": "1.0",
        # behaviour under faults, not staleness (test_stale_signals.py has the default)
        "GEODESIC_SCORER_MAX_SIGNAL_AGE_MS": "60000",
        "GEODESIC_SCORER_CONTROL_POLL_INTERVAL_S": "0.2",
        "GEODESIC_SHADOW_CONTROL_POLL_INTERVAL_S": "0.2",
        "GEODESIC_LOG_LEVEL": "INFO",
        **extra,
    }


@contextlib.asynccontextmanager
async def running_fleet(
    run_root: Path,
    registry: Path,
    *,
    model_id: str,
    seed: int,
    shadow: bool,
    env: Callable[[EmbeddedStack], dict[str, str]],
    names: tuple[str, ...] | None = None,
) -> AsyncIterator[FleetEnv]:
    """A private stack, a signed model active (and in the shadow slot if ``shadow``), and
    the services as processes with ``env(stack)`` on top of the stack's own variables."""
    from pipeline_support import fit_model

    fit_model(registry, model_id, seed=seed, n=1500)
    stack = EmbeddedStack(run_root=run_root, use_env=False)
    info = stack.start()
    client = aioredis.from_url(info.redis_url)
    plane = ControlPlane(client)
    await plane.promote(model_id, actor="test", reason="fault tests")
    if shadow:
        await plane.set_slot("shadow", model_id, actor="test", reason="parity shadow")
    await client.aclose()
    kwargs = {} if names is None else {"names": names}
    fleet = Fleet(stack.run_dir, {**info.env(), **env(stack)}, **kwargs)
    try:
        fleet.start_all()
        await asyncio.to_thread(fleet.wait_healthy, 90)
        yield FleetEnv(stack, fleet, registry)
    finally:
        fleet.stop_all()
        stack.stop()
