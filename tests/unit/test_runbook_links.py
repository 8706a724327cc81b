"""Every alert links to a runbook section that exists, and every automatic action has one."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTS = ROOT / "infra" / "prometheus" / "alerts.yml"

#: what the risk supervisor, the scorer or the fleet does on its own
AUTOMATIC_ACTIONS = (
    "precision-halt",
    "volatility-halt",
    "parity-failure",
    "drift-rollback",
    "canary-abort-automatic-ramp",
    "rollback-after-promotion",
    "stale-control-plane",
    "dead-service",
)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors() -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), flags=re.M)}


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_links_to_an_existing_runbook_section() -> None:
    known = anchors()
    rules = alert_rules()
    assert rules
    for rule in rules:
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", f"{rule['alert']}: runbook_url {url!r}"
        assert anchor in known, f"{rule['alert']}: no runbook heading for #{anchor}"


def test_every_automatic_action_has_a_runbook_section() -> None:
    missing = [a for a in AUTOMATIC_ACTIONS if a not in anchors()]
    assert not missing, f"runbook sections missing: {missing}"


def test_every_alert_is_in_the_runbook_index() -> None:
    text = RUNBOOK.read_text()
    for rule in alert_rules():
        assert f"| {rule['alert']} |" in text, f"{rule['alert']} is not in the runbook's table"
