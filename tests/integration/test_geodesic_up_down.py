"""`geodesic up` starts everything as separate processes; `geodesic down` stops it all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from geodesic.stack.processes import is_alive

pytestmark = pytest.mark.integration


def _geodesic(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geodesic.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_prints_addresses_as_last_json_line_and_down_leaves_no_process(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GEODESIC_KAFKA_BOOTSTRAP", "GEODESIC_REDIS_URL")
    }
    env["GEODESIC_RUN_DIR"] = str(tmp_path / "run")
    registry = tmp_path / "registry"
    up = _geodesic("up", "--registry", str(registry), env=env)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        assert summary["bootstrap"].startswith("127.0.0.1:")
        assert summary["redis_url"].startswith("redis://127.0.0.1:")
        assert set(summary["services"]) == {
            "collector",
            "feature",
            "scorer",
            "shadow",
            "risk-supervisor",
        }
        assert len(set(summary["pids"].values())) == 7  # five services + broker + Redis
        for name, port in summary["services"].items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                body = json.loads(r.read())
            assert body["ready"] and body["service"] in (name, "risk-supervisor")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                assert r.status == 200
        with urllib.request.urlopen(
            f"http://127.0.0.1:{summary['services']['scorer']}/info", timeout=2
        ) as r:
            assert json.loads(r.read())["models_loaded"] == [summary["active_model"]]
    finally:
        down = _geodesic("down", env=env, timeout=60)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    while any(is_alive(pid) for pid in summary["pids"].values()):
        assert time.monotonic() < deadline, "processes survived geodesic down"
        time.sleep(0.1)
