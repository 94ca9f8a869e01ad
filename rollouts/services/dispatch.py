"""Dispatch: the per-tenant updates of a stage written and sent in bulk, withdrawn,
resent, skipped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from hub.db.bulksql import array_text, insert_skipping_conflicts
from hub.db.ids import UUID7_SQL
from hub.freeze import fleet_frozen
from hub.models import AuditEvent
from hub.queue import enqueue_on_commit
from rollouts import selectors
from rollouts.models import (
    Rollout,
    RolloutStage,
    RolloutStatus,
    StageStatus,
    TenantUpdate,
    UpdateStatus,
)
from rollouts.services.transitions import current_stage, rollout_locked, rollout_progressed, stage_move
from tenants.models import TENANT_LIVE_STATUSES, Command, CommandType, Tenant
from tenants.services.commands_bulk import commands_queue_select, commands_withdraw_bulk

SEND_UPDATES_TASK = "rollouts.send_updates"
# Memory for a dispatch's sorts and hashes, for the rest of its transaction. At
# Postgres's default of 4 MB, a stage of 100,000 spilled the sort of its candidates
# and the insert trigger's table of the rows written (migration 0007) to temporary
# files; in memory the trigger took 42 ms instead of 84 (bench/RESULTS.md 2026-12-07 06:00).
DISPATCH_WORK_MEM = "64MB"


def update_payload(rollout: Rollout) -> dict[str, Any]:
    return {"component": rollout.component, "image": rollout.release.image, "version": rollout.target_version}


def actor_for(rollout: Rollout) -> str:
    return f"rollout:{rollout.pk}"


def updates_insert_sent(*, rollout: Rollout, stage: RolloutStage, now: datetime, limit: int | None) -> int:
    """One SENT update per candidate tenant of the stage, each naming the id of the
    command that will carry it, in one INSERT ... SELECT. The (rollout, tenant) unique
    constraint makes a second or concurrent dispatch insert nothing for a tenant that
    already has its update (ON CONFLICT DO NOTHING); the commands are then written from
    the updates (`stage_commands_send`), so a tenant never gets a second one. Returns
    how many updates it wrote."""
    candidates_sql, candidates_params = selectors.stage_candidates(
        rollout=rollout, stage=stage, now=now, limit=limit
    ).query.sql_with_params()
    table = TenantUpdate._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('work_mem', %s, true)", [DISPATCH_WORK_MEM])
    return insert_skipping_conflicts(
        f"INSERT INTO {table} "  # noqa: S608 - table from model metadata, candidates built by the ORM, values bound
        "(rollout_id, stage_id, tenant_id, from_version, to_version, status, command_id, attempts, sent_at, "
        "error, rollback_error) "
        f"SELECT %s, %s, c.tenant_id, c.from_version, %s, %s, {UUID7_SQL}, 1, %s, '', '' "
        f"FROM ({candidates_sql.replace('{', '{{').replace('}', '}}')}) AS c(tenant_id, from_version) "
        "{on_conflict}",
        [rollout.pk, stage.pk, rollout.target_version, UpdateStatus.SENT, now, *candidates_params],
        on_conflict="ON CONFLICT ON CONSTRAINT tenant_update_once_per_rollout DO NOTHING",
    ).written


def stage_send(*, rollout: Rollout, stage: RolloutStage, now: datetime) -> int:
    """Pick the stage's tenants and write their updates with one INSERT ... SELECT (the
    rows never pass through Python), then queue the first part of their `update`
    commands (`stage_commands_send`): a constant number of queries whatever the
    stage's size. Run again, or concurrently, it adds nothing for a tenant already sent
    this rollout's update. Returns how many updates it wrote; `stage.updates_unsent`
    says how many of them still wait for their commands."""
    limit = None if stage.internal or (stage.percent or 0) >= 100 else stage.planned_size
    written = updates_insert_sent(rollout=rollout, stage=stage, now=now, limit=limit) if limit != 0 else 0
    rollout_progressed(rollout.pk, stage=stage.position, sent=True)
    stage.updates_unsent = written
    stage_commands_send(rollout=rollout, stage=stage, now=now)
    return written


def updates_without_command(**stage_filter: Any) -> QuerySet[TenantUpdate]:
    """The SENT updates (of the stages `stage_filter` picks) whose command, named by
    id at dispatch, was not queued yet: the next parts of a stage sent in parts."""
    return TenantUpdate.objects.filter(status=UpdateStatus.SENT, command__isnull=False, **stage_filter).exclude(
        Exists(Command.objects.filter(pk=OuterRef("command_id")))
    )


def stage_commands_send(*, rollout: Rollout, stage: RolloutStage, now: datetime) -> int:
    """Queue the next part of the stage's `update` commands: one for each SENT update
    of the stage that has none yet, oldest update first, at most
    ROLLOUT_COMMANDS_PER_TRANSACTION, with one INSERT ... SELECT and one audit row.
    Each command is created by `rollout:<id>` with the id its update names, and
    expires when its update times out, however late it was queued. Updates `stage.
    updates_unsent` (the caller saves it). Returns how many commands it queued.

    A stage of 100,000 tenants is 200,000 rows and as many key checks, which in one
    transaction held the rollout's lock for 3.3-7.5 s on the bench machine. In parts,
    the dispatch commits the updates and the first 10,000 commands, and each further
    part is a short transaction of its own, queued by `stage_send_rest`."""
    if not stage.updates_unsent:
        return 0
    part = max(1, settings.ROLLOUT_COMMANDS_PER_TRANSACTION)
    waited = (now - stage.started_at).total_seconds() if stage.started_at else 0.0
    queued = commands_queue_select(
        source=updates_without_command(stage=stage).order_by("id").values_list("command_id", "tenant_id")[:part],
        type=CommandType.UPDATE,
        payload=update_payload(rollout),
        actor=actor_for(rollout),
        ttl_seconds=max(1, rollout.update_timeout_seconds - int(waited)),
        subject_type="rollout",
        subject_id=rollout.pk,
        subject={"stage": stage.position},
    )
    # A part that comes up short found no more: whatever the count said, none is left.
    stage.updates_unsent = max(0, stage.updates_unsent - queued) if queued == part else 0
    return queued


def stage_dispatch(*, rollout: Rollout, stage: RolloutStage, now: datetime) -> int:
    """Start the stage (locked by the caller): send its updates, mark it UPDATING. The
    commands that did not fit in this transaction are queued right after it commits."""
    stage.started_at = now
    stage.deadline_at = now + timedelta(seconds=stage.soak_seconds + rollout.stage_deadline_seconds)
    dispatched = stage_send(rollout=rollout, stage=stage, now=now)
    stage.dispatched = dispatched
    stage_move(
        stage,
        StageStatus.UPDATING,
        actor=actor_for(rollout),
        reason=f"dispatched {dispatched} updates",
        fields=["dispatched", "updates_unsent", "started_at", "deadline_at"],
    )
    if stage.updates_unsent:
        enqueue_on_commit(SEND_UPDATES_TASK, rollout.pk)
    return dispatched


def stage_send_rest(*, rollout_id: int) -> int:
    """Queue the commands the current stage's dispatch left for later, a part per
    transaction, each under the rollout's lock: a pause, halt, abort or freeze waits for
    the part in flight, then withdraws what it queued and takes back what was not
    (`updates_withdraw`). Stops when none is left, or the rollout no longer runs, or
    the fleet is frozen. Safe to run twice or at once: the lock and the "no command
    yet" filter let each command be queued once. Each part leaves fewer unsent, so the
    loop ends. Returns how many it queued."""
    queued = 0
    while True:
        with transaction.atomic():
            rollout = rollout_locked(rollout_id)
            stage = current_stage(rollout)
            if rollout.status != RolloutStatus.RUNNING or stage is None or not stage.updates_unsent or fleet_frozen():
                return queued
            sent_now = stage_commands_send(rollout=rollout, stage=stage, now=timezone.now())
            stage.save(update_fields=["updates_unsent"])
            rollout_progressed(rollout.pk, stage=stage.position, sent=True)
            queued += sent_now


def updates_move(
    *,
    where: str,
    params: Sequence[Any],
    new: str,
    actor: str,
    reason: str,
    also: str = "",
    also_params: Sequence[Any] = (),
) -> int:
    """Move the updates `where` picks (a condition on `u`) to `new`, setting `also`
    besides, with one audit row each saying the status before and after: one statement
    whatever their number, no row through Python. Returns how many moved."""
    table = TenantUpdate._meta.db_table
    audit = AuditEvent._meta.db_table
    assignments = f"status = %s, {also}" if also else "status = %s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH moved AS (
                UPDATE {table} AS u SET {assignments}
                FROM {table} AS before
                WHERE before.id = u.id AND {where}
                RETURNING u.id, before.status AS old
            )
            INSERT INTO {audit} (actor, action, object_type, object_id, old, new, reason, created_at)
            SELECT %s, 'rollout.update.status', 'tenant_update', moved.id::text,
                   jsonb_build_object('status', moved.old), jsonb_build_object('status', %s::text), %s, now()
            FROM moved
            """,  # noqa: S608 - table names from model metadata, conditions written here, values bound
            [new, *also_params, *params, actor, new, reason[:2000]],
        )
        return cursor.rowcount


