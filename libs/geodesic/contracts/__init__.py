"""Event contracts: one pydantic model per topic payload, JSON on the wire."""

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
