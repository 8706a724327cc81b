"""The five services as separate processes: start, wait until healthy, record, stop.

Used by `geodesic up` (detached: the services outlive the command, `geodesic down` stops
them from the state file) and by tests that need real process boundaries (kill -9, restart).

services.json records, besides each process, the environment the fleet started the
services with (its own variables plus every GEODESIC_* setting inherited from the caller)
and the working directory, so :meth:`Fleet.from_state` can restart one service later,
from another shell, exactly as it was started: nobody copies variables out of /proc. The
file may hold secrets (Redis passwords, a signing key): it is written owner-only (0600).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geodesic.contracts.services import SERVICES, service
from geodesic.stack.processes import (
    ServerProcess,
    free_port,
    is_alive,
    port_is_free,
    spawn,
    terminate,
)

FLEET_FILE = "services.json"
SETTINGS_PREFIX = "GEODESIC_"


def _settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The Geodesic settings in an environment (what a service's config reads)."""
    return {k: v for k, v in environ.items() if k.startswith(SETTINGS_PREFIX)}


@dataclass
class ServiceProcess:
    name: str
    proc: ServerProcess
    http_port: int
    # from its /info once ready: what `geodesic status` needs for lag when it is down
    group_id: str = ""
    topics: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def info(port: int, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """The /info body, or None when the service does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=timeout_s) as resp:
            body: object = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def health(port: int, timeout_s: float = 0.5) -> dict[str, Any] | None:
    """The /health body, or None when the service does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout_s) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except urllib.error.HTTPError as exc:  # 503 = alive, not ready: body says why
        try:
            answer: dict[str, Any] = json.loads(exc.read())
            return answer
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


