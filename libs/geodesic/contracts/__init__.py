"""Event contracts: one pydantic model per topic payload, JSON on the wire.

Names resolve on first use (PEP 562), so a light submodule (contracts.symbols, checked by
the operator CLI's emergency commands) can be imported without pydantic.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geodesic.contracts.models import (
        MODELS,
        Bar,
        ControlEvent,
        ControlKind,
        DeadLetter,
        FeatureVector,
        Outcome,
        Route,
        ScoredSignal,
        ShadowScore,
        Side,
        Tick,
        make_dead_letter,
        make_signal_id,
    )
    from geodesic.contracts.topics import TopicSpec, load_topics

__all__ = [
    "MODELS",
    "Bar",
    "ControlEvent",
    "ControlKind",
    "DeadLetter",
    "FeatureVector",
    "Outcome",
    "Route",
    "ScoredSignal",
    "ShadowScore",
    "Side",
    "Tick",
    "TopicSpec",
    "load_topics",
    "make_dead_letter",
    "make_signal_id",
]

_FROM_TOPICS = frozenset({"TopicSpec", "load_topics"})


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'geodesic.contracts' has no attribute {name!r}")
    import importlib

    module = "geodesic.contracts.topics" if name in _FROM_TOPICS else "geodesic.contracts.models"
    return getattr(importlib.import_module(module), name)
