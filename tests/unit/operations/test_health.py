from geodesic.operations.health import ServiceProbe, service_rows, services_ok, warmup_line

NOW = 1_700_000_000_000_000_000


def test_a_dead_service_is_down_with_its_last_log_write_as_last_seen():
    rows = service_rows(
        [
            ServiceProbe("scorer", "http://127.0.0.1:1", {"ready": True}, True, 10, lag=0),
            ServiceProbe(
                "collector", "http://127.0.0.1:2", None, False, 11, log_mtime_ns=NOW - 5 * 10**9
            ),
            ServiceProbe("feature", "http://127.0.0.1:3", {"ready": False, "reason": "waiting"}),
        ],
        NOW,
    )
    by = {r["service"]: r for r in rows}
    assert by["scorer"]["state"] == "ready" and by["scorer"]["last_seen_age_s"] == 0
    assert by["collector"]["state"] == "down" and by["collector"]["last_seen_age_s"] == 5.0
    assert "process 11 is not running" in by["collector"]["detail"]
    assert by["feature"]["state"] == "not ready" and by["feature"]["detail"] == "waiting"
    assert not services_ok(rows)
    assert services_ok(rows[:1]) and services_ok([])


def test_a_process_that_runs_but_does_not_answer_is_down_and_unseen():
    (row,) = service_rows([ServiceProbe("shadow", "http://127.0.0.1:4", None, True, 12)], NOW)
    assert row["state"] == "down" and row["last_seen"] is None
    assert "no answer from http://127.0.0.1:4/health" in row["detail"]


def test_the_feature_services_warm_up_is_shown_per_symbol():
    warmup = {"bars_needed": 50, "symbols_ready": 1, "symbols_warming": {"SPY": 49, "QQQ": 12}}
    (row,) = service_rows(
        [ServiceProbe("feature", "http://127.0.0.1:3", {"ready": True}, warmup=warmup)], NOW
    )
    assert row["warmup"] == warmup
    assert warmup_line(row["warmup"]) == "1 symbols scoring; warming (bars of 50): QQQ 12, SPY 49"
