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
    make_signal_id,
)
from geodesic.contracts.topics import TopicSpec, load_topics, topic_names

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
    "make_signal_id",
    "topic_names",
]
