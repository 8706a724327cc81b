"""Cost per record: each service's processing capacity, no broker (`python -m bench.capacity`).

Every service's processor is fed in-process, batch by batch, the way the stream loop feeds
it (process, then checkpoint with the next offsets of every assigned partition), and the
bench reports records per second per core: records / process CPU seconds (not wall time, so
the other tenants of a shared machine do not count). Records are realistic: replayed ticks
(geodesic.marketdata.replay of a synthetic market, several symbols over several
partitions) for the collector; the collector's own output for the feature service; the
feature service's real vectors for the scorer (model fitted like
tests/integration/pipeline_support.fit_model) and shadow; signals, bars and vectors for the
risk supervisor. Checkpoints go to a real Redis (GEODESIC_REDIS_URL, or a redis-server
started here on a free loopback port and stopped by PID), since that is where the
services spend their checkpoint time. The core is measured by bench.core_scoring (batch
events/s, single-event p50/p99, recall@32 vs exact search at 200k x 16).

Numbers are noisy on a shared machine: compare rows within one run, or runs taken back to
back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from bench import core_scoring
from collector.processor import CollectorMetrics, CollectorProcessor
from collector.validation import ValidationPolicy, expected_partition
from feature.processor import FeatureMetrics, FeatureProcessor
from geodesic.contracts import FeatureVector, ScoredSignal
from geodesic.contracts.services import COLLECTOR, FEATURE, RISK_SUPERVISOR
from geodesic.control.state import ControlSnapshot
from geodesic.features import FEATURE_NAMES, SCHEMA_HASH
from geodesic.marketdata.replay import ReplayConfig, backfill_start_ns, interleave, replay_ticks
from geodesic.marketdata.synthetic import SyntheticConfig, generate_market
from geodesic.risk.guards import RolloutGuardConfig
from geodesic.runtime.checkpoint import CheckpointStore
from geodesic.runtime.deadletters import DeadLetterSink
from geodesic.runtime.pipeline import Output
from geodesic.stack.embedded import redis_server_binary
from lorentzcore.kernels import KernelConfig
from lorentzcore.model import AnalogModel, ScorerParams
from lorentzcore.scorer import Scorer
from risk_supervisor.processor import RiskMetrics, RiskProcessor
from scorer.processor import ScorerMetrics, ScorerProcessor
from shadow.processor import ShadowMetrics, ShadowProcessor

MODEL = "m-capacity"
T_RAW, T_TICKS, T_BARS, T_FEATURES, T_SIGNALS = "raw", "ticks", "bars", "features", "signals"


# --- inputs ---------------------------------------------------------------------------------


def replayed_ticks(symbols: int, bars: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of replayed ticks of ``symbols`` synthetic markets, in time order."""
    t0 = backfill_start_ns(time.time_ns(), 1, bars)
    streams = []
    for i in range(symbols):
        series, _truth = generate_market(
            SyntheticConfig(n_bars=bars, seed=seed + i, symbol=f"S{i:02d}")
        )
        streams.append(replay_ticks(series, ReplayConfig(bar_seconds=1, seed=seed), t0_ns=t0))
    return [(t.symbol.encode(), t.to_bytes()) for t in interleave(*streams)]


