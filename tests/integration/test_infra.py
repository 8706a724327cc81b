"""infra/ and the deployment files: valid, consistent with each other and with the code.

- Prometheus: `promtool check config`, `check rules` and the rule unit tests.
- Metrics: every metric an alert or a dashboard query names is in the documented list
  (infra/prometheus/metrics.yaml), and so is every metric the code registers.
- Grafana: the dashboard JSON and the provisioning files.
- docker-compose.yml: `docker-compose config -q` (offline), ports and commands agree with
  prometheus.yml and the services; required secrets have no defaults.
- infra/kafka/create_topics.py: plan, create and shape check on the embedded broker.

Tools come from Debian: `apt-get install -y prometheus docker-compose` (promtool is in
the prometheus package). A check whose tool is missing skips and names the package.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "infra" / "prometheus"
GRAFANA = REPO / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "geodesic.json"
COMPOSE = REPO / "docker-compose.yml"
SERVICES = ("collector", "feature", "scorer", "shadow", "risk-supervisor")

pytestmark = pytest.mark.timeout(120)


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)


# ---- Prometheus -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not on PATH: apt-get install -y prometheus")
    return path


def test_prometheus_config_and_its_rule_file_are_valid(promtool: str) -> None:
    result = _run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_valid(promtool: str) -> None:
    result = _run([promtool, "check", "rules", str(PROM / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    result = _run([promtool, "test", "rules", str(PROM / "tests" / "alerts_test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_duration_a_severity_and_annotations() -> None:
    rules = _alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules), "alert names must be unique"
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_is_exercised_by_the_rule_unit_tests() -> None:
    tests = yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in _alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown not firing"


def test_scrape_targets_match_the_compose_services_ports() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    for service in SERVICES:
        env = compose[service]["environment"]
        (port,) = [v for k, v in env.items() if k.endswith("_HTTP_PORT")]
        assert targets[service] == [f"{service}:{port}"]
        assert any(k.endswith("_HTTP_HOST") and v == "0.0.0.0" for k, v in env.items())
        assert f":{port}/health" in " ".join(compose[service]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}:{port}" in compose[service]["ports"]
    for job, job_targets in targets.items():
        assert job in (*SERVICES, "prometheus"), f"unknown scrape job {job}"
        assert job_targets


# ---- metric names -----------------------------------------------------------------------

_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
}  # fmt: skip
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (selectors, not functions, labels or keywords)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _PROMQL_WORDS:
            continue
        names.add(name)
    return names


def test_promql_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(stage_latency_ms_bucket{job="a",'
        'stage=~"x|y"}[5m]))) > 5 and on (job) max without (instance) (up) == 1 '
        "or rate(dlq_total[$__rate_interval]) / ignoring(reason) group_left x_total offset 1m"
    )
    assert promql_metric_names(expr) == {"stage_latency_ms_bucket", "up", "dlq_total", "x_total"}
    assert promql_metric_names("sum(increase(rollback_total[15m])) > 1e-9") == {"rollback_total"}


@pytest.fixture(scope="module")
def catalogue() -> dict[str, dict[str, Any]]:
    entries = yaml.safe_load((PROM / "metrics.yaml").read_text())["metrics"]
    by_name = {e["name"]: e for e in entries}
    assert len(by_name) == len(entries), "duplicate metric names in metrics.yaml"
    for entry in entries:
        assert entry["type"] in {"counter", "gauge", "histogram", "summary"}, entry["name"]
        assert entry.get("help"), entry["name"]
        assert set(entry["services"]) <= {*SERVICES, "prometheus"}, entry["name"]
        if entry["type"] == "counter":
            assert entry["name"].endswith("_total"), f"{entry['name']}: counters end in _total"
    return by_name


def _undocumented(names: set[str], catalogue: dict[str, dict[str, Any]]) -> list[str]:
    bad = []
    for name in sorted(names):
        entry = catalogue.get(name)
        if entry is not None:
            if entry["type"] in ("histogram", "summary"):
                bad.append(f"{name} is a {entry['type']}: use {name}_bucket/_sum/_count")
            continue
        base = next((name[: -len(s)] for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base and catalogue.get(base, {}).get("type") in ("histogram", "summary"):
            continue
        bad.append(f"{name} is not in infra/prometheus/metrics.yaml")
    return bad


def _dashboard_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def alert_metric_names() -> set[str]:
    return set().union(*(promql_metric_names(r["expr"]) for r in _alert_rules()))


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return set().union(*(promql_metric_names(t["expr"]) for _, t in _dashboard_targets(dashboard)))


def test_alerts_use_only_documented_metrics(catalogue: dict[str, dict[str, Any]]) -> None:
    assert _undocumented(alert_metric_names(), catalogue) == []


def test_dashboard_uses_only_documented_metrics(catalogue: dict[str, dict[str, Any]]) -> None:
    assert _undocumented(dashboard_metric_names(), catalogue) == []


_PROM_TYPES = {
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
}


def registered_metrics() -> dict[str, tuple[str, str]]:
    """{exposed name: (type, where)} for every prometheus_client metric the code creates."""
    found: dict[str, tuple[str, str]] = {}
    for root in (REPO / "services", REPO / "libs"):
        for path in sorted(root.rglob("*.py")):
            source = path.read_text()
            if "prometheus_client" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if kind not in _PROM_TYPES or not node.args:
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    continue
                name = first.value
                if kind == "Counter" and not name.endswith("_total"):
                    name += "_total"  # prometheus_client exposes counters with _total
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                found[name] = (_PROM_TYPES[kind], where)
    return found


def test_every_metric_the_code_registers_is_documented_with_its_type(
    catalogue: dict[str, dict[str, Any]],
) -> None:
    registered = registered_metrics()
    assert "collector_received_total" in registered  # the scan itself works
    problems = []
    for name, (kind, where) in sorted(registered.items()):
        entry = catalogue.get(name)
        if entry is None:
            problems.append(f"{where}: {name} is not in infra/prometheus/metrics.yaml")
        elif entry["type"] != kind:
            problems.append(f"{where}: {name} is a {kind}, metrics.yaml says {entry['type']}")
    assert problems == []


# ---- Grafana ----------------------------------------------------------------------------


def test_dashboard_json_is_a_well_formed_provisionable_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None, "provisioned dashboards carry no id"
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes = []
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, f"{panel['title']}: no queries"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1 :]:
            overlap = (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            )
            assert not overlap, f"panels {title_a!r} and {title_b!r} overlap"


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses every panel query, written as a recording rule.

    Grafana's interval variables are replaced by a duration first, as Grafana does.
    """
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [
        {"record": f"dashboard:query:{i}", "expr": re.sub(r"\$__\w+", "5m", target["expr"])}
        for i, (_, target) in enumerate(_dashboard_targets(dashboard))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_covers_the_required_metrics() -> None:
    used = {n.removesuffix("_bucket") for n in dashboard_metric_names()}
    required = {
        "signals_total", "collector_received_total", "dlq_total", "stage_latency_ms",
        "e2e_latency_ms", "winrate_baseline_active", "winrate_canary", "sample_canary",
        "psi", "ks", "ann_recall", "ef_search", "k_cand", "param_bumps_total",
        "fallback_total", "eff_k", "ece", "model_active_id", "model_shadow_id",
        "shadow_match_rate", "kill_switch_active", "rollback_total", "mode_switch_total",
    }  # fmt: skip
    assert required - used == set()


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    (prom,) = [d for d in datasources if d["type"] == "prometheus"]
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == prom["uid"]
    assert prom["url"] == "http://prometheus:9090"

    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "geodesic.yml").read_text()
    )["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["volumes"]}  # target: source
    for provider in providers:
        assert mounts[provider["options"]["path"]] == "./infra/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./infra/grafana/provisioning"


# ---- docker-compose ---------------------------------------------------------------------


def _required_variables() -> set[str]:
    """Variables docker-compose.yml interpolates as `${VAR:?message}` (comments aside)."""
    lines = [line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")]
    return set(re.findall(r"\$\{(\w+):\?", "\n".join(lines)))


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and _run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("docker-compose not on PATH: apt-get install -y docker-compose")
    return command


def _compose_env(**values: str) -> dict[str, str]:
    """A clean environment: nothing from the caller's shell or a developer's .env leaks in."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **values}


def test_compose_file_is_valid_with_its_required_variables(
    compose_cmd: list[str], tmp_path: Path
) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "".join(f"{v}=test-only-secret-0123456789\n" for v in _required_variables())
    )
    argv = [*compose_cmd, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"]
    result = _run(argv, cwd=REPO, env=_compose_env())
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_refuses_to_start_without_secrets(compose_cmd: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    argv = [*compose_cmd, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"]
    result = _run(argv, cwd=REPO, env=_compose_env())
    assert result.returncode != 0
    assert "GEODESIC_REDIS_PASSWORD_" in result.stderr or "GRAFANA_" in result.stderr


def test_env_example_lists_every_required_variable_without_values() -> None:
    lines = (REPO / ".env.example").read_text().splitlines()
    assigned = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(assigned) == _required_variables()
    assert all(value == "" for value in assigned.values()), ".env.example must hold no secret"


def test_compose_commands_exist_in_the_image() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in compose.items():
        command = service.get("command") or []
        if command[:2] == ["python", "-m"]:
            module = command[2]
            assert (REPO / "services" / module / "__main__.py").exists(), name
        elif command[:1] == ["python"]:
            script = Path(command[1])
            assert script.is_relative_to("/app/infra"), name
            assert (REPO / script.relative_to("/app")).exists(), name
    modules = {
        s["command"][2] for s in compose.values() if s.get("command", [])[:2] == ["python", "-m"]
    }
    assert modules == {"collector", "feature", "scorer", "shadow", "risk_supervisor"}


def test_services_use_their_own_redis_user_and_apache_kafka() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    template = (REPO / "infra" / "redis" / "users.acl.template").read_text()
    users = {"collector": "svc-collector", "feature": "svc-feature", "scorer": "svc-scorer",
             "shadow": "svc-shadow", "risk-supervisor": "svc-risk"}  # fmt: skip
    for service, user in users.items():
        env = compose[service]["environment"]
        assert env["GEODESIC_REDIS_URL"].startswith(f"redis://{user}:${{"), service
        assert env["GEODESIC_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["GEODESIC_KAFKA_BROKER_FLAVOR"] == "kafka"
        assert env["GEODESIC_MODEL_REGISTRY"] == "/models/registry"
        assert "./models/registry:/models/registry:ro" in compose[service]["volumes"]
        assert f"user {user} " in template


# ---- topic creation ---------------------------------------------------------------------

CREATE_TOPICS = REPO / "infra" / "kafka" / "create_topics.py"


def test_create_topics_dry_run_plans_every_topic_of_topics_yaml() -> None:
    result = _run([sys.executable, str(CREATE_TOPICS), "--dry-run"], cwd=REPO)
    assert result.returncode == 0, result.stderr
    topics_yaml = REPO / "libs" / "geodesic" / "contracts" / "topics.yaml"
    declared = [t["name"] for t in yaml.safe_load(topics_yaml.read_text())["topics"]]
    planned = re.findall(r"topic (\S+): partitions=", result.stderr)
    assert planned == declared


def test_create_topics_rejects_a_broken_topics_file(tmp_path: Path) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text("topics:\n  - name: x\n    schema: NoSuchSchema\n")
    result = _run([sys.executable, str(CREATE_TOPICS), "--dry-run", "--topics-file", str(bad)])
    assert result.returncode == 2
    assert "NoSuchSchema" in result.stderr


@pytest.mark.integration
def test_create_topics_creates_then_accepts_then_refuses_a_reshaped_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"infra-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "GEODESIC_KAFKA_BOOTSTRAP": kafka_bootstrap}

    def run(partitions: int) -> subprocess.CompletedProcess[str]:
        path = tmp_path / f"topics-{partitions}.yaml"
        path.write_text(
            yaml.safe_dump({"topics": [{"name": name, "schema": "Tick", "partitions": partitions}]})
        )
        argv = [sys.executable, str(CREATE_TOPICS), "--topics-file", str(path), "--timeout", "20"]
        return _run(argv, env=env)

    try:
        first = run(2)
        assert first.returncode == 0, first.stderr
        assert re.search(rf"created 1 topic\(s\): {re.escape(name)}", first.stderr)
        again = run(2)
        assert again.returncode == 0, again.stderr
        assert re.search(rf"already present with the declared partitions: {name}", again.stderr)
        reshaped = run(3)
        assert reshaped.returncode == 1
        assert f"{name} has 2 partitions, topics.yaml says 3" in reshaped.stderr
    finally:
        _delete_topic(kafka_bootstrap, name)


def _delete_topic(bootstrap: str, name: str) -> None:
    import asyncio

    from geodesic.runtime.kafka import KafkaSettings
    from geodesic.stack.topics import delete_topics

    asyncio.run(delete_topics(KafkaSettings(bootstrap=bootstrap), [name]))
