"""Soak: one fixed tick rate held for 30-60 minutes, reported per 1-minute window, with
the floor (a bare relay with the same hops on the same broker) beside it.

    python -m bench.soak --broker kafka --rate 5000 --minutes 30 --floor-minutes 10
    python -m bench.soak --broker tansu --rate 1000 --minutes 5 --floor-minutes 5

Geodesic: the five services as processes (as ``geodesic up`` runs them) on a private
embedded stack; ticks carry the wall clock; an executor consumer reads signals.scored.
Floor: a fresh stack of the same broker, three ``bench.relay`` processes (tick hop at the
full rate, then the bar-closing records only, as the feature service emits them, then one
more hop) and the same executor consumer: what the broker and the client settings cost
before any service does work.

Per window, for both: ticks/s sent and passed by the first hop, signals (or relayed
closing records) per s, e2e p50/p99 of the records that reached the executor, the
largest consumer lag seen (records not yet committed), RSS at the window's end and mean
CPU of each process. At the end: nothing lost (every tick accepted, every bar scored;
for the floor, every record relayed) and, per budget, whether p99 held in every window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from bench import load_sustained as ls
from bench.feed import RandomWalkFeed
from bench.relay import CLOSING
from geodesic.contracts import load_topics
from geodesic.contracts.model_registry import ENV_MODEL_REGISTRY
from geodesic.contracts.services import FEATURE, SCORER
from geodesic.lifecycle.bootstrap import ensure_model
from geodesic.runtime.kafka import (
    KafkaSettings,
    make_consumer,
    make_producer,
    true_end_offsets,
)
from geodesic.stack import EmbeddedStack
from geodesic.stack.fleet import Fleet
from geodesic.stack.topics import TopicShape, ensure_topics

TOPICS = load_topics()
#: the floor's hops, partitioned like the services' topics they stand in for
FLOOR_HOPS = (
    ("floor.ticks.raw", TOPICS[ls.RAW_TICKS].partitions),
    ("floor.ticks", TOPICS[FEATURE.topic("in", "Tick")].partitions),
    ("floor.features", TOPICS[SCORER.topic("in", "FeatureVector")].partitions),
    ("floor.signals", TOPICS[ls.SIGNALS].partitions),
)
#: relay process -> (source, sink, closing only)
FLOOR_RELAYS = {
    "relay-collector": (FLOOR_HOPS[0][0], FLOOR_HOPS[1][0], False),
    "relay-feature": (FLOOR_HOPS[1][0], FLOOR_HOPS[2][0], True),
    "relay-scorer": (FLOOR_HOPS[2][0], FLOOR_HOPS[3][0], False),
}


@dataclass
class Run:
    """Samples and deliveries of one run (Geodesic or floor)."""

    start_ns: int = 0
    sent: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: (received at, e2e ms) of every record the executor read that can be traced
    delivered: list[tuple[int, float]] = field(default_factory=list)


def windows(run: Run, window_s: float, pids: list[str]) -> list[dict[str, Any]]:
    """Per-window rows from the periodic samples (counters) and the delivered records."""
    rows: list[dict[str, Any]] = []
    samples = run.samples
    if len(samples) < 2:
        return rows
    by_window: dict[int, list[float]] = {}
    for got_ns, e2e_ms in run.delivered:
        w = int((got_ns - run.start_ns) / 1e9 // window_s)
        by_window.setdefault(w, []).append(e2e_ms)
    n_windows = int(samples[-1]["t_s"] // window_s)
    for w in range(n_windows):
        lo, hi = w * window_s, (w + 1) * window_s
        inside = [s for s in samples if lo <= s["t_s"] <= hi + 1e-6]
        if len(inside) < 2:
            continue
        first, last = inside[0], inside[-1]
        dt = max(last["t_s"] - first["t_s"], 1e-9)
        e2e = by_window.get(w, [])
        row: dict[str, Any] = {
            "minute": round(hi / 60, 2),
            "sent_per_s": round((last["sent"] - first["sent"]) / dt, 1),
            "first_hop_per_s": round((last["through"] - first["through"]) / dt, 1),
            "delivered_per_s": round(len(e2e) / window_s, 2),
            "e2e_p50_ms": ls.pct(e2e, 50),
            "e2e_p99_ms": ls.pct(e2e, 99),
            "e2e_max_ms": ls.pct(e2e, 100),
            "lag_max": max(sum(s["lag"].values()) for s in inside),
            "lag_unreadable_samples": sum("lag_error" in s for s in inside),
            "rss_mb": {p: last["rss_mb"].get(p) for p in pids},
            "cpu_pct": {
                p: round(float(np.mean(v)), 1)
                for p in pids
                if (v := [s["cpu_pct"][p] for s in inside[1:] if p in s["cpu_pct"]])
            },
        }
        rows.append(row)
    return rows


def verdict(rows: list[dict[str, Any]], rate: float, budgets: list[float]) -> dict[str, Any]:
    """Did every window keep the rate (>= 95 % sent and passed) and each p99 budget?"""
    kept = all(r["sent_per_s"] >= 0.95 * rate and r["first_hop_per_s"] >= 0.95 * rate for r in rows)
    p99s = [r["e2e_p99_ms"] for r in rows if r["e2e_p99_ms"] is not None]
    return {
        "windows": len(rows),
        "rate_kept_every_window": kept and bool(rows),
        "worst_window_p99_ms": max(p99s) if p99s else None,
        "median_window_p99_ms": float(np.median(p99s)) if p99s else None,
        **{f"p99<{b:g}ms_every_window": bool(p99s) and all(p < b for p in p99s) for b in budgets},
    }


async def paced(
    run: Run,
    rate: float,
    seconds: float,
    send_one: Any,
    sample: Any,
    sample_s: float,
    progress: Any,
) -> None:
    """Call ``send_one`` ``rate`` times a second for ``seconds``, sampling every
    ``sample_s`` in a task of its own: a sample (end offsets, committed offsets of every
    group) takes a few hundred ms, and taken inline it paused the feed that long every
    ``sample_s``, then let it catch up in one burst."""
    interval = 1.0 / rate
    run.start_ns = time.time_ns()
    start = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    run.samples.append(await sample(0.0))

    async def sampling() -> None:
        n = 1
        while True:
            await asyncio.sleep(max(0.0, start + n * sample_s - time.perf_counter()))
            run.samples.append(await sample(time.perf_counter() - start))
            if progress is not None and len(run.samples) % max(1, int(60 / sample_s)) == 1:
                progress(run)
            n += 1

    sampler = asyncio.create_task(sampling())
    try:
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed / interval) + 1
            while run.sent < due:
                pending.append(await send_one())
                run.sent += 1
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(min(interval * 5, 0.02))
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    await asyncio.gather(*pending)
    run.samples.append(await sample(time.perf_counter() - start))


def _progress(label: str, window_s: float) -> Any:
    def show(run: Run) -> None:
        recent = [e for got, e in run.delivered if got > time.time_ns() - window_s * 1e9]
        print(
            f"[{label}] t={run.samples[-1]['t_s']:.0f}s sent={run.sent}"
            f" last-window p50/p99={ls.pct(recent, 50)}/{ls.pct(recent, 99)} ms"
            f" lag={run.samples[-1]['lag']}",
            file=sys.stderr,
            flush=True,
        )

    return show


# ------------------------------------------------------------------------ Geodesic


async def soak_geodesic(args: argparse.Namespace, stack: EmbeddedStack, fleet: Fleet) -> dict:
    bench = ls.Bench(
        argparse.Namespace(symbols=args.symbols, bar_seconds=1, sample_s=args.sample_s),
        stack,
        fleet,
    )
    sampler = ls.Sampler(
        bench.kafka, bench.pids, ls.GROUPS, ls.PARTITIONS_OF, tolerate_lag_errors=True
    )
    run = Run()
    reader = asyncio.create_task(bench.read_signals())
    producer = make_producer(bench.kafka)
    await producer.start()
    try:
        await bench.warm_up(producer)
        symbols = bench.symbols

        async def send_one() -> asyncio.Future[Any]:
            sym = symbols[run.sent % len(symbols)]
            tick = bench.feed.tick(sym, time.time_ns())
            return await producer.send(ls.RAW_TICKS, tick.to_bytes(), key=sym.encode())

        seen = [len(bench.received)]

        def collect() -> None:
            """Traced signals (the tick that closed the bar -> the executor) of this run."""
            fresh, seen[0] = bench.received[seen[0] :], len(bench.received)
            for sig, got in fresh:
                tick_ts = sig.hops.get("tick_ts")
                if tick_ts is not None and "collector" in sig.hops and tick_ts >= run.start_ns:
                    run.delivered.append((got, (got - tick_ts) / 1e6))

        async def sample(t_s: float) -> dict[str, Any]:
            doc = await sampler.sample(t_s)
            doc["sent"] = run.sent
            doc["through"] = await asyncio.to_thread(bench.collector_received)
            collect()
            return doc

        base_through = bench.collector_received()
        try:
            await paced(
                run,
                args.rate,
                args.minutes * 60,
                send_one,
                sample,
                args.sample_s,
                _progress(f"geodesic {args.broker} {args.rate:g}/s", args.window_s),
            )
            bench.sent_total += run.sent
            await bench.drain(timeout_s=120)
            collect()
            reconciliation = await bench.reconcile()
            reconciliation["collector_received_in_run"] = bench.collector_received() - base_through
        except Exception as exc:  # a starving broker: keep the windows measured so far
            collect()
            reconciliation = {"ok": False, "error": repr(exc)}
    finally:
        await producer.stop()
        await sampler.close()
        await bench.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    rows = windows(run, args.window_s, list(bench.pids))
    return {
        "windows": rows,
        "verdict": verdict(rows, args.rate, args.budgets),
        "nothing_lost": reconciliation["ok"],
        "reconciliation": reconciliation,
    }


def run_geodesic(args: argparse.Namespace, tmp: Path) -> dict:
    registry = tmp / "registry"
    model_id = ensure_model(registry, reports_root=tmp / "reports")
    stack = EmbeddedStack(run_root=tmp / "run", use_env=False, broker=args.broker)
    info = stack.start()
    fleet = Fleet(
        stack.run_dir,
        {
            **info.env(),
            ENV_MODEL_REGISTRY: str(registry.resolve()),
            f"{FEATURE.env_prefix}BAR_SECONDS": "1",
            "GEODESIC_LOG_LEVEL": "WARNING",
        },
    )
    try:
        asyncio.run(ls.activate(info.redis_url, model_id))
        fleet.start_all()
        fleet.wait_healthy(120)
        return asyncio.run(soak_geodesic(args, stack, fleet))
    finally:
        fleet.stop_all()
        stack.stop()


# --------------------------------------------------------------------------- floor


async def soak_floor(args: argparse.Namespace, kafka: KafkaSettings, pids: dict[str, int]) -> dict:
    groups = {
        name: (f"floor-{name}", [source]) for name, (source, _sink, _c) in FLOOR_RELAYS.items()
    }
    sampler = ls.Sampler(kafka, pids, groups, dict(FLOOR_HOPS), tolerate_lag_errors=True)
    symbols = [f"L{i:02d}" for i in range(args.symbols)]
    feed = RandomWalkFeed(symbols, "FLOOR")
    last_second: dict[str, int] = {}
    run = Run()
    closing_sent = 0
    producer = make_producer(kafka)
    executor = make_consumer(kafka, topics=[FLOOR_HOPS[-1][0]], group_id="floor-executor")
    await producer.start()
    await executor.start()

    async def read() -> None:
        while True:
            batches = await executor.getmany(timeout_ms=20)
            now = time.time_ns()
            for recs in batches.values():
                for r in recs:
                    sent_ns = int(dict(r.headers)["sent_ns"])
                    if sent_ns >= run.start_ns > 0:
                        run.delivered.append((now, (now - sent_ns) / 1e6))
                    else:
                        warm_delivered[0] += 1

    warm_delivered = [0]
    reader = asyncio.create_task(read())

    async def send(sym: str, closing: bool) -> asyncio.Future[Any]:
        now = time.time_ns()
        headers = [("sent_ns", str(now).encode())]
        if closing:
            headers.append((CLOSING, b"1"))
        tick = feed.tick(sym, now)
        return await producer.send(
            FLOOR_HOPS[0][0], tick.to_bytes(), key=sym.encode(), headers=headers
        )

    try:
        # warm-up: closing records until every relay passes them on (groups joined)
        deadline = time.monotonic() + 120
        warm_sent = 0
        while warm_delivered[0] < len(symbols):
            if time.monotonic() > deadline:
                raise TimeoutError("the floor's relays did not start passing records")
            for sym in symbols:
                await (await send(sym, True))
                warm_sent += 1
            await asyncio.sleep(0.5)

        async def send_one() -> asyncio.Future[Any]:
            nonlocal closing_sent
            sym = symbols[run.sent % len(symbols)]
            second = time.time_ns() // 1_000_000_000
            closing = last_second.get(sym, second) != second
            last_second[sym] = second
            closing_sent += closing
            return await send(sym, closing)

        hop1 = [TopicPartition(FLOOR_HOPS[1][0], p) for p in range(FLOOR_HOPS[1][1])]

        async def through() -> int:
            return sum((await true_end_offsets(kafka, hop1)).values()) - warm_sent

        async def sample(t_s: float) -> dict[str, Any]:
            doc = await sampler.sample(t_s)
            doc["sent"] = run.sent
            doc["through"] = await through()
            return doc

        await paced(
            run,
            args.rate,
            args.floor_minutes * 60,
            send_one,
            sample,
            args.sample_s,
            _progress(f"floor {args.broker} {args.rate:g}/s", args.window_s),
        )
        deadline = time.monotonic() + 120
        while len(run.delivered) < closing_sent and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        relayed = await through()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await executor.stop()
        await sampler.close()
    rows = windows(run, args.window_s, list(pids))
    reconciliation = {
        "ticks_sent": run.sent,
        "ticks_relayed_first_hop": relayed,
        "closing_sent": closing_sent,
        "closing_delivered": len(run.delivered),
    }
    return {
        "windows": rows,
        "verdict": verdict(rows, args.rate, args.budgets),
        "nothing_lost": relayed == run.sent and len(run.delivered) == closing_sent,
        "reconciliation": reconciliation,
    }


def run_floor(args: argparse.Namespace, tmp: Path) -> dict:
    stack = EmbeddedStack(run_root=tmp / "run-floor", use_env=False, broker=args.broker)
    info = stack.start()
    kafka = stack.kafka_settings
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        asyncio.run(ensure_topics(kafka, [TopicShape(t, p) for t, p in FLOOR_HOPS]))
        env = {**os.environ, **info.env()}
        for name, (source, sink, closing_only) in FLOOR_RELAYS.items():
            argv = [sys.executable, "-m", "bench.relay", "--source", source, "--sink", sink]
            argv += ["--group", f"floor-{name}"] + (["--closing-only"] if closing_only else [])
            procs[name] = subprocess.Popen(argv, env=env, start_new_session=True)
        pids = {n: p.pid for n, p in procs.items()}
        pids.update({f"{n}-server": p for n, p in info.pids.items()})
        return asyncio.run(soak_floor(args, kafka, pids))
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.stop()


# ---------------------------------------------------------------------------- main


def table(result: dict) -> str:
    """Markdown: Geodesic's windows with the floor's beside them."""
    geo = result.get("geodesic", {}).get("windows", [])
    flo = result.get("floor", {}).get("windows", [])
    lines = [
        "| min | sent/s | collector/s | signals/s | e2e p50 / p99 ms | lag max"
        " | floor e2e p50 / p99 ms | broker CPU % / RSS MB | services CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i in range(max(len(geo), len(flo))):
        g = geo[i] if i < len(geo) else None
        f = flo[i] if i < len(flo) else None
        cells = [str(int((g or f or {"minute": 0})["minute"]))]
        if g is not None:
            broker_cpu = g["cpu_pct"].get("broker-server")
            services = sum(v for k, v in g["cpu_pct"].items() if not k.endswith("-server"))
            cells += [
                f"{g['sent_per_s']:g}",
                f"{g['first_hop_per_s']:g}",
                f"{g['delivered_per_s']:g}",
                f"{g['e2e_p50_ms']} / {g['e2e_p99_ms']}",
                str(g["lag_max"]),
            ]
        else:
            broker_cpu, services = None, None
            cells += [""] * 5
        cells.append(f"{f['e2e_p50_ms']} / {f['e2e_p99_ms']}" if f is not None else "")
        if g is not None:
            cells += [f"{broker_cpu} / {g['rss_mb'].get('broker-server')}", f"{services:.0f}"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--broker", choices=("kafka", "tansu"), default="kafka", help="embedded broker to soak"
    )
    ap.add_argument("--rate", type=float, default=5000.0, help="ticks per second, held")
    ap.add_argument("--minutes", type=float, default=30.0, help="Geodesic's run (0: skip)")
    ap.add_argument("--floor-minutes", type=float, default=10.0, help="the floor's run (0: skip)")
    ap.add_argument("--symbols", type=int, default=10, help="symbols the ticks cycle through")
    ap.add_argument("--window-s", type=float, default=60.0, help="report window, seconds")
    ap.add_argument("--sample-s", type=float, default=5.0, help="lag / RSS / CPU sampling period")
    ap.add_argument("--budgets", default="25,100", help="e2e p99 budgets (ms) to check")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = ap.parse_args(argv)
    args.budgets = [float(b) for b in args.budgets.split(",")]
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "out" and not isinstance(v, Path)},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for part, minutes, runner in (
            ("geodesic", args.minutes, run_geodesic),
            ("floor", args.floor_minutes, run_floor),
        ):
            if minutes <= 0:
                continue
            try:
                result[part] = runner(args, Path(tmp))
            except Exception as exc:  # e.g. a broker that stops answering: report, go on
                result[part] = {"error": repr(exc)}
            _save(args, result)
    summary = {
        k: {kk: vv for kk, vv in v.items() if kk != "windows"}
        for k, v in result.items()
        if k in ("geodesic", "floor")
    }
    print(json.dumps(summary, indent=2))
    print(table(result))
    return result


def _save(args: argparse.Namespace, result: dict) -> None:
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
