"""The gate's rules, as pure logic."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rollouts.gate import Signals, Thresholds, failure_threshold, gate_evaluate
from rollouts.models import GateOutcome
from rollouts.selectors import stage_sizes

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
THRESHOLDS = Thresholds(failure_rate=0.01, min_failures=3, min_finished=10, heartbeat_loss_rate=0.03)
CLEAN = Signals(
    now=NOW,
    stage_dispatched=50,
    stage_pending=0,
    stage_in_flight=0,
    stage_finished=50,
    updates_done_at=NOW - timedelta(hours=25),
    soak_seconds=24 * 3600,
    deadline_at=NOW + timedelta(hours=1),
    finished=60,
    failed=0,
    updated=60,
    updated_lost=0,
    control=940,
    control_lost=5,
    heartbeat_data=True,
)


def judge(**changes: Any) -> tuple[str, str]:
    result = gate_evaluate(signals=replace(CLEAN, **changes), thresholds=THRESHOLDS)
    return result.outcome, result.reason


def test_clean_signals_after_the_soak_pass():
    assert judge()[0] == GateOutcome.PASS


def test_the_failure_threshold_counts_finished_updates_with_a_floor():
    assert failure_threshold(finished=10, thresholds=THRESHOLDS) == 3
    assert failure_threshold(finished=1000, thresholds=THRESHOLDS) == 10
    assert failure_threshold(finished=1001, thresholds=THRESHOLDS) == 11
    assert judge(failed=2)[0] == GateOutcome.PASS
    assert judge(failed=3)[0] == GateOutcome.FAIL
    assert judge(finished=1000, failed=9)[0] == GateOutcome.PASS
    assert judge(finished=1000, failed=10)[0] == GateOutcome.FAIL


def test_failures_halt_even_while_updates_are_in_flight():
    assert judge(stage_in_flight=40, failed=3)[0] == GateOutcome.FAIL


def test_in_flight_soaking_and_too_few_finished_are_inconclusive():
    assert judge(stage_in_flight=1) == (GateOutcome.INCONCLUSIVE, "1 of 50 updates in flight")
    assert "soaking" in judge(updates_done_at=NOW - timedelta(hours=1))[1]
    outcome, reason = judge(stage_finished=9)
    assert outcome == GateOutcome.INCONCLUSIVE and "too few finished" in reason
    # a stage smaller than the minimum is judged once all of it answered
    assert judge(stage_dispatched=4, stage_finished=4)[0] == GateOutcome.PASS


def test_heartbeat_loss_is_judged_against_the_control_group():
    assert judge(updated_lost=5)[0] == GateOutcome.FAIL  # 8.3% vs 0.5%
    assert judge(updated_lost=2)[0] == GateOutcome.PASS  # below the minimum count
    outcome, reason = judge(updated_lost=30, control_lost=470)  # 50% vs 50%: a blip
    assert outcome == GateOutcome.INCONCLUSIVE and "fleet-wide" in reason
    assert judge(heartbeat_data=False)[0] == GateOutcome.INCONCLUSIVE


def test_a_stage_past_its_deadline_without_passing_fails():
    outcome, reason = judge(deadline_at=NOW - timedelta(seconds=1), stage_in_flight=3)
    assert outcome == GateOutcome.FAIL and "deadline" in reason
    assert judge(deadline_at=NOW - timedelta(seconds=1))[0] == GateOutcome.PASS


def test_stage_sizes_are_cumulative_percentages_of_the_population():
    assert stage_sizes(percents=[None, 5, 25, 100], population=196) == [None, 10, 39, None]
    assert stage_sizes(percents=[5, 25, 100], population=3) == [1, 0, None]