def by_partition(
    topic: str, messages: Sequence[tuple[bytes, bytes]], partitions: int
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """Records as the broker would hold them: keyed by symbol with the default partitioner."""
    parts: dict[TopicPartition, list[ConsumerRecord]] = {
        TopicPartition(topic, p): [] for p in range(partitions)
    }
    for key, value in messages:
        tp = TopicPartition(topic, expected_partition(key, partitions))
        recs = parts[tp]
        offset = len(recs)
        recs.append(ConsumerRecord(topic, tp.partition, offset, 0, 0, key, value, None, 0, 0, ()))
    return {tp: recs for tp, recs in parts.items() if recs}


def batches(
    parts: dict[TopicPartition, list[ConsumerRecord]], size: int
) -> list[tuple[TopicPartition, list[ConsumerRecord]]]:
    """Round-robin over partitions, ``size`` records at a time, like a consumer's fetches."""
    out = []
    cursors = dict.fromkeys(parts, 0)
    while cursors:
        for tp in list(cursors):
            start = cursors[tp]
            chunk = parts[tp][start : start + size]
            out.append((tp, chunk))
            if start + size >= len(parts[tp]):
                del cursors[tp]
            else:
                cursors[tp] = start + size
    return out


def outputs_of(outputs: Sequence[Output], topic: str) -> list[tuple[bytes, bytes]]:
    return [(o.key or b"", o.value) for o in outputs if o.topic == topic]


# --- harness --------------------------------------------------------------------------------


async def drive(
    proc: Any, work: list[tuple[TopicPartition, list[ConsumerRecord]]], checkpoint: bool = True
) -> tuple[float, list[Output]]:
    """Feed ``work`` batch by batch, checkpointing every assigned partition after each batch
    like the stream loop; returns (process CPU seconds, outputs)."""
    outputs: list[Output] = []
    positions: dict[TopicPartition, int] = {}
    cpu0 = time.process_time()
    for tp, recs in work:
        outputs.extend(await proc.process(tp, recs))
        positions[tp] = recs[-1].offset + 1
        if checkpoint:
            await proc.checkpoint(dict(positions))
    return time.process_time() - cpu0, outputs


def sink() -> DeadLetterSink:
    return DeadLetterSink("pdlq", CollectorRegistry(), service="capacity")


class FixedWatcher:
    """The control plane as the scorer and shadow see it between flips: one snapshot."""

    def __init__(self) -> None:
        self.snapshot = ControlSnapshot(active=MODEL, shadow=MODEL)

    def current(self) -> ControlSnapshot:
        return self.snapshot

    @property
    def last_snapshot(self) -> ControlSnapshot:
        return self.snapshot

    async def ensure_fresh(self) -> ControlSnapshot:
        return self.snapshot


class OneModel:
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def get(self, model_id: str | None) -> Scorer | None:
        return self.scorer if model_id == MODEL else None


def fit_model(directory: Path, n: int, seed: int = 0) -> AnalogModel:
    """The model tests/integration/pipeline_support.fit_model fits, with ``n`` rows."""
    rng = np.random.default_rng(seed)
    d = len(FEATURE_NAMES)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + 0.5 * rng.standard_normal(n) > 0).astype(np.float32)
    return AnalogModel.fit(
        X,
        y,
        np.arange(n),
        directory=directory / MODEL,
        model_id=MODEL,
        feature_names=FEATURE_NAMES,
        schema_hash=SCHEMA_HASH,
        kernel=KernelConfig(period=5.0),
        params=ScorerParams(k=16, k_cand=64),
    )


# --- Redis ----------------------------------------------------------------------------------


