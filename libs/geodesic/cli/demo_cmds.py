"""`geodesic demo` (lands with the demo issue)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole platform end to end on embedded defaults")
    p.set_defaults(func=_demo)


def _demo(_args: argparse.Namespace) -> int:
    print("geodesic demo: not yet (lands with the demo issue)")
    return 0
