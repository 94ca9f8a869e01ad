"""The periodic evaluation (beat): sync every update's outcome from its command, judge
every running rollout at its gate, check every rolling-back one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from hub.alerts.services import alert_raise, alert_resolve
from hub.db.locks import single_flight
from hub.freeze import fleet_frozen
from hub.models import AlertSeverity, AuditEvent
from hub.queue import enqueue_on_commit
from rollouts import selectors
from rollouts.gate import GateResult, Signals, Thresholds, gate_evaluate
from rollouts.models import (
    STAGE_STARTED_STATUSES,
    GateOutcome,
    Rollout,
    RolloutStage,
    RolloutStatus,
    StageStatus,
    TenantUpdate,
)
from rollouts.services.dispatch import SEND_UPDATES_TASK
from rollouts.services.lifecycle import advance, halt, rollback_check, stage_pass
from rollouts.services.transitions import (
    ALERT_INCONCLUSIVE,
    SYSTEM_ACTOR,
    current_stage,
    rollout_locked,
    rollout_progressed,
    stage_move,
)
from tenants.models import Command

logger = logging.getLogger(__name__)


def updates_sync_outcomes() -> tuple[int, int]:
    """Copy the agents' answers from the command rows onto the updates, for every
    rollout at once: two statements, each writing one audit row per update moved.
    A late answer (after the update timed out) is still the truth and is recorded."""
    updates = TenantUpdate._meta.db_table
    commands = Command._meta.db_table
    audit = AuditEvent._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH moved AS (
                UPDATE {updates} AS u SET
                    status = CASE WHEN c.status = 'SUCCEEDED' THEN 'SUCCEEDED' ELSE 'FAILED' END,
                    finished_at = coalesce(c.finished_at, now()),
                    error = CASE WHEN c.status = 'FAILED'
                                 THEN left(coalesce(c.result->>'output', 'failed'), 2000) ELSE '' END
                FROM {commands} AS c
                WHERE u.command_id = c.id AND u.status = 'SENT' AND c.status IN ('SUCCEEDED', 'FAILED')
                RETURNING u.id, u.rollout_id, u.tenant_id, u.status
            )
            INSERT INTO {audit} (actor, action, object_type, object_id, old, new, reason, created_at)
            SELECT %s, 'rollout.update.status', 'tenant_update', moved.id::text, '{{"status": "SENT"}}'::jsonb,
                   jsonb_build_object('status', moved.status, 'rollout', moved.rollout_id, 'tenant', moved.tenant_id),
                   '', now()
            FROM moved
            """,  # noqa: S608 - table names from model metadata, values bound
            [SYSTEM_ACTOR],
        )
        updated = cursor.rowcount
        cursor.execute(
            f"""
            WITH moved AS (
                UPDATE {updates} AS u SET
                    status = CASE WHEN c.status = 'SUCCEEDED' THEN 'ROLLED_BACK' ELSE u.status END,
                    rollback_finished_at = coalesce(c.finished_at, now()),
                    rollback_error = CASE
                        WHEN c.status = 'SUCCEEDED' THEN ''
                        WHEN c.status = 'EXPIRED' THEN 'rollback command expired without an answer'
                        ELSE left(coalesce(c.result->>'output', 'failed'), 2000) END
                FROM {commands} AS c, {updates} AS before
                WHERE u.rollback_command_id = c.id AND before.id = u.id AND u.rollback_finished_at IS NULL
                      AND c.status IN ('SUCCEEDED', 'FAILED', 'EXPIRED')
                RETURNING u.id, u.rollout_id, u.tenant_id, u.status, before.status AS old_status, c.status AS rollback
            )
            INSERT INTO {audit} (actor, action, object_type, object_id, old, new, reason, created_at)
            SELECT %s, 'rollout.update.rollback', 'tenant_update', moved.id::text,
                   jsonb_build_object('status', moved.old_status),
                   jsonb_build_object('status', moved.status, 'rollback', moved.rollback,
                                      'rollout', moved.rollout_id, 'tenant', moved.tenant_id),
                   '', now()
            FROM moved
            """,  # noqa: S608 - table names from model metadata, values bound
            [SYSTEM_ACTOR],
        )
        rolled_back = cursor.rowcount
        if updated or rolled_back:
            rollout_progressed(None, answered=updated, rolled_back=rolled_back)
    return updated, rolled_back


def thresholds(rollout: Rollout) -> Thresholds:
    return Thresholds(
        failure_rate=rollout.failure_rate,
        min_failures=rollout.min_failures,
        min_finished=rollout.min_finished,
        heartbeat_loss_rate=rollout.heartbeat_loss_rate,
    )


