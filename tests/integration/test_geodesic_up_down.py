"""`geodesic up` starts everything as separate processes; `geodesic down` stops it all."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.retry import Retry

from geodesic.control.keys import Keys
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


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        return json.loads(r.read())


def _wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 10
    while is_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
        time.sleep(0.05)


def test_one_stack_per_state_dir_found_from_any_directory_and_services_restart(tmp_path):
    """The documented default state dir ($XDG_STATE_HOME/geodesic), not the cwd, holds the
    stack: a second `up` from elsewhere reuses it, `restart` and `up` bring back services
    that died, and `down` from a third directory stops it all."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GEODESIC_KAFKA_BOOTSTRAP", "GEODESIC_REDIS_URL", "GEODESIC_RUN_DIR")
    }
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    here, there, elsewhere = (tmp_path / d for d in ("a", "b", "c"))
    for d in (here, there, elsewhere):
        d.mkdir()

    def geodesic(*args: str, cwd, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "geodesic.cli.main", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    up = geodesic("up", "--registry", str(tmp_path / "registry"), cwd=here)
    assert up.returncode == 0, up.stderr
    first = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        assert first["run_dir"].startswith(str(tmp_path / "xdg" / "geodesic"))
        again = geodesic("up", cwd=there)
        assert again.returncode == 0, again.stderr
        assert "reusing the running stack" in again.stderr
        second = json.loads(again.stdout.strip().splitlines()[-1])
        assert second == first  # same broker, Redis and services: nothing new started

        changed = geodesic("up", "--bar-seconds", "5", cwd=there)
        assert changed.returncode == 1 and "GEODESIC_FEATURE_BAR_SECONDS=1" in changed.stderr

        os.kill(first["pids"]["scorer"], signal.SIGKILL)
        _wait_dead(first["pids"]["scorer"])
        restart = geodesic("restart", "scorer", cwd=elsewhere)
        assert restart.returncode == 0, restart.stderr
        port = first["services"]["scorer"]
        assert _health(port)["ready"]  # same port: scrape configs stay valid
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=2) as r:
            assert json.loads(r.read())["models_loaded"] == [first["active_model"]]

        os.kill(first["pids"]["collector"], signal.SIGKILL)
        _wait_dead(first["pids"]["collector"])
        status = geodesic("status", "--json", cwd=elsewhere, timeout=60)
        assert status.returncode == 1, status.stderr  # documented: a service is down
        rows = {r["service"]: r for r in json.loads(status.stdout)["services"]}
        assert rows["collector"]["state"] == "down" and rows["collector"]["last_seen"]
        assert rows["scorer"]["state"] == "ready" and rows["scorer"]["last_seen_age_s"] < 5
        lags = {n: (rows[n]["lag"], rows[n]["lag_error"]) for n in rows}
        assert all(isinstance(rows[n]["lag"], int) for n in ("feature", "scorer")), lags
        table = geodesic("status", cwd=elsewhere, timeout=60)
        assert table.returncode == 1 and "down" in table.stdout and "Services" in table.stdout

        heal = geodesic("up", cwd=elsewhere)
        assert heal.returncode == 0 and "collector is down: restarting it" in heal.stderr
        healed = json.loads(heal.stdout.strip().splitlines()[-1])
        assert healed["pids"]["collector"] != first["pids"]["collector"]
        assert healed["pids"]["broker"] == first["pids"]["broker"]
        assert _health(healed["services"]["collector"])["ready"]
        assert geodesic("restart", "nope", cwd=elsewhere).returncode == 2
        assert geodesic("status", cwd=elsewhere, timeout=60).returncode == 0
    finally:
        down = geodesic("down", cwd=elsewhere, timeout=60)
    assert down.returncode == 0, down.stderr
    pids = {*first["pids"].values(), *healed["pids"].values()}
    deadline = time.monotonic() + 10
    while any(is_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "processes survived geodesic down"
        time.sleep(0.1)
    assert geodesic("restart", "scorer", cwd=here).returncode == 1


def test_up_runs_redis_with_the_production_acl_and_records_raw_flag_writes(tmp_path):
    """Default user off, services as svc-* users that cannot flip a kill switch, the CLI
    as operator; a raw SET with operator credentials is recorded as EXTERNAL_CHANGE by
    the risk supervisor (audit entry + counter). No password is ever printed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GEODESIC_KAFKA_BOOTSTRAP", "GEODESIC_REDIS_URL", "GEODESIC_RUN_DIR")
    }
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    up = subprocess.run(
        [sys.executable, "-m", "geodesic.cli.main", "up", "--registry", str(tmp_path / "reg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        users = Path(summary["run_dir"]) / "redis-users"
        passwords = {p.name: p.read_text().strip() for p in users.iterdir()}
        assert set(passwords) >= {"operator", "svc-scorer", "svc-risk"}
        assert stat.S_IMODE(users.stat().st_mode) == 0o700
        for secret in passwords.values():
            assert secret not in up.stdout and secret not in up.stderr
        port = int(summary["redis_url"].rsplit(":", 1)[1].split("/")[0])
        keys = Keys()

        def client(user: str | None = None) -> redis.Redis:
            auth = {"username": user, "password": passwords[user]} if user else {}
            return redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), **auth)

        with pytest.raises(AuthenticationError):  # redis-cli with no credentials
            client().set(keys.kill_global, "1")
        with pytest.raises(NoPermissionError):  # an intruder with a service's password
            client("svc-scorer").set(keys.kill_global, "1")
        operator = client("operator")
        assert operator.get(keys.kill_global) is None
        operator.set(keys.kill_global, "1")  # bypasses the CLI: no audit entry, no version

        deadline = time.monotonic() + 20
        while True:
            kinds = [f[b"kind"] for _, f in operator.xrange(keys.audit)]
            if b"EXTERNAL_CHANGE" in kinds:
                break
            assert time.monotonic() < deadline, f"not recorded: {kinds}"
            time.sleep(0.2)
        entry = [f for _, f in operator.xrange(keys.audit) if f[b"kind"] == b"EXTERNAL_CHANGE"]
        assert len(entry) == 1 and entry[0][b"actor"] == b"risk-supervisor"
        assert b"kill_global" in entry[0][b"reason"]
        metrics_port = summary["services"]["risk-supervisor"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            assert "control_external_changes_total 1.0" in r.read().decode()

        off = subprocess.run(  # the CLI finds the operator credentials in the state dir
            [sys.executable, "-m", "geodesic.cli.main", "kill-switch", "off", "--reason", "ok"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert off.returncode == 0, off.stderr
        assert operator.get(keys.kill_global) is None
        operator.close()
    finally:
        subprocess.run(
            [sys.executable, "-m", "geodesic.cli.main", "down"], env=env, timeout=60, check=False
        )
