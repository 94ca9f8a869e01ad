"""Dispatch: the per-tenant updates of a stage written and sent in bulk, withdrawn,
resent, skipped."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef

from hub.db.bulksql import insert_skipping_conflicts
from hub.db.ids import UUID7_SQL
from hub.models import AuditEvent
from rollouts import selectors
from rollouts.models import (
    Rollout,
    RolloutStage,
    StageStatus,
    TenantUpdate,
    UpdateStatus,
)
from rollouts.services.transitions import rollout_progressed, stage_move
from tenants.models import TENANT_LIVE_STATUSES, Command, CommandStatus, CommandType
from tenants.services.commands_bulk import commands_queue_bulk, commands_queue_select, commands_withdraw_bulk


def update_payload(rollout: Rollout) -> dict[str, Any]:
    return {"component": rollout.component, "image": rollout.release.image, "version": rollout.target_version}


def actor_for(rollout: Rollout) -> str:
    return f"rollout:{rollout.pk}"


def updates_mark_sent(*, pairs: Sequence[tuple[int, uuid.UUID]], now: datetime, rollback: bool) -> None:
    """Point each update at its new command, in one statement."""
    if not pairs:
        return
    table = TenantUpdate._meta.db_table
    if rollback:
        assignments = "rollback_command_id = v.command_id, rollback_sent_at = %s"
    else:
        assignments = (
            "command_id = v.command_id, sent_at = %s, status = 'SENT', attempts = u.attempts + 1, "
            "finished_at = NULL, error = ''"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS u SET {assignments} "  # noqa: S608 - table from model metadata, values bound
            "FROM unnest(%s::bigint[], %s::uuid[]) AS v(id, command_id) WHERE u.id = v.id",
            [now, [pk for pk, _ in pairs], [command_id for _, command_id in pairs]],
        )


def updates_insert_sent(*, rollout: Rollout, stage: RolloutStage, now: datetime, limit: int | None) -> None:
    """One SENT update per candidate tenant of the stage, each naming the id of the
    command that will carry it, in one INSERT ... SELECT. The (rollout, tenant) unique
    constraint makes a second or concurrent dispatch insert nothing for a tenant that
    already has its update (ON CONFLICT DO NOTHING); the commands are then written from
    the updates (`stage_send`), so a tenant never gets a second one."""
    candidates_sql, candidates_params = selectors.stage_candidates(
        rollout=rollout, stage=stage, now=now, limit=limit
    ).query.sql_with_params()
    table = TenantUpdate._meta.db_table
    insert_skipping_conflicts(
        f"INSERT INTO {table} "  # noqa: S608 - table from model metadata, candidates built by the ORM, values bound
        "(rollout_id, stage_id, tenant_id, from_version, to_version, status, command_id, attempts, sent_at, "
        "error, rollback_error) "
        f"SELECT %s, %s, c.tenant_id, c.from_version, %s, %s, {UUID7_SQL}, 1, %s, '', '' "
        f"FROM ({candidates_sql.replace('{', '{{').replace('}', '}}')}) AS c(tenant_id, from_version) "
        "{on_conflict}",
        [rollout.pk, stage.pk, rollout.target_version, UpdateStatus.SENT, now, *candidates_params],
        on_conflict="ON CONFLICT ON CONSTRAINT tenant_update_once_per_rollout DO NOTHING",
    )


def stage_send(*, rollout: Rollout, stage: RolloutStage, now: datetime) -> int:
    """Pick the stage's tenants, create their updates and `update` commands with two
    INSERT ... SELECT (the rows never pass through Python) and one audit row for the
    stage's commands: a constant number of queries whatever the stage's size. Each
    command is created by `rollout:<id>` and its update points at it. Run again, or
    concurrently, it adds nothing for a tenant already sent this rollout's update.
    Returns how many commands it queued."""
    limit = None if stage.internal or (stage.percent or 0) >= 100 else stage.planned_size
    if limit != 0:
        updates_insert_sent(rollout=rollout, stage=stage, now=now, limit=limit)
    rollout_progressed(rollout.pk, stage=stage.position, sent=True)
    return commands_queue_select(
        source=TenantUpdate.objects.filter(stage=stage, status=UpdateStatus.SENT, command__isnull=False)
        .exclude(Exists(Command.objects.filter(pk=OuterRef("command_id"))))
        .values_list("command_id", "tenant_id"),
        type=CommandType.UPDATE,
        payload=update_payload(rollout),
        actor=actor_for(rollout),
        ttl_seconds=rollout.update_timeout_seconds,
        subject_type="rollout",
        subject_id=rollout.pk,
        subject={"stage": stage.position},
    )


def stage_dispatch(*, rollout: Rollout, stage: RolloutStage, now: datetime) -> int:
    """Start the stage (locked by the caller): send its updates, mark it UPDATING."""
    dispatched = stage_send(rollout=rollout, stage=stage, now=now)
    stage.dispatched = dispatched
    stage.started_at = now
    stage.deadline_at = now + timedelta(seconds=stage.soak_seconds + rollout.stage_deadline_seconds)
    stage_move(
        stage,
        StageStatus.UPDATING,
        actor=actor_for(rollout),
        reason=f"dispatched {dispatched} updates",
        fields=["dispatched", "started_at", "deadline_at"],
    )
    return dispatched


def updates_move(*, rows: Sequence[tuple[int, str]], new: str, actor: str, reason: str, **fields: Any) -> int:
    """Move these updates ((id, old status) pairs) to `new`, with one audit row each:
    two statements whatever their number."""
    if not rows:
        return 0
    TenantUpdate.objects.filter(pk__in=[pk for pk, _ in rows]).update(status=new, **fields)
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor=actor,
                action="rollout.update.status",
                object_type="tenant_update",
                object_id=str(pk),
                old={"status": old},
                new={"status": new},
                reason=reason[:2000],
            )
            for pk, old in rows
        ]
    )
    return len(rows)


def updates_skip_pending(*, rollout: Rollout, actor: str, reason: str, now: datetime) -> int:
    rows = list(TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.PENDING).values_list("pk", "status"))
    return updates_move(
        rows=rows, new=UpdateStatus.SKIPPED, actor=actor, reason=reason, error=reason[:2000], finished_at=now
    )


def updates_withdraw(*, rollout: Rollout, actor: str, reason: str, to_status: str) -> int:
    """Take back the update commands no agent has been handed yet; their updates go
    back to PENDING (to be re-sent on resume or retry) or end SKIPPED."""
    command_ids = list(
        TenantUpdate.objects.filter(
            rollout=rollout, status=UpdateStatus.SENT, command__status=CommandStatus.PENDING
        ).values_list("command_id", flat=True)
    )
    withdrawn = commands_withdraw_bulk(command_ids=command_ids, actor=actor, reason=reason)
    if not withdrawn:
        return 0
    error = "" if to_status == UpdateStatus.PENDING else f"withdrawn before delivery: {reason}"[:2000]
    rows = list(
        TenantUpdate.objects.filter(rollout=rollout, command_id__in=withdrawn, status=UpdateStatus.SENT).values_list(
            "pk", "status"
        )
    )
    return updates_move(
        rows=rows, new=to_status, actor=actor, reason=f"withdrawn before delivery: {reason}", sent_at=None, error=error
    )


def updates_resend(*, rollout: Rollout, statuses: Sequence[str], actor: str, now: datetime) -> int:
    """Send the rollout's updates in these statuses again, with new commands, in bulk.
    Tenants no longer live are skipped."""
    rows = list(
        TenantUpdate.objects.filter(rollout=rollout, status__in=statuses)
        .order_by("id")
        .values_list("pk", "status", "tenant_id", "tenant__status")
    )
    live = [(pk, tenant_id) for pk, _, tenant_id, status in rows if status in TENANT_LIVE_STATUSES]
    gone = [(pk, old) for pk, old, _, status in rows if status not in TENANT_LIVE_STATUSES]
    why = "tenant no longer takes commands"
    updates_move(rows=gone, new=UpdateStatus.SKIPPED, actor=actor, reason=why, error=why, finished_at=now)
    payload = update_payload(rollout)
    commands = commands_queue_bulk(
        tenant_ids=[tenant_id for _, tenant_id in live],
        type=CommandType.UPDATE,
        payloads=[payload] * len(live),
        actor=actor_for(rollout),
        ttl_seconds=rollout.update_timeout_seconds,
    )
    updates_mark_sent(pairs=[(pk, c.pk) for (pk, _), c in zip(live, commands, strict=True)], now=now, rollback=False)
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor=actor,
                action="rollout.update.status",
                object_type="tenant_update",
                object_id=str(pk),
                old={"status": old},
                new={"status": UpdateStatus.SENT},
                reason="sent again",
            )
            for pk, old, _, status in rows
            if status in TENANT_LIVE_STATUSES
        ]
    )
    return len(live)
