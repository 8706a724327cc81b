#!/usr/bin/env python3
"""Render Redis' users.acl from users.acl.template, with passwords only as SHA-256 hashes.

    python infra/redis/render_acl.py [--template PATH] [--out PATH|-] [--mode 0600]
    python infra/redis/render_acl.py --new-env >> .env    # fresh random passwords

For each `user NAME ...` line of the template, `{{password}}` becomes `#<sha256 hex>` of
the password read from GEODESIC_REDIS_PASSWORD_<NAME> or from the file named by
GEODESIC_REDIS_PASSWORD_<NAME>_FILE (a Docker / Kubernetes secret), where <NAME> is the
user name upper-cased with '-' as '_' (svc-collector -> SVC_COLLECTOR). Comment and
blank lines are dropped, because Redis' ACL file format has none.

The passwords also go into the services' redis:// URLs, so they must be URL-safe
(letters, digits, '-', '_', '.', '~') and at least 16 characters; generate them with
`python -c "import secrets; print(secrets.token_urlsafe(32))"`.

Standard library only: it runs before anything is installed (docker-compose's redis-acl
job, a deploy script). Exit status 0 on success, 2 with a message naming the variable or
the template line on any problem; a password never appears in a message.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDER = "{{password}}"
ENV_PREFIX = "GEODESIC_REDIS_PASSWORD_"
MIN_LENGTH = 16
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
DEFAULT_TEMPLATE = Path(__file__).with_name("users.acl.template")
DEFAULT_OUT = Path(__file__).with_name("users.acl")


class RenderError(Exception):
    """A template or password problem; the message is safe to print."""


def env_name(user: str) -> str:
    """The environment variable holding ``user``'s password."""
    return ENV_PREFIX + user.upper().replace("-", "_")


def read_password(user: str, environ: Mapping[str, str]) -> str:
    """The password of ``user`` from its variable or its _FILE variable (exactly one)."""
    name = env_name(user)
    direct = environ.get(name)
    file_name = environ.get(name + "_FILE")
    if direct is not None and file_name is not None:
        raise RenderError(f"set only one of {name} and {name}_FILE")
    if file_name is not None:
        try:
            # a trailing newline is an artefact of `echo` / editors, never part of it
            password = Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise RenderError(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from exc
    elif direct is not None:
        password = direct
    else:
        raise RenderError(f"no password for Redis user {user!r}: set {name} or {name}_FILE")
    if len(password) < MIN_LENGTH:
        raise RenderError(f"{name}: password shorter than {MIN_LENGTH} characters")
    if not _URL_SAFE.fullmatch(password):
        raise RenderError(
            f"{name}: password must be URL-safe (A-Z a-z 0-9 - _ . ~) because it goes "
            "into redis:// URLs; try secrets.token_urlsafe(32)"
        )
    return password


def password_hash(password: str) -> str:
    """Redis' ACL form of a password given by hash: '#' + SHA-256 hex."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def render(template: str, environ: Mapping[str, str]) -> str:
    """The ACL file text for ``template``; raises RenderError naming the problem."""
    out: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(template.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"template line {number}"
        words = line.split()
        if words[0] != "user" or len(words) < 2 or not _USER_NAME.fullmatch(words[1]):
            raise RenderError(f"{where}: expected `user <name> <rules...>`")
        user = words[1]
        if user in seen:
            raise RenderError(f"{where}: user {user!r} defined twice")
        seen.add(user)
        rules = words[2:]
        if any(r.startswith(">") or r.startswith("<") for r in rules):
            raise RenderError(f"{where}: clear-text password rule for {user!r}; use {PLACEHOLDER}")
        if "nopass" in rules:
            raise RenderError(f"{where}: `nopass` for {user!r}; every enabled user needs one")
        enabled = "on" in rules
        if rules.count(PLACEHOLDER) > 1:
            raise RenderError(f"{where}: more than one {PLACEHOLDER} for {user!r}")
        if PLACEHOLDER in rules:
            hashed = password_hash(read_password(user, environ))
            rules = [hashed if r == PLACEHOLDER else r for r in rules]
        elif enabled:
            raise RenderError(f"{where}: enabled user {user!r} has no {PLACEHOLDER}")
        if any(PLACEHOLDER in r for r in rules):
            raise RenderError(f"{where}: {PLACEHOLDER} must be a rule of its own")
        out.append(" ".join(["user", user, *rules]))
    if not out:
        raise RenderError("the template defines no user")
    return "\n".join(out) + "\n"


def template_users(template: str) -> list[str]:
    """Users of the template that take a password, in order."""
    users = []
    for raw in template.splitlines():
        words = raw.split()
        if len(words) > 2 and words[0] == "user" and PLACEHOLDER in words:
            users.append(words[1])
    return users


def new_env(template: str) -> str:
    """`VAR=password` lines with fresh random URL-safe passwords for every user."""
    return "".join(
        f"{env_name(user)}={secrets.token_urlsafe(32)}\n" for user in template_users(template)
    )


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` in one step, so Redis never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output file, or '-' for stdout")
    parser.add_argument(
        "--mode",
        type=lambda s: int(s, 8),
        default=0o600,
        help="octal file mode of the output (default 0600; 0644 when another user runs Redis)",
    )
    parser.add_argument(
        "--new-env",
        action="store_true",
        help="print GEODESIC_REDIS_PASSWORD_<USER>=<random> lines for a new .env, then exit",
    )
    args = parser.parse_args(argv)
    try:
        template = args.template.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"render_acl: cannot read {args.template}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.new_env:
        sys.stdout.write(new_env(template))
        return 0
    try:
        text = render(template, os.environ)
    except RenderError as exc:
        print(f"render_acl: {exc}", file=sys.stderr)
        return 2
    if args.out == "-":
        sys.stdout.write(text)
    else:
        write_atomically(Path(args.out), text, args.mode)
        users = [line.split()[1] for line in text.splitlines()]
        print(f"render_acl: wrote {args.out} ({', '.join(users)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
