"""Argument types and shared options of the operator commands (stdlib only: parsing
must stay fast, the kill switch is parsed by it)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from geodesic.contracts.model_registry import DEFAULT_MODEL_REGISTRY, ENV_MODEL_REGISTRY
from lorentzcore.model_id import is_model_id

ENV_REDIS_URL = "GEODESIC_REDIS_URL"
ENV_PREFIX = "GEODESIC_REDIS_PREFIX"
ENV_REGISTRY = ENV_MODEL_REGISTRY
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


# ---- argument types --------------------------------------------------------------------
def model_id_arg(text: str) -> str:
    if not is_model_id(text):
        raise argparse.ArgumentTypeError(f"invalid model id {text!r}")
    return text


def symbol_arg(text: str) -> str:
    """A symbol as the Tick contract defines it, taken as typed: symbols are case-sensitive
    (lower-case ones exist), so upper-casing `aapl` could halt the wrong instrument."""
    from geodesic.contracts.symbols import symbol_problem

    problem = symbol_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def nonblank(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank")
    return text.strip()


def number_in(text: str, *, above: float, at_most: float = float("inf")) -> float:
    """A number in (above, at_most]; the refusal says the range."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not above < value <= at_most:
        bound = "" if at_most == float("inf") else f", at most {at_most:g}"
        raise argparse.ArgumentTypeError(f"{value:g} must be > {above:g}{bound}")
    return value


def fraction(text: str) -> float:
    return number_in(text, above=0.0, at_most=1.0)


def instant(text: str) -> int:
    from geodesic.operations.common import parse_time

    try:
        return parse_time(text, time.time_ns())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> float:
    return number_in(text, above=0.0)


# ---- registration ----------------------------------------------------------------------
def parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("control plane")
    g.add_argument(
        "--redis-url",
        default=None,
        help=f"default ${ENV_REDIS_URL}, else the running `geodesic up` stack, "
        f"else {DEFAULT_REDIS_URL}",
    )
    g.add_argument(
        "--prefix",
        default=None,
        help=f"Redis key prefix (default ${ENV_PREFIX} or 'geodesic')",
    )
    change = argparse.ArgumentParser(add_help=False)
    c = change.add_argument_group("audit")
    c.add_argument(
        "--reason", required=True, type=nonblank, help="why (recorded in the audit stream)"
    )
    c.add_argument("--actor", default=None, type=nonblank, help="who (default $USER or 'operator')")
    return conn, change


def registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        type=Path,
        default=None,
        help=f"model registry (default ${ENV_REGISTRY}, else the running stack's, else "
        f"{DEFAULT_MODEL_REGISTRY})",
    )


def symbol_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--symbol",
        type=symbol_arg,
        help=f"one symbol, exactly as in the ticks (case-sensitive; default: {default})",
    )
    p.add_argument(
        "--allow-unseen",
        action="store_true",
        help="set it even when the symbol was never seen but differs only in case from one "
        "that was (otherwise refused as a likely typo)",
    )


def guard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guard-config",
        type=Path,
        default=None,
        help="JSON of the risk supervisor's rollout_guard (default: its defaults)",
    )