@transaction.atomic
def rollout_evaluate(*, rollout_id: int, now: datetime | None = None) -> GateResult | None:
    """Judge the current stage of one running rollout and act on the outcome: PASS
    starts the next stage (or waits for a promote), FAIL halts, INCONCLUSIVE waits."""
    now = now or timezone.now()
    rollout = rollout_locked(rollout_id)
    if rollout.status == RolloutStatus.ROLLING_BACK:
        rollback_check(rollout=rollout, actor=SYSTEM_ACTOR, now=now)
        return None
    if rollout.status != RolloutStatus.RUNNING or fleet_frozen():
        # Frozen: nothing is judged, so nothing advances (rollouts.services.freeze).
        return None
    stage = current_stage(rollout)
    if stage is None or stage.status not in STAGE_STARTED_STATUSES:
        return None
    if stage.updates_unsent:
        # Queued again in case the task the dispatch queued was lost; a second one
        # running at once is harmless (stage_send_rest).
        enqueue_on_commit(SEND_UPDATES_TASK, rollout.pk)
    stage_counts, totals = selectors.update_counts(
        rollout_id=rollout.pk, stage_id=stage.pk, now=now, update_timeout=rollout.update_timeout_seconds
    )
    if stage.status == StageStatus.UPDATING and not stage_counts.in_flight and not stage_counts.pending:
        stage.updates_done_at = now
        stage_move(
            stage,
            StageStatus.SOAKING,
            actor=SYSTEM_ACTOR,
            reason=f"{stage_counts.finished} of {stage_counts.dispatched} updates answered, the rest timed out"
            if stage_counts.finished < stage_counts.dispatched
            else "every update answered",
            fields=["updates_done_at"],
        )
    hb = selectors.heartbeat_counts(rollout_id=rollout.pk, stage_id=stage.pk, now=now, since=rollout.started_at or now)
    if hb.control >= rollout.min_finished or hb.earlier < rollout.min_finished:
        updated, updated_lost = hb.stage + hb.earlier, hb.stage_lost + hb.earlier_lost
        control, control_lost, control_name = hb.control, hb.control_lost, "the tenants not updated"
    else:
        # Too few tenants left outside the rollout (the last stage): the tenants of the
        # stages that already passed are the baseline for this stage's ones.
        updated, updated_lost = hb.stage, hb.stage_lost
        control, control_lost, control_name = hb.earlier, hb.earlier_lost, "the tenants of earlier stages"
    blind_after = timedelta(seconds=settings.ROLLOUT_HEARTBEAT_STALE_INTERVALS * settings.AGENT_HEARTBEAT_INTERVAL)
    signals = Signals(
        now=now,
        stage_dispatched=stage_counts.dispatched + stage_counts.pending,
        stage_pending=stage_counts.pending,
        stage_in_flight=stage_counts.in_flight,
        stage_finished=stage_counts.finished,
        updates_done_at=stage.updates_done_at,
        soak_seconds=stage.soak_seconds,
        deadline_at=stage.deadline_at,
        finished=totals.finished,
        failed=totals.failed,
        updated=updated,
        updated_lost=updated_lost,
        control=control,
        control_lost=control_lost,
        control_name=control_name,
        heartbeat_data=hb.freshest is not None and hb.freshest >= now - blind_after,
    )
    result = gate_evaluate(signals=signals, thresholds=thresholds(rollout))
    if (
        result.outcome == GateOutcome.PASS
        and stage.status == StageStatus.AWAITING_PROMOTE
        and stage.deadline_at is not None
        and now >= stage.deadline_at
    ):
        result = GateResult(GateOutcome.FAIL, "waited for a promote past the stage's deadline")
    stage.gate, stage.gate_reason, stage.gate_at = result.outcome, result.reason[:2000], now
    stage.save(update_fields=["gate", "gate_reason", "gate_at"])

    if result.data_missing:
        alert_raise(
            subject_type="rollout",
            subject_id=rollout.pk,
            kind=ALERT_INCONCLUSIVE,
            severity=AlertSeverity.SOFT,
            message=f"rollout #{rollout.pk} stage {stage.name} inconclusive: {result.reason}",
        )
    else:
        alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_INCONCLUSIVE)

    if result.outcome == GateOutcome.FAIL:
        halt(rollout=rollout, stage=stage, reason=f"stage {stage.name}: {result.reason}", actor=SYSTEM_ACTOR, now=now)
    elif result.outcome == GateOutcome.PASS and stage.status != StageStatus.AWAITING_PROMOTE:
        is_last = not RolloutStage.objects.filter(rollout=rollout, position__gt=stage.position).exists()
        if rollout.auto_advance or is_last:
            stage_pass(rollout=rollout, stage=stage, actor=SYSTEM_ACTOR, reason=result.reason, now=now)
            advance(rollout=rollout, actor=SYSTEM_ACTOR, now=now)
        else:
            stage.awaiting_promote_since = now
            stage.deadline_at = now + timedelta(seconds=rollout.stage_deadline_seconds)
            stage_move(
                stage,
                StageStatus.AWAITING_PROMOTE,
                actor=SYSTEM_ACTOR,
                reason=result.reason,
                fields=["awaiting_promote_since", "deadline_at"],
            )
    return result


@dataclass
class EvaluateReport:
    ran: bool = True
    outcomes_synced: int = 0
    rollbacks_synced: int = 0
    results: dict[int, str] = field(default_factory=dict)


def rollouts_evaluate() -> EvaluateReport:
    """The beat job: sync every update's outcome, then judge every running rollout and
    check every rolling-back one. Single-flight across workers."""
    with single_flight("rollouts.evaluate") as mine:
        if not mine:
            return EvaluateReport(ran=False)
        report = EvaluateReport()
        report.outcomes_synced, report.rollbacks_synced = updates_sync_outcomes()
        rollout_ids = list(
            Rollout.objects.filter(status__in=(RolloutStatus.RUNNING, RolloutStatus.ROLLING_BACK))
            .order_by("id")
            .values_list("pk", flat=True)
        )
        for rollout_id in rollout_ids:
            try:
                result = rollout_evaluate(rollout_id=rollout_id)
            except Exception:
                # One broken rollout must not stop the others from being judged.
                logger.exception("evaluating rollout %s failed", rollout_id)
                continue
            if result is not None:
                report.results[rollout_id] = result.outcome
        return report
