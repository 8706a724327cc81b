"""What the demo watches: every topic an executor or operator would, plus service metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from geodesic.contracts import Bar, ControlEvent, DeadLetter, Outcome, ScoredSignal, load_topics
from geodesic.contracts.services import COLLECTOR, FEATURE, RISK_SUPERVISOR, SCORER
from geodesic.runtime.kafka import KafkaSettings, make_consumer

HOPS = ("to_feature", "feature", "to_scorer", "scorer", "to_executor", "end_to_end")


def hop_latencies(sig: ScoredSignal, received_ns: int) -> dict[str, float] | None:
    """Per-hop ms from the wall-clock stamps the event collected along the way."""
    h = sig.hops
    if not {"collector", "feature_in", "feature_out", "scorer_in", "scorer_out"} <= set(h):
        return None  # idle-flushed bar: no closing tick to trace
    return {
        "to_feature": (h["feature_in"] - h["collector"]) / 1e6,
        "feature": (h["feature_out"] - h["feature_in"]) / 1e6,
        "to_scorer": (h["scorer_in"] - h["feature_out"]) / 1e6,
        "scorer": (h["scorer_out"] - h["scorer_in"]) / 1e6,
        "to_executor": (received_ns - h["scorer_out"]) / 1e6,
        "end_to_end": (received_ns - h["collector"]) / 1e6,
    }


@dataclass
class Observed:
    signals: list[tuple[ScoredSignal, int]] = field(default_factory=list)
    signal_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    bars: list[Bar] = field(default_factory=list)
    dlq: Counter[str] = field(default_factory=Counter)
    control: list[ControlEvent] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {h: [] for h in HOPS})
    recent_ns: deque[int] = field(default_factory=lambda: deque(maxlen=4000))


class Observer:
    """A consumer group of its own on the output topics (an executor's view)."""

    TOPICS = (
        SCORER.topic("out", "ScoredSignal"),
        COLLECTOR.dlq_topic(),
        FEATURE.topic("out", "Bar"),
        RISK_SUPERVISOR.topic("out", "ControlEvent"),
        RISK_SUPERVISOR.topic("out", "Outcome"),
    )

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = make_consumer(kafka, topics=self.TOPICS, group_id="demo-observer")
        self.seen = Observed()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _run(self) -> None:
        s = self.seen
        while True:
            batches = await self.consumer.getmany(timeout_ms=50)
            now = time.time_ns()
            for tp, recs in batches.items():
                schema = load_topics()[tp.topic].schema
                for r in recs:
                    if schema == "ScoredSignal":
                        sig = ScoredSignal.model_validate_json(r.value)
                        if sig.signal_id in s.signal_ids:
                            s.duplicates += 1  # at-least-once: executors drop by signal_id
                            continue
                        s.signal_ids.add(sig.signal_id)
                        s.signals.append((sig, now))
                        s.recent_ns.append(now)
                        lat = hop_latencies(sig, now)
                        if lat:
                            for k, v in lat.items():
                                s.latencies[k].append(v)
                    elif schema == "DeadLetter":
                        s.dlq[DeadLetter.model_validate_json(r.value).reason] += 1
                    elif schema == "Bar":
                        s.bars.append(Bar.model_validate_json(r.value))
                    elif schema == "ControlEvent":
                        s.control.append(ControlEvent.model_validate_json(r.value))
                    else:
                        s.outcomes.append(Outcome.model_validate_json(r.value))


def http_json(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        body = json.loads(resp.read())
    if not isinstance(body, dict):
        raise ValueError(f"{path} on port {port} returned {type(body).__name__}, not an object")
    return body


def metric_values(port: int) -> dict[str, float]:
    """Flattened samples of a service's /metrics (name{labels} -> value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
