"""Sustained load through the five service processes: throughput, lag, memory, latency,
and a nothing-lost reconciliation at the end.

    python -m bench.load_sustained --rates 200 --phase-s 300          # 5 minutes at 200/s
    python -m bench.load_sustained --rates 50,100,200,400 --phase-s 60  # find the knee

Each rate is one phase on the same stack and fleet (started once, as `geodesic up` does).
Ticks carry the wall clock as their timestamp; an executor consumer reads signals.scored.
Per phase the report gives:

- throughput: ticks sent / s, ticks the collector received / s, signals / s;
- latency of every traced signal (the tick that closed its bar -> the signal), p50 / p90 /
  p99 / max, both end to end (tick sent -> executor received) and the scorer's own
  budget (collector ingest -> scorer published), plus per-hop medians;
- consumer lag of every service group per input topic, sampled every --sample-s from
  committed offsets against ``true_end_offsets`` (ListOffsets is wrong on this broker);
- RSS (from /proc/<pid>/status) and CPU share of each service, the broker and Redis.

The reconciliation checks that ticks sent == ticks the collector received == accepted,
and that every bar has a feature vector (after warm-up) and every vector a signal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bench.feed import RandomWalkFeed
from geodesic.contracts import ScoredSignal, load_topics
from geodesic.contracts.model_registry import ENV_MODEL_REGISTRY
from geodesic.contracts.services import COLLECTOR, FEATURE, SCORER, SERVICES
from geodesic.control import ControlPlane
from geodesic.features import WARMUP_BARS
from geodesic.lifecycle.bootstrap import ensure_model
from geodesic.runtime.kafka import (
    KafkaSettings,
    make_consumer,
    make_producer,
    read_to_end,
    true_end_offsets,
)
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import Fleet

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: service -> (consumer group, input topics)
GROUPS = {
    spec.name: (spec.group_id, [t.name for t in spec.topics("in")]) for spec in SERVICES.values()
}
RAW_TICKS = COLLECTOR.topic("in", "Tick")
SIGNALS = SCORER.topic("out", "ScoredSignal")
PARTITIONS = load_topics()[RAW_TICKS].partitions
PARTITIONS_OF = {name: spec.partitions for name, spec in load_topics().items()}
WINDOW_S = 30  # latency percentiles are also reported per window of this many seconds
HOPS = ("collector", "to_feature", "feature", "to_scorer", "scorer", "to_executor")


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)), 2) if values else None


def rss_mb(pid: int) -> float | None:
    """Resident set size from /proc/<pid>/status (VmRSS, kB)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def info(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=2) as resp:
        return json.loads(resp.read())


@dataclass
class Phase:
    rate: float
    started: float = 0.0
    ended: float = 0.0
    sent: int = 0
    max_send_lag_s: float = 0.0
    collector_received: tuple[int, int] = (0, 0)  # at start, at end
    signals: list[tuple[ScoredSignal, int]] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


