"""No stale signal is ever tradable: a scorer killed with -9 mid-stream and restarted
later works off its backlog as stale_input, with the default max_signal_age_ms.

Before the fix the backlog came out as tradable long/short signals up to 19 s old.
The services run as processes on a private stack (fault_support), as operators run them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fault_support import (
    BAR_NS,
    TOPICS,
    FleetEnv,
    TopicTail,
    bar_ticks,
    fleet_env_vars,
    publish,
    running_fleet,
)

from geodesic.contracts import ScoredSignal
from geodesic.contracts.reasons import BLOCKING_REASONS
from geodesic.features import WARMUP_BARS
from geodesic.stack import EmbeddedStack
from scorer.settings import ScorerSettings

pytestmark = pytest.mark.integration

MODEL = "m-stale"
BOUND_MS = ScorerSettings.model_fields["max_signal_age_ms"].default
DOWN_S = 3.0


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, run_root: Path) -> AsyncIterator[FleetEnv]:
    registry = tmp_path_factory.mktemp("stale") / "registry"

    def variables(_stack: EmbeddedStack) -> dict[str, str]:
        out = fleet_env_vars(registry)
        del out["GEODESIC_SCORER_MAX_SIGNAL_AGE_MS"]  # the shipped default is under test
        return out

    async with running_fleet(
        run_root,
        registry,
        model_id=MODEL,
        seed=2,
        shadow=False,
        env=variables,
        names=("collector", "feature", "scorer"),
    ) as fleet_env:
        yield fleet_env


async def test_scorer_killed_mid_stream_then_restarted_emits_no_tradable_signal_past_the_bound(
    env: FleetEnv,
):
    tail = TopicTail(env.kafka, TOPICS)
    await tail.start()
    try:
        symbols = ("SA", "SB")
        n_bars = WARMUP_BARS + 40
        first = time.time_ns() // BAR_NS - n_bars - 5
        chunks = bar_ticks(symbols, n_bars, first_bar=first, seed=3, venue="STALE")
        split = WARMUP_BARS + 10
        await publish(env.kafka, "md.ticks.raw", [t for c in chunks[:split] for t in c])
        await tail.wait_for(
            lambda: len(tail.records["signals.scored"]) >= 2 * (split - WARMUP_BARS - 1),
            60,
            "signals before the kill",
        )
        env.fleet.kill("scorer")  # kill -9
        # the market goes on while the scorer is down: a backlog builds on features.v1
        await publish(env.kafka, "md.ticks.raw", [t for c in chunks[split:] for t in c])
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(env.restart, "scorer")
        n_vectors = 2 * (n_bars - WARMUP_BARS + 1) - 2  # the last bars close idle
        await tail.wait_for(
            lambda: (
                len(
                    {
                        (json.loads(r.value)["bar_index"], r.key)
                        for r in tail.records["signals.scored"]
                    }
                )
                >= n_vectors
            ),
            60,
            "every vector scored",
        )
    finally:
        await tail.stop()

    signals = [ScoredSignal.model_validate_json(r.value) for r in tail.records["signals.scored"]]
    assert all(s.decision_age_ms is not None for s in signals)
    stale = [s for s in signals if s.decision_age_ms > BOUND_MS]  # type: ignore[operator]
    # the backlog waited at least DOWN_S: it is there, and none of it is tradable
    assert len(stale) >= 10
    assert all(not s.tradable and "stale_input" in s.reasons for s in stale)
    assert not [s for s in signals if s.tradable and s.decision_age_ms > BOUND_MS]  # type: ignore[operator]
    # stale_input exactly past the bound, and tradable exactly when nothing blocks: a fresh
    # signal trades unless something else (abstain, a halt) says no
    for s in signals:
        assert ("stale_input" in s.reasons) == (s.decision_age_ms > BOUND_MS)  # type: ignore[operator]
        assert s.tradable == (not BLOCKING_REASONS.intersection(s.reasons))
