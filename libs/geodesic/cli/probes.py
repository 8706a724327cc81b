"""What `geodesic status` probes besides Redis: each service's /health, its consumer lag.

Services are found in the running `geodesic up` stack's services.json (state directory,
see geodesic.stack.home) when that stack uses the Redis the CLI talks to, and/or given as
``--service-url NAME=URL`` (docker-compose, Kubernetes). Every probe has a short timeout:
status is what an operator runs when something is wrong, so it must not hang on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from geodesic.operations.health import ServiceProbe

HEALTH_TIMEOUT_S = 1.0
LAG_TIMEOUT_S = 8.0


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    group_id: str
    pid: int | None = None
    started: int | None = None
    log: Path | None = None
    topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Discovered:
    targets: list[Target]
    bootstrap: str | None
    run_dir: Path | None


def _same_server(a: str, b: str) -> bool:
    ua, ub = urlsplit(a), urlsplit(b)
    return (ua.hostname, ua.port or 6379) == (ub.hostname, ub.port or 6379)


def discover(redis_url: str, specs: list[str]) -> Discovered:
    """Targets from the running up-stack (when it serves ``redis_url``) and ``specs``."""
    from geodesic.contracts.services import SERVICES
    from geodesic.stack.fleet import FLEET_FILE
    from geodesic.stack.home import default_run_root, read_state, running_up_stacks

    targets: dict[str, Target] = {}
    bootstrap = run_dir = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        for state_file in running_up_stacks(default_run_root()):
            state = read_state(state_file)
            if not _same_server(str(state.get("redis_url", "")), redis_url):
                continue
            run_dir, bootstrap = state_file.parent, state.get("bootstrap")
            doc = json.loads((run_dir / FLEET_FILE).read_text())
            env = doc.get("env") or {}
            for name, entry in doc.get("services", {}).items():
                spec = SERVICES.get(name)
                declared = tuple(t.name for t in spec.topics("in")) if spec else ()
                group = spec.group_id if spec else f"geodesic-{name}"
                if spec:
                    group = env.get(f"{spec.env_prefix}GROUP_ID") or group
                targets[name] = Target(
                    name,
                    f"http://127.0.0.1:{entry['http_port']}",
                    entry.get("group_id") or group,
                    int(entry["pid"]),
                    entry.get("started"),
                    Path(entry["log"]) if entry.get("log") else None,
                    tuple(entry.get("topics") or ()) or declared,
                )
            break
    for given in specs:
        name, _, url = given.partition("=")
        spec = SERVICES.get(name)
        targets[name] = Target(
            name,
            url.rstrip("/"),
            spec.group_id if spec else f"geodesic-{name}",
            topics=tuple(t.name for t in spec.topics("in")) if spec else (),
        )
    return Discovered(list(targets.values()), bootstrap, run_dir)


def _get(url: str, path: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=HEALTH_TIMEOUT_S) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # /health 503: alive, not ready; the body says why
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {"ready": False, "reason": f"HTTP {exc.code}"}
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else {"ready": False, "reason": f"bad {path} body"}


def _health(t: Target) -> tuple[dict[str, Any] | None, Target, dict[str, Any] | None]:
    """/health, and the consumer group, topics and warm-up from /info when it answers."""
    body = _get(t.url, "/health")
    if body is None:
        return None, t, None
    doc = _get(t.url, "/info") or {}
    topics = tuple(str(x) for x in doc.get("topics") or ()) or t.topics
    group = str(doc.get("group_id") or t.group_id)
    warmup = doc.get("warmup") if isinstance(doc.get("warmup"), dict) else None
    return body, Target(t.name, t.url, group, t.pid, t.started, t.log, topics), warmup


def _probe_process(t: Target) -> tuple[bool | None, int | None]:
    from geodesic.stack.processes import is_alive

    alive = None if t.pid is None else is_alive(t.pid, t.started)
    mtime = None
    if t.log is not None:
        with contextlib.suppress(OSError):
            mtime = t.log.stat().st_mtime_ns
    return alive, mtime


async def _lags(bootstrap: str | None, groups: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Per consumer group: sum over its topics' partitions of end - committed offset.

    Committed offsets are read by a consumer that names the group but never subscribes,
    so it does not join the group (no rebalance of the live service); aiokafka's admin
    OffsetFetch is not used because the embedded Tansu broker drops that request.
    """
    from aiokafka import TopicPartition

    from geodesic.runtime.kafka import KafkaSettings, make_consumer, true_end_offsets

    settings = KafkaSettings() if bootstrap is None else KafkaSettings().with_bootstrap(bootstrap)
    committed: dict[str, dict[TopicPartition, int]] = {}
    for group, topics in groups.items():
        consumer = make_consumer(
            settings, group_id=group, client_id="geodesic-status", enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()
            offsets: dict[TopicPartition, int] = {}
            for topic in topics:
                for part in sorted(consumer.partitions_for_topic(topic) or ()):
                    tp = TopicPartition(topic, part)
                    offsets[tp] = max(0, await consumer.committed(tp) or 0)
            committed[group] = offsets
        finally:
            await consumer.stop()
    every = {tp for c in committed.values() for tp in c}
    ends = await true_end_offsets(settings, every, timeout_s=LAG_TIMEOUT_S) if every else {}
    return {
        group: sum(max(0, ends[tp] - o) for tp, o in c.items()) for group, c in committed.items()
    }


async def probe(found: Discovered, last_input: Mapping[str, int]) -> list[ServiceProbe]:
    """Health, process and lag of every target, concurrently, each bounded in time."""
    seen = await asyncio.gather(*(asyncio.to_thread(_health, t) for t in found.targets))
    targets = [t for _, t, _ in seen]
    healths = [body for body, _, _ in seen]
    warmups = [w for _, _, w in seen]
    procs = [_probe_process(t) for t in targets]
    lag_error: str | None = None
    lags: dict[str, int] = {}
    groups = {t.group_id: t.topics for t in targets if t.topics}
    if groups:
        try:
            lags = await asyncio.wait_for(_lags(found.bootstrap, groups), LAG_TIMEOUT_S)
        except Exception as exc:  # lag is best effort: say why it is missing
            lag_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    out = []
    for t, body, (alive, mtime), warmup in zip(targets, healths, procs, warmups, strict=True):
        lag = lags.get(t.group_id)
        why = lag_error if t.topics else "topics unknown (never seen ready)"
        out.append(
            ServiceProbe(
                t.name,
                t.url,
                body,
                alive,
                t.pid,
                mtime,
                t.group_id,
                lag,
                None if lag is not None else why,
                last_input.get(t.name),
                warmup,
            )
        )
    return out
