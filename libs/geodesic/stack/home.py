"""One `geodesic up` stack per state directory, found from any working directory.

The state directory is :func:`geodesic.stack.embedded.default_run_root` ($GEODESIC_RUN_DIR,
else $XDG_STATE_HOME/geodesic, else ~/.local/state/geodesic). ``geodesic up`` holds an
exclusive lock on ``<state dir>/up.lock`` while it looks and starts, so two concurrent
``up`` commands cannot both decide that nothing runs; a detached stack with a live server
in the state directory is *the* stack, and a second ``up`` reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from geodesic.stack.embedded import find_running_stacks, read_state

LOCK_FILE = "up.lock"


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


def running_up_stacks(root: Path) -> list[Path]:
    """State files of running detached (`geodesic up`) stacks in ``root``, newest first."""
    out = []
    for state in find_running_stacks(root):
        with contextlib.suppress(OSError, ValueError):
            if read_state(state).get("detached"):
                out.append(state)
    return out
