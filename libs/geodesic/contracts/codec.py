"""A fast codec behind the Tick contract: msgspec parses, pydantic stays the judge.

Ticks are the one contract every service handles per record (the collector validates and
re-encodes each one, the feature service parses each one). pydantic's validate + dump
measured ~15 us per 168-byte tick, msgspec's decode ~1 us. ``decode_tick`` returns a Tick
only when the payload is one pydantic accepts, with the same values: msgspec decodes it
into a strict mirror of the model (no coercion, no unknown fields) and the model's
constraints are re-checked here conservatively. Anything else, valid or not, returns None
and the caller asks pydantic, whose errors (and the collector's reject reasons derived from
them) remain the reference; the schemas are the models', unchanged.

A test feeds both paths the hostile payloads the collector's tests use and random near
misses, and requires the fast path never to accept what pydantic rejects or to differ
from it in any value.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import msgspec

from geodesic.contracts.models import Tick
from geodesic.contracts.symbols import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN

_TICK_FIELDS = tuple(Tick.model_fields)
_SYMBOL = re.compile(SYMBOL_PATTERN)
_VENUE_MAX = 32
_set = object.__setattr__


class _TickWire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Tick's fields and types; the constraints are checked in ``decode_tick``."""

    v: Literal[1] = 1
    venue: str
    symbol: str
    seq: int
    ts_ns: int
    bid: float
    ask: float
    last: float
    size: float
    ingest_ts_ns: int | None = None


_DECODER = msgspec.json.Decoder(_TickWire)
_ENCODER = msgspec.json.Encoder()


def decode_tick(raw: bytes, *, ingest_ts_ns: int | None = None) -> Tick | None:
    """The Tick pydantic would build from ``raw`` (strict or lax), or None when unsure.

    ``ingest_ts_ns``, when given, replaces the payload's (the collector's stamp).
    """
    try:
        w = _DECODER.decode(raw)
    except (msgspec.DecodeError, ValueError):
        return None
    if not (
        0 < len(w.venue) <= _VENUE_MAX
        and 0 < len(w.symbol) <= SYMBOL_MAX_LENGTH
        and _SYMBOL.fullmatch(w.symbol) is not None
        and w.seq >= 0
        and w.ts_ns >= 0
        and (w.ingest_ts_ns is None or w.ingest_ts_ns >= 0)
        and 0.0 < w.bid <= w.ask < math.inf  # bid > ask is a crossed quote
        and 0.0 < w.last < math.inf
        and 0.0 <= w.size < math.inf
    ):
        return None
    return _build(
        Tick,
        {
            "v": 1,
            "venue": w.venue,
            "symbol": w.symbol,
            "seq": w.seq,
            "ts_ns": w.ts_ns,
            "bid": w.bid,
            "ask": w.ask,
            "last": w.last,
            "size": w.size,
            "ingest_ts_ns": w.ingest_ts_ns if ingest_ts_ns is None else ingest_ts_ns,
        },
    )


def encode_tick(tick: Tick) -> bytes:
    """The JSON ``tick.to_bytes()`` gives (same fields, order and values), ~4x cheaper."""
    return _ENCODER.encode(tick.__dict__)


def _build(model: type[Tick], values: dict[str, Any]) -> Tick:
    """A model instance from values already known valid: what ``model_construct`` does
    for a complete set of fields, without its per-field default handling (~10x cheaper)."""
    obj = model.__new__(model)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(_TICK_FIELDS))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj
