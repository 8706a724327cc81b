"""Each service, topic and Redis key is declared once; code refers to the declaration.

The greps below fail on a literal topic name, a literal Redis key or an alternative
spelling of a service outside the module that declares it, so a rename in the
declaration cannot leave a stale copy behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from geodesic.contracts import load_topics
from geodesic.contracts.services import SERVICES, service
from geodesic.contracts.topics import EXTERNAL

REPO = Path(__file__).resolve().parents[3]
CODE = [
    p
    for top in ("libs", "services", "bench")
    for p in (REPO / top).rglob("*.py")
    if "__pycache__" not in p.parts
]
TOPICS_MODULE = REPO / "libs/geodesic/contracts/topics.py"
SERVICES_MODULE = REPO / "libs/geodesic/contracts/services.py"
KEYS_MODULE = REPO / "libs/geodesic/control/keys.py"


def literal_hits(pattern: str, allowed: set[Path]) -> list[str]:
    rx = re.compile(pattern)
    hits = []
    for path in CODE:
        if path in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if rx.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    return hits


def test_topics_yaml_names_only_declared_services_and_every_service_has_input() -> None:
    names = set(SERVICES) | {EXTERNAL}
    for topic in load_topics().values():
        assert set(topic.producers) <= names, topic.name
        assert set(topic.consumers) <= names, topic.name
        assert topic.producers, f"{topic.name} has no producer"
    for spec in SERVICES.values():
        assert spec.topics("in"), f"{spec.name} reads nothing"
        assert spec.dlq_topic()  # exactly one dead-letter topic each


def test_services_are_found_by_name_and_a_typo_lists_the_names() -> None:
    assert service("risk-supervisor").env_prefix == "GEODESIC_RISK_SUPERVISOR_"
    with pytest.raises(LookupError, match="collector, feature, scorer"):
        service("risk")


def test_no_topic_name_is_written_as_a_literal_in_code() -> None:
    names = "|".join(re.escape(n) for n in load_topics())
    assert literal_hits(rf"[\"']({names})[\"']", {TOPICS_MODULE}) == []


def test_no_redis_key_is_written_as_a_literal_outside_the_key_module() -> None:
    assert literal_hits(r"[\"']geodesic:[a-z]", {KEYS_MODULE}) == []


def test_no_service_is_named_by_hand_where_its_declaration_should_be_used() -> None:
    names = "|".join(re.escape(n) for n in SERVICES)
    lookups = (
        rf"services\[[\"']({names})[\"']\]",  # fleet.services["scorer"]
        rf"service_state\([\"']({names})[\"']",  # Redis state of a service
        rf"CheckpointStore\([^)]*[\"']({names})[\"']",
        r"[\"']risk_supervisor[\"']",  # the package, outside its declaration
        r"[\"']GEODESIC_(COLLECTOR|FEATURE|SCORER|SHADOW|RISK)_",  # use spec.env_prefix
        rf"[\"']geodesic-({names})[\"']",  # a group id
    )
    for pattern in lookups:
        assert literal_hits(pattern, {SERVICES_MODULE}) == [], pattern
