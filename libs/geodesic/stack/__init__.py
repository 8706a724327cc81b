"""Embedded infrastructure: Tansu (Kafka API) and redis-server from wheels, on loopback.

Names are resolved on first use (PEP 562): importing a light submodule such as
geodesic.stack.home (the operator CLI's emergency path) must not start importing the
broker, Kafka client and contract machinery that the embedded stack needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ENV_KAFKA_BOOTSTRAP": "geodesic.stack.embedded",
    "ENV_REDIS_URL": "geodesic.stack.embedded",
    "EmbeddedStack": "geodesic.stack.embedded",
    "StackInfo": "geodesic.stack.embedded",
    "find_running_stacks": "geodesic.stack.home",
    "stop_all": "geodesic.stack.embedded",
    "stop_from_state": "geodesic.stack.embedded",
    "TopicSetupError": "geodesic.stack.topics",
    "delete_topics": "geodesic.stack.topics",
    "ensure_topics": "geodesic.stack.topics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geodesic.stack' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
