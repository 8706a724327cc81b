"""The five services as separate processes: start, wait until healthy, record, stop.

Used by `geodesic up` (detached: the services outlive the command, `geodesic down` stops
them from the state file) and by tests that need real process boundaries (kill -9, restart).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from geodesic.contracts.services import SERVICES, service
from geodesic.stack.processes import ServerProcess, free_port, is_alive, spawn, terminate

FLEET_FILE = "services.json"


@dataclass
class ServiceProcess:
    name: str
    proc: ServerProcess
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def health(port: int, timeout_s: float = 0.5) -> dict | None:
    """The /health body, or None when the service does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 = alive, not ready: body says why
        try:
            return json.loads(exc.read())
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

    def start(self, name: str, port: int | None = None) -> ServiceProcess:
        spec = service(name)
        port = port or free_port()
        env = {**os.environ, **self.env, f"{spec.env_prefix}HTTP_PORT": str(port)}
        env.update(self.extra_env.get(name, {}))
        proc = spawn(
            name,
            [sys.executable, "-m", spec.module],
            self.run_dir / f"{name}.log",
            env=env,
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
            if pending and time.monotonic() > deadline:
                reasons = {n: health(self.services[n].http_port) for n in pending}
                raise TimeoutError(f"services not ready: {reasons}")
            if pending:
                time.sleep(0.1)

    def stop(self, name: str, *, graceful: bool = True) -> None:
        svc = self.services.get(name)
        if svc is not None:
            terminate(svc.proc, graceful=graceful, timeout_s=10.0)

    def kill(self, name: str) -> None:
        """kill -9: no shutdown hooks, no final commit (for fault tests)."""
        self.stop(name, graceful=False)

    def stop_all(self) -> None:
        for name in reversed(list(self.services)):
            self.stop(name)
        self._write_state(stopped=True)

    def describe(self) -> dict:
        return {
            n: {"pid": s.proc.pid, "http_port": s.http_port, "log": str(s.proc.log_path)}
            for n, s in self.services.items()
        }

    def _write_state(self, *, stopped: bool = False) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "stopped": stopped,
            "services": {
                n: {**s.proc.to_json(), "http_port": s.http_port} for n, s in self.services.items()
            },
        }
        tmp = self.run_dir / (FLEET_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.run_dir / FLEET_FILE)


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
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return stopped