class LocalRedis:
    """GEODESIC_REDIS_URL, or a throwaway redis-server on loopback stopped by its PID."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: str | None = None
        self.url = os.environ.get("GEODESIC_REDIS_URL", "")

    def __enter__(self) -> str:
        if self.url:
            return self.url
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="capacity-redis-")
        argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", self.dir]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{port}/0"
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- services -------------------------------------------------------------------------------


async def warm_up(parts: dict[TopicPartition, list[ConsumerRecord]], partitions: int) -> None:
    """Run the collector and feature code once on a prefix, so no timing includes loading
    compiled kernels or first-call caches."""
    head = {tp: recs[:500] for tp, recs in parts.items()}
    collector = CollectorProcessor(
        policy=ValidationPolicy(),
        out_topic=T_TICKS,
        dead_letters=sink(),
        checkpoints=None,
        metrics=CollectorMetrics(CollectorRegistry()),
    )
    _cpu, out = await drive(collector, batches(head, 50), checkpoint=False)
    feature = FeatureProcessor(
        bar_seconds=1,
        price_source="last",
        bars_topic=T_BARS,
        features_topic=T_FEATURES,
        idle_flush_grace_s=None,
        checkpoints=None,
        metrics=FeatureMetrics(CollectorRegistry()),
        dead_letters=sink(),
    )
    ticks = by_partition(T_TICKS, outputs_of(out, T_TICKS), partitions)
    await drive(feature, batches(ticks, 50), checkpoint=False)


def rate(n: int, cpu_s: float) -> float:
    return n / cpu_s if cpu_s > 0 else float("inf")


async def measure_services(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    client = aioredis.from_url(redis_url)
    prefix = f"capacity-{os.getpid()}"
    rows: dict[str, Any] = {}
    try:
        raw = replayed_ticks(args.symbols, args.bars, args.seed)
        raw_parts = by_partition(T_RAW, raw, args.partitions)
        n_raw = sum(len(r) for r in raw_parts.values())

        await warm_up(raw_parts, args.partitions)
        collector = CollectorProcessor(
            policy=ValidationPolicy(),
            out_topic=T_TICKS,
            dead_letters=sink(),
            checkpoints=CheckpointStore(client, COLLECTOR.name, prefix),
            metrics=CollectorMetrics(CollectorRegistry()),
            partitions_for=lambda topic: args.partitions,
        )
        await collector.on_assigned(set(raw_parts))
        cpu, out = await drive(collector, batches(raw_parts, args.batch))
        assert collector.counts["accepted"] == n_raw, collector.counts
        rows["collector"] = {"records": n_raw, "cpu_s": cpu, "per_core_s": rate(n_raw, cpu)}

        tick_parts = by_partition(T_TICKS, outputs_of(out, T_TICKS), args.partitions)
        feature = FeatureProcessor(
            bar_seconds=1,
            price_source="last",
            bars_topic=T_BARS,
            features_topic=T_FEATURES,
            idle_flush_grace_s=None,
            checkpoints=CheckpointStore(client, FEATURE.name, prefix),
            metrics=FeatureMetrics(CollectorRegistry()),
            dead_letters=sink(),
        )
        await feature.on_assigned(set(tick_parts))
        cpu, fout = await drive(feature, batches(tick_parts, args.batch))
        rows["feature"] = {"records": n_raw, "cpu_s": cpu, "per_core_s": rate(n_raw, cpu)}
        cpu_nc, _ = await drive(
            FeatureProcessor(
                bar_seconds=1,
                price_source="last",
                bars_topic=T_BARS,
                features_topic=T_FEATURES,
                idle_flush_grace_s=None,
                checkpoints=None,
                metrics=FeatureMetrics(CollectorRegistry()),
                dead_letters=sink(),
            ),
            batches(tick_parts, args.batch),
            checkpoint=False,
        )
        rows["feature (no checkpoint)"] = {
            "records": n_raw,
            "cpu_s": cpu_nc,
            "per_core_s": rate(n_raw, cpu_nc),
        }

        vectors = outputs_of(fout, T_FEATURES)
        bars = outputs_of(fout, T_BARS)
        vec_parts = by_partition(T_FEATURES, vectors, args.partitions)
        n_vec = len(vectors)
        with tempfile.TemporaryDirectory() as tmp:
            scorer = Scorer(fit_model(Path(tmp), args.model_rows))
            for _key, value in vectors[:100]:  # compiled kernels and caches warm
                fv = FeatureVector.from_bytes(value)
                scorer.score(np.asarray(fv.values), fv.bar_index)
            models = OneModel(scorer)
            for label, size in (("scorer (1 record/batch)", 1), ("scorer", args.batch)):
                proc = ScorerProcessor(
                    watcher=FixedWatcher(),  # type: ignore[arg-type]
                    models=models,  # type: ignore[arg-type]
                    out_topic=T_SIGNALS,
                    dead_letters=sink(),
                    metrics=ScorerMetrics(CollectorRegistry()),
                )
                cpu, sout = await drive(proc, batches(vec_parts, size))
                assert proc.counts["out"] == n_vec, proc.counts
                rows[label] = {"records": n_vec, "cpu_s": cpu, "per_core_s": rate(n_vec, cpu)}
            signals = outputs_of(sout, T_SIGNALS)

            shadow = ShadowProcessor(
                watcher=FixedWatcher(),  # type: ignore[arg-type]
                models=models,  # type: ignore[arg-type]
                features_topic=T_FEATURES,
                live_topic=T_SIGNALS,
                out_topic="shadow",
                metrics=ShadowMetrics(CollectorRegistry()),
                dead_letters=sink(),
            )
            sig_parts = by_partition(T_SIGNALS, signals, args.partitions)
            work = batches(sig_parts, args.batch) + batches(vec_parts, args.batch)
            cpu, _ = await drive(shadow, work)
            assert shadow.counts["joined"] == n_vec, shadow.counts
            n = n_vec + len(signals)
            rows["shadow"] = {"records": n, "cpu_s": cpu, "per_core_s": rate(n, cpu)}

            risk = RiskProcessor(
                redis=client,
                prefix=prefix,
                checkpoints=CheckpointStore(client, RISK_SUPERVISOR.name, prefix),
                signals_topic=T_SIGNALS,
                bars_topic=T_BARS,
                features_topic=T_FEATURES,
                outcomes_topic="outcomes",
                control_topic="control",
                horizon_bars=5,
                cost_bp=1.0,
                winrate_window=500,
                checkpoint_interval_s=1.0,
                guard=RolloutGuardConfig(),
                registry_root=Path(tmp),
                drift_window=500,
                metrics=RiskMetrics(CollectorRegistry()),
                dead_letters=sink(),
            )
            bar_parts = by_partition(T_BARS, bars, args.partitions)
            # signals first, then the bars that label them, then the vectors (drift)
            work = (
                batches(sig_parts, args.batch)
                + batches(bar_parts, args.batch)
                + batches(vec_parts, args.batch)
            )
            cpu, _ = await drive(risk, work)
            n = len(signals) + len(bars) + n_vec
            assert risk.counts["invalid"] == 0, risk.counts
            rows["risk supervisor"] = {"records": n, "cpu_s": cpu, "per_core_s": rate(n, cpu)}
        assert all(ScoredSignal.from_bytes(v).model_id == MODEL for _, v in signals[:10])
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return rows


# --- report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=8, help="synthetic symbols replayed")
    ap.add_argument("--bars", type=int, default=300, help="1-second bars per symbol")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of every topic")
    ap.add_argument("--batch", type=int, default=50, help="records per process() call")
    ap.add_argument("--model-rows", type=int, default=20_000, help="rows of the scorer's model")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic markets")
    ap.add_argument("--core-n", type=int, default=200_000, help="core index size (0: skip)")
    ap.add_argument("--core-queries", type=int, default=2000, help="core queries timed")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)

    with LocalRedis() as url:
        rows = asyncio.run(measure_services(args, url))
    core = None
    if args.core_n:
        core = core_scoring.main(
            ["--n", str(args.core_n), "--queries", str(args.core_queries), "--json"]
        )
    result = {"args": vars(args), "services": rows, "core": core}
    if args.json:
        print(json.dumps(result))
        return result
    print(
        f"capacity, {args.symbols} symbols x {args.bars} bars over {args.partitions} partitions, "
        f"{args.batch} records per batch, checkpoint after every batch (real Redis)"
    )
    print(f"  {'service':<26}{'records':>9}{'CPU s':>9}{'records/s per core':>20}")
    for name, row in rows.items():
        print(f"  {name:<26}{row['records']:>9}{row['cpu_s']:>9.2f}{row['per_core_s']:>20,.0f}")
    if core is not None:
        c = core["served"]
        print(
            f"  core {core['n']} x {core['d']}, K={core['k']}, {c['metric']}, "
            f"ef_search={c['ef_search']}, K_cand={c['k_cand']}:"
        )
        print(
            f"    batch scoring, 1 thread    {c['batch_1t_events_per_s']:,} events/s wall, "
            f"{c['batch_1t_events_per_cpu_s']:,} per CPU second"
        )
        print(
            f"    single event p50 / p99     {c['single_p50_us']} / {c['single_p99_us']} us wall, "
            f"{c['single_cpu_p50_us']} / {c['single_cpu_p99_us']} us CPU"
        )
        print(f"    recall@{core['k']} vs exact         {c['recall_at_k_vs_exact_lorentz']}")
        print(f"    batch us per event by stage {c['batch_us_per_event']}")
    return result


if __name__ == "__main__":
    main()
