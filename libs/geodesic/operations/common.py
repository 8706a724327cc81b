"""Small shared helpers: instants in and out, secrets out of URLs, JSON-safe numbers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from geodesic.control.audit import format_ns

__all__ = ["format_ns", "jsonable", "mask_url", "parse_time", "scrub"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Integers below this are refused as epoch ns: they look like s, ms or us (before 1973).
_MIN_EPOCH_NS = 10**17
_SECRET_PARAMS = {"password", "pass", "pwd", "token", "secret"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now_ns: int) -> int:
    """An instant as epoch ns from ISO-8601, epoch ns, "now", or an age like "90m" / "2h".

    ISO times without a zone are UTC (operators compare with audit times, which are UTC).
    A bare integer must be epoch *nanoseconds*; one that looks like seconds or millis is
    refused rather than silently read as a date in January 1970.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty time")
    if s.lower() == "now":
        return now_ns
    if re.fullmatch(r"-?\d+", s):
        value = int(s)
        if value < _MIN_EPOCH_NS:
            raise ValueError(
                f"{s} is not epoch nanoseconds (too small: seconds or millis?); "
                "give ns since 1970 or an ISO-8601 time"
            )
        return value
    m = _DURATION.match(s)
    if m:
        return now_ns - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1_000_000_000)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise ValueError(
            f"{s!r}: expected ISO-8601 (2024-05-01T12:00:00Z), epoch ns, 'now' or an age "
            "like 30m / 2h / 1d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def mask_url(url: str) -> str:
    """The URL with any password (userinfo or query parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{host}" if user or ":" in userinfo else f"***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's secrets masked, for error messages that may echo it."""
    out = text.replace(url, mask_url(url)) if url else text
    try:
        parts = urlsplit(url)
        secrets = [parts.password or ""]
        secrets += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS]
    except ValueError:
        secrets = []
    for secret in secrets:
        if len(secret) >= 3:
            out = out.replace(secret, "***")
    return out


def jsonable(value: Any) -> Any:
    """A copy safe for strict JSON: NaN/inf become None, tuples/sets lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    return value