def updates_skip_pending(*, rollout: Rollout, actor: str, reason: str, now: datetime) -> int:
    return updates_move(
        where="u.rollout_id = %s AND u.status = %s",
        params=[rollout.pk, UpdateStatus.PENDING],
        new=UpdateStatus.SKIPPED,
        actor=actor,
        reason=reason,
        also="error = %s, finished_at = %s",
        also_params=[reason[:2000], now],
    )


def updates_withdraw(*, rollout: Rollout, actor: str, reason: str, to_status: str) -> int:
    """Take back the updates no agent has been handed yet: their commands still PENDING
    are withdrawn, and the updates of a stage sent in parts whose commands were not
    queued yet are taken back as they are (the caller holds the rollout's lock, which
    `stage_send_rest` takes for each part). The updates go back to PENDING (to be
    re-sent on resume or retry) or end SKIPPED. A constant number of statements."""
    withdrawn = commands_withdraw_bulk(
        command_ids=list(
            TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SENT, command__isnull=False).values_list(
                "command_id", flat=True
            )
        ),
        actor=actor,
        reason=reason,
    )
    why = f"withdrawn before delivery: {reason}"
    error = "" if to_status == UpdateStatus.PENDING else why[:2000]
    moved = 0
    if withdrawn:
        moved = updates_move(
            where="u.rollout_id = %s AND u.status = %s AND u.command_id = ANY(%s::uuid[])",
            params=[rollout.pk, UpdateStatus.SENT, array_text(withdrawn)],
            new=to_status,
            actor=actor,
            reason=why,
            also="sent_at = NULL, error = %s",
            also_params=[error],
        )
    unqueued = updates_unqueued_take_back(rollout=rollout)
    if not unqueued:
        return moved
    # Their command ids name commands never written: a resend gives them new ones.
    return moved + updates_move(
        where="u.id = ANY(%s::bigint[])",
        params=[array_text(unqueued)],
        new=to_status,
        actor=actor,
        reason=why,
        also="sent_at = NULL, error = %s, command_id = NULL",
        also_params=[error],
    )


