import pytest

from lorentzcore.degrade import DegradeController


def test_ladder_climbs_when_p95_over_budget_and_recovers_when_fast_again():
    ctl = DegradeController(budget_ms=1.0, window=50, min_events=20)
    levels = [ctl.observe(5.0) for _ in range(200)]
    assert levels[-1] == 3
    assert levels[:19] == [0] * 19  # no decision before min_events
    levels = [ctl.observe(0.1) for _ in range(200)]
    assert levels[-1] == 0


def test_one_slow_event_does_not_degrade():
    ctl = DegradeController(budget_ms=1.0, window=100, min_events=20)
    for i in range(300):
        ctl.observe(3.0 if i == 150 else 0.2)
    assert ctl.level == 0
    assert ctl.changes == 0


def test_invalid_budget_is_rejected():
    with pytest.raises(ValueError, match="budget_ms"):
        DegradeController(budget_ms=0)
