"""The HTTP face every service shows: /health, /metrics (Prometheus) and /info."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthCheck = Callable[[], tuple[bool, str]]


class ServiceHttp:
    """A tiny aiohttp server; readiness is a callback so the service decides what 'ready' means.

    /health answers 200 while the process is alive and ready, 503 with the reason when it is
    alive but not ready (e.g. partitions not yet assigned, Redis stale): orchestrators must
    restart on liveness failure only, and stop routing on readiness failure.
    """

    def __init__(
        self,
        name: str,
        registry: CollectorRegistry,
        info: Callable[[], dict[str, Any]],
        readiness: HealthCheck,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.name = name
        self.registry = registry
        self._info = info
        self._readiness = readiness
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._started = time.time()

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/info", self._info_handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None)  # an asyncio.Server once started
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, _request: web.Request) -> web.Response:
        ready, reason = self._readiness()
        body = {"service": self.name, "live": True, "ready": ready, "reason": reason}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        payload = generate_latest(self.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _info_handler(self, _request: web.Request) -> web.Response:
        info = {"service": self.name, "uptime_s": round(time.time() - self._started, 3)}
        info.update(self._info())
        return web.Response(text=json.dumps(info, default=str), content_type="application/json")
