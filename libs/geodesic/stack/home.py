"""The state directory: where `geodesic up` keeps its stack, found from any directory.

``default_run_root()`` is $GEODESIC_RUN_DIR, else $XDG_STATE_HOME/geodesic, else
~/.local/state/geodesic; never the working directory, so `geodesic down | restart |
status | kill-switch` run from anywhere find the stack `geodesic up` started. Each stack
has ``<state dir>/<stack-id>/state.json`` (see geodesic.stack.embedded).

One `geodesic up` stack per state directory: ``up`` holds an exclusive lock on
``<state dir>/up.lock`` while it looks and starts, so two concurrent ``up`` commands
cannot both decide that nothing runs; a detached stack with a live server in the state
directory is *the* stack, and a second ``up`` reuses it.

Standard library only (plus processes.is_alive): the operator CLI reads this on its
emergency path (kill switch), which must not import the broker and Kafka machinery.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from geodesic.stack.processes import is_alive

ENV_RUN_DIR = "GEODESIC_RUN_DIR"
STATE_FILE = "state.json"
LOCK_FILE = "up.lock"


def default_run_root() -> Path:
    """The state directory: $GEODESIC_RUN_DIR, else $XDG_STATE_HOME/geodesic (by default
    ~/.local/state/geodesic)."""
    override = os.environ.get(ENV_RUN_DIR)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "geodesic"


def read_state(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(path).read_text())
    return doc


def state_is_running(path: Path) -> bool:
    """Whether any server recorded in the state file still runs."""
    try:
        state = read_state(path)
    except (OSError, ValueError):
        return False
    return any(
        is_alive(int(e["pid"]), e.get("started")) for e in state.get("processes", {}).values()
    )


def find_running_stacks(run_root: Path | None = None) -> list[Path]:
    """State files of stacks with a live server, newest first (for ``geodesic down``)."""
    root = run_root or default_run_root()
    files = [p for p in root.glob(f"*/{STATE_FILE}") if state_is_running(p)]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


@contextlib.contextmanager
def up_lock(root: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the state directory's `up` lock (released when the process dies, too)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds generated passwords
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def running_up_stacks(root: Path | None = None) -> list[Path]:
    """State files of running detached (`geodesic up`) stacks, newest first."""
    out = []
    for state in find_running_stacks(root):
        with contextlib.suppress(OSError, ValueError):
            if read_state(state).get("detached"):
                out.append(state)
    return out


def up_stack_fleet(root: Path | None = None) -> dict[str, Any] | None:
    """The running up-stack's state.json merged with its services.json, or None."""
    for state_file in running_up_stacks(root):
        with contextlib.suppress(OSError, ValueError):
            state = read_state(state_file)
            fleet_file = state_file.parent / "services.json"
            fleet = json.loads(fleet_file.read_text()) if fleet_file.is_file() else {}
            return {**state, "fleet": fleet}
    return None


def operator_redis_url(state: Mapping[str, Any]) -> str:
    """The URL an operator tool uses for the stack of ``state`` (its state.json): with
    the stack's ACL users, authenticated as ``operator`` (password from the run dir)."""
    url = str(state["redis_url"])
    if not state.get("acl"):
        return url
    from geodesic.stack.redis_acl import OPERATOR, user_url

    return user_url(url, Path(state["run_dir"]), OPERATOR)