def updates_unqueued_take_back(*, rollout: Rollout) -> list[int]:
    """The ids of the rollout's SENT updates whose commands were never queued; their
    stages are told none is left to queue. One query when there are none."""
    stages = list(RolloutStage.objects.filter(rollout=rollout, updates_unsent__gt=0).values_list("pk", flat=True))
    if not stages:
        return []
    RolloutStage.objects.filter(pk__in=stages).update(updates_unsent=0)
    return list(updates_without_command(stage_id__in=stages).values_list("pk", flat=True))


def updates_resend(*, rollout: Rollout, statuses: Sequence[str], actor: str, now: datetime) -> int:
    """Send the rollout's updates in these statuses again, with new commands, in a
    constant number of statements: the updates of tenants no longer live end SKIPPED,
    the others are SENT again naming new command ids, and the commands are written from
    them with one INSERT ... SELECT. Returns how many were sent."""
    why = "tenant no longer takes commands"
    tenants = Tenant._meta.db_table
    updates_move(
        where=(
            f"u.rollout_id = %s AND u.status = ANY(%s) AND NOT EXISTS "  # noqa: S608 - table from model metadata
            f"(SELECT 1 FROM {tenants} AS t WHERE t.id = u.tenant_id AND t.status = ANY(%s))"
        ),
        params=[rollout.pk, list(statuses), list(TENANT_LIVE_STATUSES)],
        new=UpdateStatus.SKIPPED,
        actor=actor,
        reason=why,
        also="error = %s, finished_at = %s",
        also_params=[why, now],
    )
    resent = updates_move(
        where="u.rollout_id = %s AND u.status = ANY(%s)",
        params=[rollout.pk, list(statuses)],
        new=UpdateStatus.SENT,
        actor=actor,
        reason="sent again",
        also=f"command_id = {UUID7_SQL}, sent_at = %s, attempts = u.attempts + 1, finished_at = NULL, error = ''",
        also_params=[now],
    )
    if resent:
        commands_queue_select(
            source=updates_without_command(rollout=rollout).values_list("command_id", "tenant_id"),
            type=CommandType.UPDATE,
            payload=update_payload(rollout),
            actor=actor_for(rollout),
            ttl_seconds=rollout.update_timeout_seconds,
            subject_type="rollout",
            subject_id=rollout.pk,
            subject={"sent_again": resent},
        )
    return resent
