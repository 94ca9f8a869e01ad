"""The stage gate: pure logic over counted signals, so every rule is testable without a
database. Three outcomes: PASS (the stage is done, soaked, and its signals are clean),
FAIL (a threshold is breached, or the stage is past its deadline) and INCONCLUSIVE
(not judgeable yet: updates in flight, soaking, too few finished updates, no heartbeat
data). INCONCLUSIVE never passes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from rollouts.models import GateOutcome


@dataclass(frozen=True)
class Thresholds:
    failure_rate: float
    min_failures: int
    min_finished: int
    heartbeat_loss_rate: float


@dataclass(frozen=True)
class Signals:
    now: datetime
    # The current stage.
    stage_dispatched: int
    stage_pending: int
    stage_in_flight: int
    stage_finished: int
    updates_done_at: datetime | None
    soak_seconds: int
    deadline_at: datetime | None
    # The whole rollout so far: updates are judged cumulatively.
    finished: int
    failed: int
    # Heartbeats: tenants this rollout updated vs. a control group (the tenants it did
    # not update; near the end, when few are left, the tenants of its earlier stages).
    updated: int
    updated_lost: int
    control: int
    control_lost: int
    heartbeat_data: bool
    control_name: str = "the control group"


@dataclass(frozen=True)
class GateResult:
    outcome: str
    reason: str
    # INCONCLUSIVE for want of data (worth a soft alert), not merely "still running".
    data_missing: bool = False


def failure_threshold(*, finished: int, thresholds: Thresholds) -> int:
    """How many failed updates halt the rollout, given how many finished."""
    return max(thresholds.min_failures, math.ceil(thresholds.failure_rate * finished))


def gate_evaluate(*, signals: Signals, thresholds: Thresholds) -> GateResult:
    s = signals
    limit = failure_threshold(finished=s.finished, thresholds=thresholds)
    if s.failed >= limit:
        return GateResult(
            GateOutcome.FAIL,
            f"{s.failed} of {s.finished} finished updates failed (halts at {limit}: "
            f"max({thresholds.min_failures}, {thresholds.failure_rate:.2%} of finished))",
        )
    verdict = _heartbeat_verdict(signals=s, thresholds=thresholds)
    if verdict is not None and verdict.outcome == GateOutcome.FAIL:
        return verdict
    pending = verdict or _progress_verdict(signals=s, thresholds=thresholds)
    if pending is None:
        return GateResult(GateOutcome.PASS, "updates done, soak time passed, signals clean")
    if s.deadline_at is not None and s.now >= s.deadline_at:
        return GateResult(GateOutcome.FAIL, f"stage made no progress past its deadline ({pending.reason})")
    return pending


def _heartbeat_verdict(*, signals: Signals, thresholds: Thresholds) -> GateResult | None:
    s = signals
    if not s.heartbeat_data:
        return GateResult(GateOutcome.INCONCLUSIVE, "no heartbeat data (none fresh fleet-wide)", data_missing=True)
    if not s.updated:
        return None
    updated_loss = s.updated_lost / s.updated
    control_loss = s.control_lost / s.control if s.control else 0.0
    excess = updated_loss - control_loss
    if excess > thresholds.heartbeat_loss_rate and s.updated_lost >= thresholds.min_failures:
        return GateResult(
            GateOutcome.FAIL,
            f"heartbeat loss among updated tenants {updated_loss:.1%} ({s.updated_lost} of {s.updated}) vs "
            f"{control_loss:.1%} in {s.control_name}: above {thresholds.heartbeat_loss_rate:.1%}",
        )
    if control_loss > thresholds.heartbeat_loss_rate:
        return GateResult(
            GateOutcome.INCONCLUSIVE,
            f"fleet-wide heartbeat loss ({control_loss:.1%} of {s.control_name}, {updated_loss:.1%} of the "
            "updated tenants): not the release's doing, not judgeable either",
            data_missing=True,
        )
    return None


def _progress_verdict(*, signals: Signals, thresholds: Thresholds) -> GateResult | None:
    s = signals
    if s.stage_pending or s.stage_in_flight:
        return GateResult(
            GateOutcome.INCONCLUSIVE, f"{s.stage_in_flight + s.stage_pending} of {s.stage_dispatched} updates in flight"
        )
    needed = min(thresholds.min_finished, s.stage_dispatched)
    if s.stage_finished < needed:
        return GateResult(
            GateOutcome.INCONCLUSIVE,
            f"too few finished updates to judge: {s.stage_finished} of {s.stage_dispatched} answered, "
            f"{needed} needed (the rest timed out)",
            data_missing=True,
        )
    if s.updates_done_at is not None and s.soak_seconds:
        soak_ends = s.updates_done_at.timestamp() + s.soak_seconds
        if s.now.timestamp() < soak_ends:
            return GateResult(GateOutcome.INCONCLUSIVE, f"soaking for {math.ceil(soak_ends - s.now.timestamp())}s more")
    return None
