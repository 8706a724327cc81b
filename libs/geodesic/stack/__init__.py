"""Embedded infrastructure: Tansu (Kafka API) and redis-server from wheels, on loopback."""

from geodesic.stack.embedded import (
    ENV_KAFKA_BOOTSTRAP,
    ENV_REDIS_URL,
    EmbeddedStack,
    StackInfo,
    find_running_stacks,
    stop_all,
    stop_from_state,
)
from geodesic.stack.topics import TopicSetupError, delete_topics, ensure_topics

__all__ = [
    "ENV_KAFKA_BOOTSTRAP",
    "ENV_REDIS_URL",
    "EmbeddedStack",
    "StackInfo",
    "TopicSetupError",
    "delete_topics",
    "ensure_topics",
    "find_running_stacks",
    "stop_all",
    "stop_from_state",
]
