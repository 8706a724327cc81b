"""The five services, each declared once: name, package, settings prefix, topics, state.

Everything that needs to know a service (its runner, the process fleet, the CLI, the
demo, the benches) reads it from here, so a service is never known by two names. Its
topics are not written here either: topics.yaml lists who produces and who consumes each
topic, and a spec looks its own up by schema (each service reads or writes at most one
topic per schema and direction; the dead-letter topic is the one exception, see
``dlq_topic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from geodesic.contracts.topics import TopicSpec

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class ServiceSpec:
    """One service's identity. ``name`` is the only spelling used anywhere else."""

    name: str
    package: str
    summary: str
    #: Names of the JSON documents the service publishes in Redis (Keys.service_state).
    state: tuple[str, ...] = ()

    @property
    def env_prefix(self) -> str:
        """Prefix of the service's own settings (shared ones are GEODESIC_*)."""
        return f"GEODESIC_{self.package.upper()}_"

    @property
    def group_id(self) -> str:
        return f"geodesic-{self.name}"

    @property
    def module(self) -> str:
        """What ``python -m`` runs."""
        return self.package

    def topics(self, direction: Direction) -> tuple[TopicSpec, ...]:
        # imported here: topics.yaml pulls the pydantic contracts, and the control plane's
        # key layout (read by the CLI's lean emergency path) needs only the names above
        from geodesic.contracts.topics import load_topics

        specs = load_topics().values()
        if direction == "in":
            return tuple(t for t in specs if self.name in t.consumers)
        return tuple(t for t in specs if self.name in t.producers)

    def topic(self, direction: Direction, schema: str) -> str:
        """The one topic of ``schema`` this service reads (in) or writes (out)."""
        found = [t.name for t in self.topics(direction) if t.schema == schema]
        if len(found) != 1:
            raise LookupError(
                f"topics.yaml gives {self.name} {len(found)} {direction}put topics of schema "
                f"{schema!r} ({found}); it must give exactly one"
            )
        return found[0]

    def dlq_topic(self) -> str:
        """Where this service dead-letters records it cannot process."""
        return self.topic("out", "DeadLetter")


COLLECTOR = ServiceSpec(
    "collector", "collector", "validates and de-duplicates ticks; dead-letters the rest"
)
FEATURE = ServiceSpec("feature", "feature", "time bars and drift-robust features")
SCORER = ServiceSpec("scorer", "scorer", "scores features with the active or canary model")
SHADOW = ServiceSpec(
    "shadow", "shadow", "scores with the shadow model, observe-only", state=("stats",)
)
RISK_SUPERVISOR = ServiceSpec(
    "risk-supervisor",
    "risk_supervisor",
    "outcomes, win rates, drift; rollbacks and halts",
    state=("status",),
)

#: In pipeline order; `geodesic up` starts them in this order.
SERVICES: dict[str, ServiceSpec] = {
    s.name: s for s in (COLLECTOR, FEATURE, SCORER, SHADOW, RISK_SUPERVISOR)
}


def service(name: str) -> ServiceSpec:
    """Look a service up by name; the error lists the valid names."""
    try:
        return SERVICES[name]
    except KeyError:
        raise LookupError(f"no service {name!r}; services are: {', '.join(SERVICES)}") from None
