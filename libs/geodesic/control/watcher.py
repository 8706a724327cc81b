"""Keeps a service's view of the control plane fresh: pushed on change, polled as a fallback.

A flip reaches the service in one pub/sub round trip; the poll makes a missed message
harmless. If Redis cannot be read for longer than `staleness_s`, `current()` returns None
and the caller must fail closed (no tradable signals): an unreachable control plane must
never leave a kill switch unenforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from geodesic.control.plane import ControlPlane
from geodesic.control.state import ControlSnapshot

log = logging.getLogger(__name__)


class ControlWatcher:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "geodesic",
        *,
        poll_interval_s: float = 0.5,
        staleness_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plane = ControlPlane(client, prefix)
        self.poll_interval_s = poll_interval_s
        self.staleness_s = staleness_s
        self._clock = clock
        self._snapshot: ControlSnapshot | None = None
        self._last_ok: float = float("-inf")
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self.listeners: list[Callable[[ControlSnapshot], None]] = []
        self.refreshes = 0
        self.errors = 0

    def current(self) -> ControlSnapshot | None:
        """The latest snapshot, or None when it is older than the staleness budget."""
        if self._snapshot is None or self._clock() - self._last_ok > self.staleness_s:
            return None
        return self._snapshot

    @property
    def last_snapshot(self) -> ControlSnapshot | None:
        return self._snapshot

    @property
    def age_s(self) -> float:
        return self._clock() - self._last_ok

    async def refresh(self) -> ControlSnapshot | None:
        try:
            snap = await self.plane.snapshot()
        except (aioredis.RedisError, OSError) as exc:
            self.errors += 1
            log.warning("control plane read failed: %s", exc)
            return None
        changed = self._snapshot is None or snap.version != self._snapshot.version
        self._snapshot = snap
        self._last_ok = self._clock()
        self.refreshes += 1
        if changed:
            for listener in self.listeners:
                listener(snap)
        return snap

    async def ensure_fresh(self) -> ControlSnapshot | None:
        """One cheap GET of the version: refresh if anything changed since our snapshot.

        Called at each batch boundary, so a flip takes effect at the next batch even when
        the event loop was too busy scoring to run the pub/sub listener.
        """
        try:
            raw = await self.plane.redis.get(self.plane.keys.version)
        except (aioredis.RedisError, OSError) as exc:
            self.errors += 1
            log.warning("control plane version read failed: %s", exc)
            return self.current()
        version = int(raw or 0)
        if self._snapshot is None or version != self._snapshot.version:
            await self.refresh()
        else:
            self._last_ok = self._clock()
        return self.current()

    async def start(self) -> None:
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._poll(), name="control-poll"),
            asyncio.create_task(self._listen(), name="control-listen"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            await self.refresh()

    async def _listen(self) -> None:
        """Subscribe and refresh on every message; resubscribe after connection loss."""
        while True:
            pubsub = self.plane.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.plane.keys.channel)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        await self.refresh()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("control channel lost: %s; retrying", exc)
                await asyncio.sleep(self.poll_interval_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