class Sampler:
    """RSS, CPU share and consumer lag of named processes and groups, sampled periodically
    (the sustained-load bench and the soak share it)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        pids: dict[str, int],
        groups: dict[str, tuple[str, list[str]]],
        partitions: Mapping[str, int],
        *,
        tolerate_lag_errors: bool = False,
    ) -> None:
        self.kafka = kafka
        self.pids = pids
        self.groups = groups
        self.partitions = partitions  # topic -> partition count
        #: record an unreadable lag in the sample (a starving broker) instead of raising
        self.tolerate_lag_errors = tolerate_lag_errors
        self._cpu_last: dict[str, tuple[float, int]] = {}
        self._probes: dict[str, AIOKafkaConsumer] = {}

    def reset_cpu(self) -> None:
        """Start CPU shares afresh (the next sample primes the counters)."""
        self._cpu_last.clear()

    async def sample(self, t_s: float) -> dict:
        now = time.monotonic()
        doc: dict = {"t_s": round(t_s, 2), "rss_mb": {}, "cpu_pct": {}}
        for name, pid in self.pids.items():
            doc["rss_mb"][name] = rss_mb(pid)
            ticks = cpu_ticks(pid)
            last = self._cpu_last.get(name)
            if ticks is not None and last is not None and now > last[0]:
                doc["cpu_pct"][name] = round(100 * (ticks - last[1]) / CLK_TCK / (now - last[0]), 1)
            if ticks is not None:
                self._cpu_last[name] = (now, ticks)
        try:
            doc["lag"] = await asyncio.wait_for(self.lag(), 15.0)
        except (TimeoutError, KafkaError) as exc:
            if not self.tolerate_lag_errors:
                raise
            doc["lag"] = {}
            doc["lag_error"] = repr(exc)
        return doc

    async def lag(self) -> dict[str, int]:
        """Records not yet committed by each group (sum over its input partitions).

        Committed offsets are read by an idle consumer per group (it never joins, so it
        never triggers a rebalance): Tansu's answer to the admin client's OffsetFetch
        cannot be decoded by aiokafka.
        """
        topics = sorted({t for _group, inputs in self.groups.values() for t in inputs})
        tps = [TopicPartition(t, p) for t in topics for p in range(self.partitions[t])]
        ends = await true_end_offsets(self.kafka, tps)
        out: dict[str, int] = {}
        for name, (group, inputs) in self.groups.items():
            probe = self._probes.get(group)
            if probe is None:
                probe = make_consumer(self.kafka, group_id=group, enable_auto_commit=False)
                await probe.start()
                self._probes[group] = probe
            total = 0
            for tp, end in ends.items():
                if tp.topic in inputs:
                    total += end - ((await probe.committed(tp)) or 0)
            out[name] = total
        return out

    async def close(self) -> None:
        for probe in self._probes.values():
            await probe.stop()


class Bench:
    def __init__(self, args: argparse.Namespace, stack: EmbeddedStack, fleet: Fleet) -> None:
        self.args = args
        self.stack = stack
        self.fleet = fleet
        self.kafka: KafkaSettings = stack.kafka_settings
        self.symbols = [f"L{i:02d}" for i in range(args.symbols)]
        self.feed = RandomWalkFeed(self.symbols, "LOAD")
        self.sent_total = 0
        self.received: list[tuple[ScoredSignal, int]] = []
        self.pids = {n: s.proc.pid for n, s in fleet.services.items()}
        self.pids.update({f"{n}-server": p for n, p in stack.info.pids.items()})
        self.sampler = Sampler(self.kafka, self.pids, GROUPS, PARTITIONS_OF)

    async def read_signals(self) -> None:
        consumer = make_consumer(self.kafka, topics=[SIGNALS], group_id="bench-executor")
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=20)
                now = time.time_ns()
                for recs in batches.values():
                    self.received += [
                        (ScoredSignal.model_validate_json(r.value), now) for r in recs
                    ]
        finally:
            await consumer.stop()

    async def warm_up(self, producer) -> None:
        """Backfill WARMUP_BARS + 2 bars per symbol so feature vectors flow from the start."""
        bar_ns = self.args.bar_seconds * 1_000_000_000
        first = time.time_ns() // bar_ns - (WARMUP_BARS + 2)
        futs = []
        for b in range(WARMUP_BARS + 2):
            for sym in self.symbols:
                for j in range(4):
                    t = self.feed.tick(sym, (first + b) * bar_ns + j * bar_ns // 4)
                    futs.append(await producer.send(RAW_TICKS, t.to_bytes(), key=sym.encode()))
        await asyncio.gather(*futs)
        self.sent_total += len(futs)
        deadline = time.monotonic() + 120
        while len({s.symbol for s, _ in self.received}) < len(self.symbols):
            if time.monotonic() > deadline:
                raise TimeoutError("warm-up signals did not arrive")
            await asyncio.sleep(0.1)

    async def sample(self, phase: Phase) -> dict:
        return await self.sampler.sample(time.monotonic() - phase.started)

    async def lag(self) -> dict[str, int]:
        return await self.sampler.lag()

    async def close(self) -> None:
        await self.sampler.close()

    async def run_phase(self, producer, rate: float) -> Phase:
        phase = Phase(rate=rate)
        phase.collector_received = (self.collector_received(), 0)
        first_signal = len(self.received)
        interval = 1.0 / rate
        phase.started = time.monotonic()
        start = time.perf_counter()
        pending: list[asyncio.Future] = []
        next_sample = phase.started + self.args.sample_s
        self.sampler.reset_cpu()
        await self.sample(phase)  # primes the CPU counters
        while (elapsed := time.perf_counter() - start) < self.args.phase_s:
            due = int(elapsed / interval) + 1
            while phase.sent < due:
                sym = self.symbols[phase.sent % len(self.symbols)]
                t = self.feed.tick(sym, time.time_ns())
                pending.append(await producer.send(RAW_TICKS, t.to_bytes(), key=sym.encode()))
                phase.sent += 1
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending.clear()
            phase.max_send_lag_s = max(phase.max_send_lag_s, elapsed - phase.sent * interval)
            if time.monotonic() >= next_sample:
                next_sample += self.args.sample_s
                phase.samples.append(await self.sample(phase))
            await asyncio.sleep(min(interval * 5, 0.02))
        await asyncio.gather(*pending)
        phase.ended = time.monotonic()
        self.sent_total += phase.sent
        await self.drain()
        phase.collector_received = (phase.collector_received[0], self.collector_received())
        phase.signals = self.received[first_signal:]
        return phase

    def collector_received(self) -> int:
        return int(info(self.fleet.services[COLLECTOR.name].http_port)["counts"]["received"])

    async def drain(self, timeout_s: float = 60.0) -> None:
        """Wait until every group has committed everything (the last bars closed too)."""
        await asyncio.sleep(self.args.bar_seconds + 1.0)
        deadline = time.monotonic() + timeout_s
        while any((await self.lag()).values()):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)

    async def reconcile(self) -> dict:
        counts = info(self.fleet.services[COLLECTOR.name].http_port)["counts"]
        bars, vectors, signals = (
            {(d["symbol"], d["bar_index"]) for d in map(json.loads, (r.value for r in recs))}
            for recs in [
                await read_to_end(self.kafka, topic, timeout_s=120)
                for topic in (
                    FEATURE.topic("out", "Bar"),
                    FEATURE.topic("out", "FeatureVector"),
                    SIGNALS,
                )
            ]
        )
        by_symbol: dict[str, list[int]] = defaultdict(list)
        for sym, idx in bars:
            by_symbol[sym].append(idx)
        # the feature history needs WARMUP_BARS bars: the first WARMUP_BARS - 1 have none
        expected_vectors = {
            (sym, idx) for sym, idxs in by_symbol.items() for idx in sorted(idxs)[WARMUP_BARS - 1 :]
        }
        doc = {
            "ticks_sent": self.sent_total,
            "collector": counts,
            "bars": len(bars),
            "vectors": len(vectors),
            "signals": len(signals),
            "bars_without_vector": len(expected_vectors - vectors),
            "vectors_without_signal": len(vectors - signals),
        }
        doc["ok"] = (
            counts["received"] == self.sent_total
            and counts["accepted"] == self.sent_total
            and counts["dlq"] == 0
            and vectors == expected_vectors
            and signals == vectors
        )
        return doc


def summarize(phase: Phase) -> dict:
    hops: dict[str, list[float]] = {k: [] for k in HOPS}
    e2e: list[float] = []
    budget: list[float] = []
    windows: dict[int, list[float]] = defaultdict(list)
    start_ns = time.time_ns() - int((time.monotonic() - phase.started) * 1e9)
    for s, got in phase.signals:
        h = s.hops
        if "collector" not in h or "tick_ts" not in h:
            continue  # closed by the idle flush: no tick to trace
        windows[int((got - start_ns) / 1e9 // WINDOW_S)].append((got - h["tick_ts"]) / 1e6)
        hops["collector"].append((h["collector"] - h["tick_ts"]) / 1e6)
        hops["to_feature"].append((h["feature_in"] - h["collector"]) / 1e6)
        hops["feature"].append((h["feature_out"] - h["feature_in"]) / 1e6)
        hops["to_scorer"].append((h["scorer_in"] - h["feature_out"]) / 1e6)
        hops["scorer"].append((h["scorer_out"] - h["scorer_in"]) / 1e6)
        hops["to_executor"].append((got - h["scorer_out"]) / 1e6)
        e2e.append((got - h["tick_ts"]) / 1e6)
        budget.append((h["scorer_out"] - h["collector"]) / 1e6)
    seconds = max(phase.ended - phase.started, 1e-9)
    samples = phase.samples
    rss = defaultdict(list)
    cpu = defaultdict(list)
    for smp in samples:
        for k, v in smp["rss_mb"].items():
            if v is not None:
                rss[k].append(v)
        for k, v in smp["cpu_pct"].items():
            cpu[k].append(v)
    return {
        "rate_target": phase.rate,
        "seconds": round(seconds, 1),
        "ticks_sent": phase.sent,
        "ticks_per_s": round(phase.sent / seconds, 1),
        "collector_received_per_s": round(
            (phase.collector_received[1] - phase.collector_received[0]) / seconds, 1
        ),
        "signals_per_s": round(len(phase.signals) / seconds, 2),
        "max_send_lag_s": round(phase.max_send_lag_s, 3),
        "traced_signals": len(e2e),
        "e2e_ms": {q: pct(e2e, float(q[1:])) for q in ("p50", "p90", "p99")}
        | {"max": pct(e2e, 100)},
        "ingest_to_signal_ms": {q: pct(budget, float(q[1:])) for q in ("p50", "p90", "p99")}
        | {"max": pct(budget, 100)},
        "hop_p50_ms": {k: pct(v, 50) for k, v in hops.items()},
        # e2e per WINDOW_S of the phase: a creeping p99 shows a leak or a growing backlog
        "e2e_by_window_ms": [
            {"t_s": w * WINDOW_S, "n": len(v), "p50": pct(v, 50), "p99": pct(v, 99)}
            for w, v in sorted(windows.items())
        ],
        "lag_max": {k: max((s["lag"].get(k, 0) for s in samples), default=0) for k in GROUPS},
        "lag_last": samples[-1]["lag"] if samples else {},
        "rss_mb": {k: {"first": v[0], "last": v[-1], "max": max(v)} for k, v in rss.items()},
        "cpu_pct_mean": {k: round(sum(v) / len(v), 1) for k, v in cpu.items() if v},
        "samples": samples,
    }


async def drive(args: argparse.Namespace, stack: EmbeddedStack, fleet: Fleet) -> dict:
    bench = Bench(args, stack, fleet)
    reader = asyncio.create_task(bench.read_signals())
    producer = make_producer(bench.kafka)
    await producer.start()
    phases = []
    try:
        await bench.warm_up(producer)
        for rate in args.rates:
            phase = await bench.run_phase(producer, rate)
            summary = summarize(phase)
            phases.append(summary)
            brief = {k: v for k, v in summary.items() if k != "samples"}
            print(json.dumps(brief), file=sys.stderr, flush=True)
        await bench.drain()
        reconciliation = await bench.reconcile()
    finally:
        await producer.stop()
        await bench.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return {
        "config": {
            "symbols": args.symbols,
            "bar_seconds": args.bar_seconds,
            "phase_s": args.phase_s,
            "sample_s": args.sample_s,
            "budgets_ms": args.budgets,
        },
        "phases": phases,
        "held": held(phases, args.budgets),
        "reconciliation": reconciliation,
    }


def held(phases: list[dict], budgets: list[float]) -> dict:
    """The highest rate whose e2e p99 stayed under each budget (and kept up: no lag left)."""
    out = {}
    for budget in budgets:
        ok = [
            p["rate_target"]
            for p in phases
            if p["e2e_ms"]["p99"] is not None
            and p["e2e_ms"]["p99"] <= budget
            and p["ticks_per_s"] >= 0.95 * p["rate_target"]
        ]
        out[f"p99<={budget:g}ms"] = max(ok) if ok else None
    return out


async def activate(redis_url: str, model_id: str) -> None:
    client = aioredis.from_url(redis_url)
    await ControlPlane(client).promote(model_id, actor="bench", reason="load bench")
    await client.aclose()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="200", help="ticks/s per phase, comma separated")
    ap.add_argument("--phase-s", type=float, default=300.0, help="seconds per rate")
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--bar-seconds", type=int, default=1)
    ap.add_argument("--sample-s", type=float, default=5.0, help="lag / RSS sampling period")
    ap.add_argument("--budgets", default="25,100", help="e2e p99 budgets (ms) to report")
    ap.add_argument("--registry", type=Path, default=None, help="model registry to reuse")
    ap.add_argument("--out", type=Path, default=None, help="write the full JSON report here")
    args = ap.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    args.budgets = [float(b) for b in args.budgets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        registry = args.registry or Path(tmp) / "registry"
        model_id = ensure_model(registry, reports_root=Path(tmp) / "reports")
        stack = EmbeddedStack(run_root=Path(tmp) / "run", use_env=False)
        info_ = stack.start()
        fleet = Fleet(
            stack.run_dir,
            {
                **info_.env(),
                ENV_MODEL_REGISTRY: str(registry.resolve()),
                f"{FEATURE.env_prefix}BAR_SECONDS": str(args.bar_seconds),
                "GEODESIC_LOG_LEVEL": "WARNING",
            },
        )
        try:
            asyncio.run(activate(info_.redis_url, model_id))
            fleet.start_all()
            fleet.wait_healthy(120)
            result = asyncio.run(drive(args, stack, fleet))
            result["config"]["model_id"] = model_id
        finally:
            fleet.stop_all()
            stack.stop()
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    brief = {k: v for k, v in result.items() if k != "phases"}
    brief["phases"] = [{k: v for k, v in p.items() if k != "samples"} for p in result["phases"]]
    print(json.dumps(brief, indent=2))
    return result


if __name__ == "__main__":
    main()
