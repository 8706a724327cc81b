"""The operator CLI against the session Redis: every command through `main([...])`.

Each test has its own key prefix; models are small signed directories (verification only
reads manifests and hashes, so no index needs to be built).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from collector.app import CollectorService
from collector.settings import CollectorSettings
from geodesic.cli.main import main
from geodesic.contracts import Tick
from geodesic.contracts.services import RISK_SUPERVISOR, SHADOW
from geodesic.control import ControlPlane, TradingState, route_for
from geodesic.control.keys import Keys
from geodesic.features import FEATURE_NAMES, SCHEMA_HASH
from geodesic.lifecycle.registry import sign_model_dir
from geodesic.lifecycle.signing import resolve_signing_key
from geodesic.runtime.kafka import make_producer
from geodesic.runtime.service import ServiceRunner
from geodesic.stack.topics import TopicShape, delete_topics, ensure_topics

pytestmark = pytest.mark.integration
KEY = "o" * 40


def _gate(name: str, value: float, limit: float, comparison: str, passed: bool) -> dict:
    return {
        "name": name,
        "value": value,
        "limit": limit,
        "comparison": comparison,
        "passed": passed,
    }


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """m1, m2, m3 pass their offline gates; weak fails one; tampered has an edited file."""
    monkeypatch.setenv("GEODESIC_MODEL_SIGNING_KEY", KEY)
    monkeypatch.delenv("GEODESIC_MODEL_SIGNING_KEY_FILE", raising=False)
    root = tmp_path / "models" / "registry"
    key = resolve_signing_key()
    for model_id, ok in (
        ("m1", True),
        ("m2", True),
        ("m3", True),
        ("weak", False),
        ("tampered", True),
    ):
        d = root / model_id
        d.mkdir(parents=True)
        (d / "labels.npy").write_bytes(b"\x93NUMPY fake labels for " + model_id.encode())
        gates = [
            _gate("auc_above_chance", 0.56, 0.5, ">", True),
            _gate("ece", 0.03 if ok else 0.09, 0.05, "<", ok),
        ]
        fields = {
            "model_id": model_id,
            "schema_hash": SCHEMA_HASH,
            "feature_names": list(FEATURE_NAMES),
            "gates": gates,
            "gates_passed": ok,
        }
        sign_model_dir(d, fields, key)
    (root / "tampered" / "labels.npy").write_bytes(b"\x93NUMPY edited after signing")
    other = root / "other-schema"  # signed and passing, but built for another feature set
    other.mkdir()
    (other / "labels.npy").write_bytes(b"\x93NUMPY labels")
    fields = {
        "model_id": "other-schema",
        "schema_hash": "0" * 16,
        "feature_names": ["something_else"],
        "gates": [_gate("auc_above_chance", 0.56, 0.5, ">", True)],
        "gates_passed": True,
    }
    sign_model_dir(other, fields, key)
    return root


@pytest.fixture
def cli(redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture):
    """Run `geodesic ...` in a thread (commands call asyncio.run); returns (rc, out, err)."""

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        argv = [*args, "--redis-url", redis_url, "--prefix", redis_prefix]
        try:
            rc = await asyncio.to_thread(main, argv)
        except SystemExit as exc:  # argparse: usage errors exit 2, as the process would
            rc = int(exc.code or 0)
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture
def plane(redis_client, redis_prefix: str) -> ControlPlane:
    return ControlPlane(redis_client, redis_prefix)


async def test_kill_switch_on_and_off_changes_the_snapshot_and_appends_audit(cli, plane):
    rc, out, _ = await cli("kill-switch", "on", "--reason", "venue outage", "--actor", "alice")
    assert rc == 0 and "kill switch global: ON (was OFF)" in out
    rc, out, _ = await cli("kill-switch", "on", "--symbol", "ES", "--reason", "bad prints")
    assert rc == 0 and "symbols: ES" in out
    snap = await plane.snapshot()
    assert snap.kill_global and snap.kill_symbols == {"ES"}
    assert snap.trading_state("NQ") is TradingState.HALTED

    rc, out, _ = await cli("kill-switch", "off", "--reason", "venue back", "--actor", "alice")
    assert rc == 0 and "OFF (was ON)" in out
    snap = await plane.snapshot()
    assert not snap.kill_global and snap.kill_symbols == {"ES"}

    audit = await plane.audit_log(10)
    assert [(e["kind"], e["symbol"], e["to"]) for e in audit] == [
        ("KILL_SWITCH", "", "true"),
        ("KILL_SWITCH", "ES", "true"),
        ("KILL_SWITCH", "", "false"),
    ]
    assert audit[0]["actor"] == "alice" and audit[0]["reason"] == "venue outage"

    rc, _, err = await cli("kill-switch", "on")  # no --reason: usage error
    assert rc == 2 and "--reason" in err


async def test_promote_refuses_tampered_and_failing_models_and_cooldown_unless_forced(
    cli, plane, registry
):
    reg = ["--registry", str(registry)]
    assert (await cli("promote", "m1", "--reason", "first model", *reg))[0] == 0
    rc, _, err = await cli("promote", "tampered", "--reason", "try", *reg)
    assert rc == 1 and "REFUSED" in err and "labels.npy" in err and "sha256" in err
    rc, _, err = await cli("promote", "weak", "--reason", "try", *reg)
    assert rc == 1 and "ece" in err
    rc, _, err = await cli("promote", "ghost", "--reason", "try", *reg)
    assert rc == 1 and "not found" in err
    assert (await plane.snapshot()).active == "m1"

    assert (await cli("promote", "m2", "--reason", "better", *reg))[0] == 0
    rc, out, _ = await cli("rollback", "--reason", "m2 misbehaves", *reg)
    assert rc == 0 and "cooldown until" in out
    snap = await plane.snapshot()
    assert snap.active == "m1" and snap.cooldown_until_ns > 0

    rc, _, err = await cli("promote", "m3", "--reason", "during cooldown", *reg)
    assert rc == 1 and "cooldown active" in err
    rc, out, err = await cli("promote", "m3", "--reason", "urgent fix", "--force", *reg)
    assert rc == 0 and "WARNING forced past: cooldown" in err
    snap = await plane.snapshot()
    assert (snap.active, snap.previous) == ("m3", "m1")
    last = (await plane.audit_log(1))[0]
    assert last["kind"] == "PROMOTE" and "FORCED past: cooldown" in last["reason"]

    rc, _, err = await cli("promote", "weak", "--reason", "accept ece", "--force", *reg)
    assert rc == 0 and (await plane.snapshot()).active == "weak"
    assert "FORCED past: ece" in (await plane.audit_log(1))[0]["reason"]


async def test_force_overrides_gates_but_never_existence_signature_or_schema(cli, plane, registry):
    reg = ["--registry", str(registry)]
    assert (await cli("promote", "m1", "--reason", "base", *reg))[0] == 0
    for model, says in (
        ("no-such-model", "not found"),
        ("tampered", "sha256"),
        ("other-schema", "schema"),
    ):
        rc, _, err = await cli("promote", model, "--reason", "urgent", "--force", *reg)
        assert rc == 1 and says in err and "--force cannot override" in err, (model, err)
        rc, _, err = await cli(
            "rollout", "canary", "--candidate", model, "--fraction", "0.1", "--reason", "x",
            "--force", *reg,
        )  # fmt: skip
        assert rc == 1 and says in err, (model, err)
        rc, _, err = await cli("shadow", model, "--reason", "x", "--force", *reg)
        assert rc == 1 and says in err, (model, err)
    snap = await plane.snapshot()
    assert (snap.active, snap.previous, snap.shadow) == ("m1", None, None)
    assert snap.rollout.mode == "disabled"
    assert [e["kind"] for e in await plane.audit_log(10)] == ["PROMOTE"]


async def test_rollback_refuses_to_revert_to_a_previous_model_that_cannot_serve(
    cli, plane, registry
):
    reg = ["--registry", str(registry)]
    assert (await cli("promote", "m1", "--reason", "base", *reg))[0] == 0
    assert (await cli("promote", "m2", "--reason", "next", *reg))[0] == 0
    (registry / "m1" / "labels.npy").write_bytes(b"\x93NUMPY corrupted on disk")
    rc, _, err = await cli("rollback", "--reason", "m2 misbehaves", "--force", *reg)
    assert rc == 1 and "previous model m1 cannot serve" in err and "geodesic promote" in err
    snap = await plane.snapshot()
    assert (snap.active, snap.previous, snap.cooldown_until_ns) == ("m2", "m1", 0)


async def test_canary_rollout_then_promote_closes_the_rollout(cli, plane, registry):
    reg = ["--registry", str(registry)]
    assert (await cli("promote", "m1", "--reason", "base", *reg))[0] == 0
    rc, _, err = await cli(
        "rollout", "canary", "--candidate", "tampered", "--fraction", "0.2", "--reason", "x", *reg
    )
    assert rc == 1 and "sha256" in err
    rc, out, _ = await cli(
        "rollout",
        "canary",
        "--candidate",
        "m2",
        "--fraction",
        "0.2",
        "--seed",
        "7",
        "--reason",
        "try m2",
        *reg,
    )
    assert rc == 0 and "20.00%" in out
    r = (await plane.snapshot()).rollout
    assert (r.mode, r.canary_fraction, r.seed, r.candidate) == ("canary", 0.2, 7, "m2")
    rc, _, err = await cli(
        "rollout", "canary", "--candidate", "m2", "--fraction", "1.5", "--reason", "x"
    )
    assert rc == 2 and "fraction" in err

    assert (await cli("promote", "m2", "--reason", "canary good", *reg))[0] == 0
    snap = await plane.snapshot()
    assert (snap.active, snap.previous, snap.rollout.mode) == ("m2", "m1", "disabled")
    assert (await cli("shadow", "m3", "--reason", "evaluate m3", *reg))[0] == 0
    assert (await plane.snapshot()).shadow == "m3"
    assert (await cli("shadow", "--clear", "--reason", "done"))[0] == 0
    assert (await plane.snapshot()).shadow is None


async def test_status_json_shows_what_was_set(cli, plane, redis_client, redis_prefix, registry):
    reg = ["--registry", str(registry)]
    await cli("promote", "m1", "--reason", "base", *reg)
    await cli(
        "rollout",
        "canary",
        "--candidate",
        "m2",
        "--fraction",
        "0.1",
        "--seed",
        "3",
        "--reason",
        "canary",
        *reg,
    )
    await cli("kill-switch", "on", "--symbol", "NQ", "--reason", "halt NQ")
    await cli("halt", "--symbol", "ES", "--state", "REDUCING", "--reason", "vol")
    keys = Keys(redis_prefix)
    risk = {
        "guards": {
            "canary_winrate": {
                "guard": "canary_winrate",
                "verdict": "insufficient_data",
                "reason": "need 100",
                "value": None,
                "limit": None,
            }
        },
        "winrates": {
            "active": {"wins": 60, "n": 100, "rate": 0.6, "lower": 0.5, "upper": 0.69},
            "canary": {"wins": 0, "n": 0, "rate": None, "lower": None, "upper": None},
        },
        "drift": {
            "ret_1": {
                "n": 10,
                "psi": float("nan"),
                "psi_level": float("inf"),
                "ks": 0.0,
                "ks_level": 1.0,
            }
        },
        "actions": [],
    }
    # the supervisor writes json.dumps(default=str): NaN/Infinity literals included
    await redis_client.set(keys.service_state(RISK_SUPERVISOR.name, "status"), json.dumps(risk))
    await redis_client.set(
        keys.service_state(SHADOW.name, "stats"),
        json.dumps({"match_rate": 0.92, "window": 50, "parity_fail": 0, "mean_abs_delta": 0.01}),
    )
    rc, out, _ = await cli("status", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["slots"] == {"active": "m1", "shadow": None, "previous": None}
    assert doc["rollout"] == {
        "mode": "canary",
        "canary_fraction": 0.1,
        "seed": 3,
        "candidate": "m2",
    }
    assert doc["kill_switches"] == {"global": False, "symbols": ["NQ"]}
    assert doc["trading_states"]["symbols"] == {"ES": "REDUCING"}
    assert doc["cooldown"]["active"] is False
    assert [e["kind"] for e in doc["audit"]] == ["PROMOTE", "ROLLOUT", "KILL_SWITCH", "HALT"]
    assert doc["winrates"]["active"]["rate"] == 0.6
    assert doc["winrates"]["canary"] == {
        **doc["winrates"]["canary"],
        "rate": None,
        "status": "insufficient data",
        "model": "m2",
    }
    assert doc["drift"]["features"][0]["status"] == "insufficient data"
    assert doc["shadow"]["match_rate"] == 0.92
    assert doc["source"]["prefix"] == redis_prefix

    rc, out, _ = await cli("status")
    assert rc == 0 and "insufficient data" in out and "canary" in out and "REDUCING" in out


async def test_history_answers_which_model_served_at_known_times(cli, plane, registry):
    reg = ["--registry", str(registry)]
    await cli("promote", "m1", "--reason", "first", *reg)
    await asyncio.sleep(0.01)
    await cli(
        "rollout",
        "canary",
        "--candidate",
        "m2",
        "--fraction",
        "0.3",
        "--seed",
        "11",
        "--reason",
        "canary m2",
        *reg,
    )
    await asyncio.sleep(0.01)
    await cli("promote", "m2", "--reason", "canary won", *reg)
    await asyncio.sleep(0.01)
    await cli("promote", "m3", "--reason", "next", *reg)
    ts = [int(e["ts_ns"]) for e in await plane.audit_log(10)]
    kinds = [e["kind"] for e in await plane.audit_log(10)]
    assert kinds == ["PROMOTE", "ROLLOUT", "PROMOTE", "ROLLOUT", "PROMOTE"]
    # promoting the candidate closes its rollout in a second audited change
    t_first, t_canary, t_promote2, t_closed, t_promote3 = ts

    async def at(when: str, *extra: str) -> dict:
        rc, out, _ = await cli("history", "--symbol", "ES", "--at", when, "--json", *extra)
        assert rc == 0
        return json.loads(out)

    assert (await at(str(t_first)))["active"] == "m1"
    during = await at(str(t_canary + 1), "--bar-index", "0")
    assert during["active"] == "m1" and during["canary"]
    assert during["rollout"] == {
        "mode": "canary",
        "canary_fraction": 0.3,
        "seed": 11,
        "candidate": "m2",
    }
    for bar in range(30):
        doc = await at(str(t_canary + 1), "--bar-index", str(bar))
        expect = "m2" if route_for(11, "ES", bar, 0.3) else "m1"
        assert doc["route"]["model"] == expect
    promoted = await at(str(t_promote2))
    assert promoted["active"] == "m2" and promoted["previous"] == "m1"
    after = await at(str(t_closed))
    assert after["active"] == "m2" and not after["canary"]
    assert (await at(str(t_promote3)))["active"] == "m3"
    assert (await at("now"))["active"] == "m3"

    from geodesic.operations.common import format_ns

    iso = format_ns(t_closed + 1000)  # microsecond ISO, after the promotion
    assert (await at(iso))["active"] == "m2"

    rc, out, err = await cli("history", "--symbol", "ES", "--at", str(t_first - 10**9))
    assert rc == 1 and "unknown" in out and "cannot say" in err
    assert f"starts at {format_ns(t_first)}" in out

    rc, out, _ = await cli("history", "--list", "--kind", "PROMOTE", "--json")
    assert rc == 0 and [e["to"]["active"] for e in json.loads(out)] == ["m1", "m2", "m3"]
    rc, out, _ = await cli("history", "--list", "--since", str(t_promote2), "--json")
    assert [e["kind"] for e in json.loads(out)] == ["PROMOTE", "ROLLOUT", "PROMOTE"]
    rc, out, _ = await cli("history", "--list")
    assert rc == 0 and "canary m2" in out


async def test_gates_exit_codes_for_scripts(cli, plane, redis_client, redis_prefix, registry):
    reg = ["--registry", str(registry)]
    rc, out, _ = await cli("gates", "m2", "--offline", "--json", *reg)
    assert rc == 0 and json.loads(out)["passed"]
    rc, out, _ = await cli("gates", "weak", "--offline", "--json", *reg)
    assert rc == 1 and json.loads(out)["failed"] == ["ece"]
    rc, _, err = await cli("gates", "ghost", *reg)
    assert rc == 2 and "not found" in err

    await cli("promote", "m1", "--reason", "base", *reg)
    await cli("rollout", "canary", "--candidate", "m2", "--fraction", "0.5", "--reason", "c", *reg)
    rc, out, _ = await cli("gates", "m2", "--json", *reg)  # no live evidence yet
    table = json.loads(out)
    assert rc == 1 and "canary_samples" in table["failed"]
    drift = {
        f: {"n": 500, "psi": 0.01, "psi_level": 0.1, "ks": 0.02, "ks_level": 0.1}
        for f in ("ret_1", "vol_5")
    }
    risk = {
        "winrates": {"active": {"wins": 250, "n": 500}, "canary": {"wins": 260, "n": 500}},
        "drift": drift,
        "guards": {"parity": {"guard": "parity", "verdict": "ok", "value": 0.0}},
    }
    status_key = Keys(redis_prefix).service_state(RISK_SUPERVISOR.name, "status")
    await redis_client.set(status_key, json.dumps(risk))
    rc, out, _ = await cli("gates", "m2", *reg)
    assert rc == 0 and "all gates pass" in out


async def test_connection_errors_exit_2_without_showing_the_password(capsys):
    url = "redis://operator:hunter2-very-secret@127.0.0.1:1/0"
    rc = await asyncio.to_thread(main, ["status", "--redis-url", url])
    _, err = capsys.readouterr()
    assert rc == 2 and "hunter2-very-secret" not in err and "operator:***@127.0.0.1:1" in err


async def test_report_writes_json_csv_and_charts(cli, plane, registry, tmp_path):
    await cli("promote", "m1", "--reason", "base", "--registry", str(registry))
    out_dir = tmp_path / "daily"
    rc, out, _ = await cli(
        "report", "--out", str(out_dir), "--hours", "1", "--metrics-url", "http://127.0.0.1:1/m"
    )
    assert rc == 0 and "latency chart omitted" in out
    report = json.loads((out_dir / "report.json").read_text())
    assert report["audit"]["count"] == 1 and report["control"]["slots"]["active"] == "m1"
    assert any(n.startswith("metrics: ") for n in report["notes"])
    for name in ("audit_events.csv", "winrates.csv", "drift.csv", "winrates.png"):
        assert (out_dir / name).stat().st_size > 0


async def test_audit_range_pages_through_the_stream_and_filters_on_event_time(plane):
    for i in range(7):
        await plane.set_kill_switch(i % 2 == 0, actor="t", reason=f"flip {i}")
    every = await plane.audit_range(batch=2)
    assert [e["reason"] for e in every] == [f"flip {i}" for i in range(7)]
    ts = [int(e["ts_ns"]) for e in every]
    window = await plane.audit_range(ts[2], ts[4], batch=2)
    assert [e["reason"] for e in window] == ["flip 2", "flip 3", "flip 4"]
    assert await plane.audit_range(ts[-1] + 1) == []


async def test_kill_switch_symbol_must_fit_the_contract_and_unseen_symbols_are_flagged(
    cli, plane, kafka_settings, redis_url, redis_prefix
):
    """The collector records every symbol it accepts; the CLI checks --symbol against it."""

    rc, _, err = await cli("kill-switch", "on", "--symbol", "BAD SYM", "--reason", "x")
    assert rc == 2 and "invalid symbol 'BAD SYM'" in err and "A-Z a-z 0-9" in err
    assert (await cli("halt", "--symbol", "X" * 33, "--reason", "x"))[0] == 2

    tag = uuid.uuid4().hex[:8]
    raw, ticks, dlq = (f"sym.{tag}.{k}" for k in ("raw", "ticks", "dlq"))
    await ensure_topics(kafka_settings, [TopicShape(t, 1) for t in (raw, ticks, dlq)])
    collector = ServiceRunner(
        CollectorService(
            CollectorSettings(
                kafka=kafka_settings,
                redis_url=redis_url,
                redis_prefix=redis_prefix,
                http_port=0,
                group_id=f"g-{tag}",
                in_topic=raw,
                out_topic=ticks,
                dlq_topic=dlq,
            )
        )
    )
    await collector.start()
    try:
        await collector.wait_ready(30)
        producer = make_producer(kafka_settings)
        await producer.start()
        try:
            tick = Tick(
                venue="X", symbol="AAPL", seq=1, ts_ns=time.time_ns(),
                bid=99.0, ask=101.0, last=100.0, size=1.0,
            )  # fmt: skip
            await producer.send_and_wait(raw, tick.to_bytes(), key=b"AAPL")
        finally:
            await producer.stop()
        deadline = asyncio.get_running_loop().time() + 20
        while "AAPL" not in await plane.seen_symbols():
            assert asyncio.get_running_loop().time() < deadline, "collector never recorded AAPL"
            await asyncio.sleep(0.1)
    finally:
        await collector.stop()
        await delete_topics(kafka_settings, [raw, ticks, dlq])

    rc, _, err = await cli("kill-switch", "on", "--symbol", "aapl", "--reason", "x")
    assert rc == 1 and "case-sensitive" in err and "--symbol AAPL" in err
    assert (await plane.snapshot()).kill_symbols == frozenset()
    rc, _, err = await cli("kill-switch", "on", "--symbol", "AAPL", "--reason", "bad prints")
    assert rc == 0 and "never been seen" not in err
    rc, _, err = await cli("kill-switch", "on", "--symbol", "MSFT", "--reason", "pre-emptive")
    assert rc == 0 and "'MSFT' has never been seen" in err and "1 symbols seen" in err
    rc, _, _ = await cli("halt", "--symbol", "aapl", "--allow-unseen", "--reason", "crypto-ish")
    snap = await plane.snapshot()
    assert rc == 0 and snap.kill_symbols == {"AAPL", "MSFT"} and "aapl" in snap.symbol_states
    rc, _, _ = await cli("resume", "--symbol", "aapl", "--reason", "undo the mistake")
    assert rc == 0  # clearing what was set for this exact symbol is never refused
