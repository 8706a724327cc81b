"""Readiness probes that speak just enough of each wire protocol to get an answer.

A listening socket is not readiness: the probe sends a real request and checks the reply,
with no client library (so a probe cannot hang in a retry loop or leave a connection
behind).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

_API_VERSIONS = 18


def kafka_api_versions_ok(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """Send ApiVersions v0 and expect error_code 0 with our correlation id back."""
    client_id = b"geodesic-probe"
    correlation_id = 0x6765_6F64
    header = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(header)) + header)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            body = _recv_exact(sock, size)
    except (OSError, ValueError):
        return False
    got_id, error_code = struct.unpack(">ih", body[:6])
    return bool(got_id == correlation_id and error_code == 0)


def redis_ping_ok(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """Send an inline PING and expect +PONG or -NOAUTH (a loading server answers -LOADING)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            # -NOAUTH: a server with ACL users (default user off) answering as it should
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ValueError("connection closed mid-reply")
        chunks += chunk
    return bytes(chunks)


def wait_until(
    probe: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    still_running: Callable[[], bool] | None = None,
) -> None:
    """Poll ``probe`` until it passes; fail fast if the server process already died."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        if still_running is not None and not still_running():
            raise RuntimeError(f"{what} exited during startup")
        if probe():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
