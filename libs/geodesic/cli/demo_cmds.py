"""`geodesic demo`: the whole platform end to end on the embedded defaults."""

from __future__ import annotations

import argparse
from typing import Any

from geodesic.demo.config import DemoSettings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole platform end to end on embedded defaults")
    p.add_argument("--fast", action="store_true", help="short variant (also DEMO_FAST=1)")
    p.add_argument("--no-live", action="store_true", help="no live terminal display")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from geodesic.demo.runner import run_demo  # heavy imports only when the demo runs

    overrides: dict[str, Any] = {}
    if args.fast:
        overrides["fast"] = True
    if args.no_live:
        overrides["live"] = False
    return run_demo(DemoSettings(**overrides))