class Fleet:
    def __init__(
        self,
        run_dir: Path,
        env: Mapping[str, str],
        *,
        names: tuple[str, ...] = tuple(SERVICES),
        detach: bool = False,
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.env = dict(env)
        self.names = names
        self.detach = detach
        self.extra_env = extra_env or {}
        self.services: dict[str, ServiceProcess] = {}
        self.cwd = Path.cwd()
        # True for a fleet rebuilt from services.json: the recorded settings are the whole
        # configuration, and the caller's own GEODESIC_* variables must not leak in.
        self._recorded = False

    @classmethod
    def from_state(cls, run_dir: Path) -> Fleet:
        """The fleet a (possibly other) process recorded in ``run_dir``, processes adopted,
        ready to :meth:`restart` a service with the environment it was started with."""
        path = Path(run_dir) / FLEET_FILE
        doc = json.loads(path.read_text())
        if "env" not in doc:
            raise RuntimeError(
                f"{path} records no environment (written by an older geodesic): "
                "`geodesic down` and `geodesic up` once to restart services by name"
            )
        fleet = cls(
            run_dir,
            doc["env"],
            names=tuple(doc.get("names") or doc["services"]),
            detach=bool(doc.get("detach", True)),
            extra_env=doc.get("extra_env") or {},
        )
        fleet.cwd = Path(doc.get("cwd") or run_dir)
        fleet._recorded = True
        for name, entry in doc["services"].items():
            proc = ServerProcess.from_json(name, entry)
            fleet.services[name] = ServiceProcess(
                name,
                proc,
                int(entry["http_port"]),
                str(entry.get("group_id") or ""),
                list(entry.get("topics") or []),
            )
        return fleet

    def _environment(self, name: str, port: int) -> dict[str, str]:
        prefix = service(name).env_prefix
        base = dict(os.environ)
        if self._recorded:
            base = {k: v for k, v in base.items() if not k.startswith(SETTINGS_PREFIX)}
        env = {**base, **self.env, f"{prefix}HTTP_PORT": str(port)}
        env.update(self.extra_env.get(name, {}))
        return env

    def start(self, name: str, port: int | None = None) -> ServiceProcess:
        spec = service(name)
        port = port or free_port()
        if not self._recorded:  # record what the service inherits, for a later restart
            self.env = {**_settings(os.environ), **self.env}
        proc = spawn(
            name,
            [sys.executable, "-m", spec.module],
            self.run_dir / f"{name}.log",
            env=self._environment(name, port),
            cwd=self.cwd,
            die_with_parent=not self.detach,
        )
        svc = ServiceProcess(name, proc, port)
        self.services[name] = svc
        self._write_state()
        return svc

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def wait_healthy(self, timeout_s: float = 60.0, names: tuple[str, ...] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(names or self.services)
        while pending:
            for name in list(pending):
                svc = self.services[name]
                if not svc.proc.alive():
                    raise RuntimeError(f"{name} exited; see {svc.proc.log_path}")
                body = health(svc.http_port)
                if body is not None and body.get("ready"):
                    pending.discard(name)
                    self._record_consumer(svc)
            if pending and time.monotonic() > deadline:
                reasons = {n: health(self.services[n].http_port) for n in pending}
                raise TimeoutError(f"services not ready: {reasons}")
            if pending:
                time.sleep(0.1)

    def _record_consumer(self, svc: ServiceProcess) -> None:
        doc = info(svc.http_port) or {}
        svc.group_id = str(doc.get("group_id") or "")
        svc.topics = [str(t) for t in doc.get("topics") or []]
        self._write_state()

    def stop(self, name: str, *, graceful: bool = True) -> None:
        svc = self.services.get(name)
        if svc is not None:
            terminate(svc.proc, graceful=graceful, timeout_s=10.0)

    def down(self) -> list[str]:
        """Services that are not running (exited, killed, or never started)."""
        return [
            n for n in self.names if n not in self.services or not self.services[n].proc.alive()
        ]

    def restart(self, name: str, timeout_s: float = 60.0) -> ServiceProcess:
        """Stop ``name`` if it runs, start it again with the recorded environment (on its
        old HTTP port when that is free, so scrape configs stay valid), wait until ready."""
        if name not in SERVICES:
            raise KeyError(name)
        old = self.services.get(name)
        if old is not None:
            terminate(old.proc, timeout_s=10.0)
        port = old.http_port if old is not None and port_is_free(old.http_port) else None
        svc = self.start(name, port)
        self.wait_healthy(timeout_s, names=(name,))
        return svc

    def kill(self, name: str) -> None:
        """kill -9: no shutdown hooks, no final commit (for fault tests)."""
        self.stop(name, graceful=False)

    def stop_all(self) -> None:
        for name in reversed(list(self.services)):
            self.stop(name)
        self._write_state(stopped=True)

    def describe(self) -> dict[str, Any]:
        return {
            n: {"pid": s.proc.pid, "http_port": s.http_port, "log": str(s.proc.log_path)}
            for n, s in self.services.items()
        }

    def _write_state(self, *, stopped: bool = False) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "stopped": stopped,
            "detach": self.detach,
            "names": list(self.names),
            "cwd": str(self.cwd),
            "env": self.env,
            "extra_env": {n: dict(e) for n, e in self.extra_env.items()},
            "services": {
                n: {
                    **s.proc.to_json(),
                    "http_port": s.http_port,
                    "group_id": s.group_id,
                    "topics": s.topics,
                }
                for n, s in self.services.items()
            },
        }
        _write_private(self.run_dir / FLEET_FILE, doc)


def stop_fleet_from_state(run_dir: Path, timeout_s: float = 10.0) -> list[str]:
    """Stop services recorded by a (possibly other) process's Fleet; PID reuse-safe."""
    path = Path(run_dir) / FLEET_FILE
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    stopped = []
    for name, entry in doc.get("services", {}).items():
        proc = ServerProcess.from_json(name, entry)
        if is_alive(proc.pid, proc.started):
            terminate(proc, timeout_s=timeout_s)
            stopped.append(name)
    doc["stopped"] = True
    _write_private(path, doc)
    return stopped


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``doc`` as JSON, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(doc, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
