"""Child server processes: spawn in their own process group, stop by PID, never orphan.

A server is started as the leader of a new session (so a Ctrl-C aimed at the test runner
does not hit it half-way, and its whole group can be signalled), with PR_SET_PDEATHSIG on
Linux so it dies with the spawning thread even when that process is SIGKILLed. A PID is
stored together with the process start time, so a recycled PID is never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on ``host`` (free unless someone races us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux), None if unknown/gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int, started: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, has the recorded start time."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if sys.platform.startswith("linux"):
        if _state(pid) in (None, "Z", "X"):
            return False
        if started is not None and start_time(pid) != started:
            return False  # the PID was recycled by an unrelated process
    return True


def _load_prctl() -> Callable[..., int] | None:
    """Resolve prctl in the parent: the forked child must not dlopen (lock-unsafe)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """preexec_fn: get SIGKILL when the spawning thread exits (Linux only)."""
    parent = os.getppid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # parent died before prctl took effect
        os._exit(1)


@dataclass
class ServerProcess:
    """One running server we spawned (or adopted from a state file)."""

    name: str
    argv: list[str]
    log_path: Path
    pid: int
    started: int | None
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return is_alive(self.pid, self.started)

    @classmethod
    def from_json(cls, name: str, entry: dict[str, Any]) -> ServerProcess:
        """Adopt a process recorded by ``to_json`` (possibly by another process)."""
        return cls(
            name=name,
            argv=entry.get("argv", []),
            log_path=Path(entry.get("log", "")),
            pid=int(entry["pid"]),
            started=entry.get("started"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "started": self.started,
            "argv": self.argv,
            "log": str(self.log_path),
        }


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> ServerProcess:
    """Start ``argv`` as a new session leader with stdout+stderr appended to ``log_path``.

    ``die_with_parent`` ties the child to the calling thread (PR_SET_PDEATHSIG), so it is
    only applied from the main thread: a worker thread exiting must not kill the server.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tie = (
        die_with_parent
        and _PRCTL is not None
        and threading.current_thread() is threading.main_thread()
    )
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {argv}\n".encode())
        log_file.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie else None,
            close_fds=True,
        )
    log.debug("spawned %s pid=%d: %s", name, popen.pid, " ".join(argv))
    return ServerProcess(
        name=name,
        argv=list(argv),
        log_path=log_path,
        pid=popen.pid,
        started=start_time(popen.pid),
        popen=popen,
    )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (our servers lead their own), else the PID."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(proc: ServerProcess, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.popen is not None:
            try:
                proc.popen.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
                return True
            except subprocess.TimeoutExpired:
                pass
        elif not is_alive(proc.pid, proc.started):
            return True
        if time.monotonic() >= deadline:
            return not proc.alive()
        if proc.popen is None:
            time.sleep(0.02)


def terminate(
    proc: ServerProcess,
    *,
    timeout_s: float = 5.0,
    graceful: bool = True,
    escalation_level: int = logging.WARNING,
) -> None:
    """SIGTERM (if graceful), wait, then SIGKILL; safe to call on a dead process.

    ``escalation_level`` is the log level of "had to SIGKILL" (lower it for servers that
    routinely linger, like Tansu with clients connected).
    """
    if proc.popen is None and not is_alive(proc.pid, proc.started):
        return
    if proc.popen is not None and proc.popen.poll() is not None:
        return
    if graceful:
        _signal_group(proc.pid, signal.SIGTERM)
        if _wait_gone(proc, timeout_s):
            log.debug("%s pid=%d stopped", proc.name, proc.pid)
            return
        log.log(
            escalation_level,
            "%s pid=%d still up %.1fs after SIGTERM; killing",
            proc.name,
            proc.pid,
            timeout_s,
        )
    _signal_group(proc.pid, signal.SIGKILL)
    if not _wait_gone(proc, 5.0):
        log.error("%s pid=%d survived SIGKILL", proc.name, proc.pid)
