"""Every write of the rollouts app: releases, rollouts and their lifecycle (start,
pause, resume, promote, abort, rollback, retry), bulk dispatch of the per-tenant
updates, and the periodic evaluation that moves running rollouts through the gate."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from hub.alerts import alert_raise, alert_resolve
from hub.audit import audit_record
from hub.errors import DomainError
from hub.models import AlertSeverity, AuditEvent
from rollouts import selectors
from rollouts.gate import GateResult, Signals, Thresholds, gate_evaluate
from rollouts.models import (
    ROLLOUT_ACTIVE_STATUSES,
    STAGE_STARTED_STATUSES,
    GateOutcome,
    OnHalt,
    Release,
    Rollout,
    RolloutStage,
    RolloutStatus,
    StageStatus,
    TenantUpdate,
    UpdateStatus,
)
from tenants.bulk import commands_queue_bulk, commands_queue_select, commands_withdraw_bulk
from tenants.commands import NAME_RE, VERSION_RE
from tenants.models import TENANT_LIVE_STATUSES, Command, CommandStatus, CommandType

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "rollouts"
# pg_try_advisory_lock key: one evaluation at a time ("HUB" "R").
EVALUATE_LOCK_KEY = 0x4855_4252
# repository[:tag]@sha256:<64 hex>: a release is pinned by digest, never by tag alone.
IMAGE_RE = re.compile(r"^[a-z0-9][A-Za-z0-9._/:-]{0,250}@sha256:[0-9a-f]{64}$")

ALERT_HALTED = "rollout_halted"
ALERT_INCONCLUSIVE = "rollout_inconclusive"
ALERT_ROLLBACK_FAILED = "rollout_rollback_failed"


# --- Releases ------------------------------------------------------------------------


def release_spec_errors(*, component: str, version: str, image: str) -> list[str]:
    errors = []
    if not NAME_RE.match(component):
        errors.append("component must be a name (letters, digits, . _ -)")
    if not VERSION_RE.match(version):
        errors.append("version must be a version string (letters, digits, . _ + : -)")
    if not IMAGE_RE.match(image):
        errors.append("image must be pinned by digest: repository[:tag]@sha256:<64 hex digits>")
    return errors


@transaction.atomic
def release_create(
    *, component: str, version: str, image: str, notes: str = "", is_default: bool = False, actor: str
) -> Release:
    errors = release_spec_errors(component=component, version=version, image=image)
    if errors:
        raise DomainError("; ".join(errors), code="invalid_release")
    if Release.objects.filter(component=component, version=version).exists():
        raise DomainError(f"release {component} {version} exists already", code="release_exists")
    previous = _default_unset(component=component, actor=actor) if is_default else None
    release = Release.objects.create(
        component=component, version=version, image=image, notes=notes, is_default=is_default, created_by=actor
    )
    audit_record(
        actor=actor,
        action="release.create",
        object_type="release",
        object_id=release.pk,
        new={"component": component, "version": version, "image": image, "is_default": is_default},
        reason=f"replaces {previous.version} as the default" if previous else "",
    )
    return release


def _default_unset(*, component: str, actor: str) -> Release | None:
    """Clear the component's default under a lock on the component, so two staff
    marking defaults at once end with one (the database allows one per component)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"release-default:{component}"])
    current = Release.objects.select_for_update().filter(component=component, is_default=True).first()
    if current is None:
        return None
    current.is_default = False
    current.save(update_fields=["is_default"])
    audit_record(
        actor=actor, action="release.default", object_type="release", object_id=current.pk, old=True, new=False
    )
    return current


@transaction.atomic
def release_mark_default(*, release_id: int, actor: str) -> Release:
    """Make the release what new tenants of its component get while no rollout of the
    component has COMPLETED (a completed rollout's release wins over the default)."""
    release = Release.objects.select_for_update().filter(pk=release_id).first()
    if release is None:
        raise DomainError(f"release {release_id} does not exist", code="not_found")
    if release.is_default:
        return release
    _default_unset(component=release.component, actor=actor)
    release.is_default = True
    release.save(update_fields=["is_default"])
    audit_record(
        actor=actor, action="release.default", object_type="release", object_id=release.pk, old=False, new=True
    )
    return release


@transaction.atomic
def release_get_or_create(*, component: str, version: str, image: str, notes: str = "", actor: str) -> Release:
    """The release CI names inline: the same component, version and image is the same
    release; the same version with another image is refused (a digest is immutable)."""
    existing = Release.objects.filter(component=component, version=version).first()
    if existing is None:
        return release_create(component=component, version=version, image=image, notes=notes, actor=actor)
    if existing.image != image:
        raise DomainError(
            f"release {component} {version} exists with image {existing.image}; a version is never re-pinned",
            code="release_conflict",
        )
    return existing


# --- Creating rollouts ---------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    soak_seconds: int
    internal: bool = False
    percent: int | None = None
    name: str = ""


def default_stages() -> list[StageSpec]:
    soaks = list(settings.ROLLOUT_SOAK_SECONDS)
    percents = list(settings.ROLLOUT_STAGE_PERCENTS)
    if len(soaks) != len(percents) + 1:
        raise DomainError("ROLLOUT_SOAK_SECONDS needs one value per stage, internal first", code="misconfigured")
    return [StageSpec(internal=True, soak_seconds=soaks[0], name="internal")] + [
        StageSpec(percent=p, soak_seconds=s, name=f"{p}%") for p, s in zip(percents, soaks[1:], strict=True)
    ]


def stage_spec_errors(stages: Sequence[StageSpec]) -> list[str]:
    if not stages:
        return ["a rollout needs at least one stage"]
    errors = []
    percents = [s.percent for s in stages if not s.internal]
    if any(s.internal for s in stages[1:]):
        errors.append("only the first stage can be the internal stage")
    if any(s.internal and s.percent is not None for s in stages):
        errors.append("the internal stage takes every internal tenant; it has no percent")
    given = [p for p in percents if p is not None]
    if len(given) != len(percents) or any(not 1 <= p <= 100 for p in given):
        errors.append("every non-internal stage needs a percent between 1 and 100")
    elif given != sorted(set(given)):
        errors.append("stage percentages must increase")
    elif not given or given[-1] != 100:
        errors.append("the last stage must be 100%")
    if any(s.soak_seconds < 0 for s in stages):
        errors.append("soak times cannot be negative")
    return errors


@transaction.atomic
def rollout_create(
    *,
    release_id: int,
    actor: str,
    stages: Sequence[StageSpec] | None = None,
    auto_advance: bool | None = None,
    on_halt: str | None = None,
    failure_rate: float | None = None,
    min_failures: int | None = None,
    min_finished: int | None = None,
    heartbeat_loss_rate: float | None = None,
    update_timeout_seconds: int | None = None,
    stage_deadline_seconds: int | None = None,
) -> Rollout:
    """A DRAFT rollout of the release: look at its plan, then start it."""
    release = Release.objects.get(pk=release_id)
    specs = list(stages) if stages is not None else default_stages()
    errors = stage_spec_errors(specs)
    if errors:
        raise DomainError("; ".join(errors), code="invalid_stages")
    rollout = Rollout.objects.create(
        release=release,
        component=release.component,
        target_version=release.version,
        auto_advance=settings.ROLLOUT_AUTO_ADVANCE if auto_advance is None else auto_advance,
        on_halt=on_halt or settings.ROLLOUT_ON_HALT,
        failure_rate=settings.ROLLOUT_FAILURE_RATE if failure_rate is None else failure_rate,
        min_failures=max(1, settings.ROLLOUT_MIN_FAILURES if min_failures is None else min_failures),
        min_finished=max(1, settings.ROLLOUT_MIN_FINISHED if min_finished is None else min_finished),
        heartbeat_loss_rate=settings.ROLLOUT_HEARTBEAT_LOSS_RATE
        if heartbeat_loss_rate is None
        else heartbeat_loss_rate,
        update_timeout_seconds=update_timeout_seconds or settings.ROLLOUT_UPDATE_TIMEOUT,
        stage_deadline_seconds=stage_deadline_seconds or settings.ROLLOUT_STAGE_DEADLINE,
        created_by=actor,
    )
    RolloutStage.objects.bulk_create(
        [
            RolloutStage(
                rollout=rollout,
                position=position,
                name=spec.name or ("internal" if spec.internal else f"{spec.percent}%"),
                internal=spec.internal,
                percent=None if spec.internal else spec.percent,
                soak_seconds=spec.soak_seconds,
            )
            for position, spec in enumerate(specs)
        ]
    )
    audit_record(
        actor=actor,
        action="rollout.create",
        object_type="rollout",
        object_id=rollout.pk,
        new={
            "status": rollout.status,
            "component": rollout.component,
            "version": rollout.target_version,
            "stages": [[s.name or s.percent, s.soak_seconds] for s in specs],
        },
    )
    return rollout


@dataclass(frozen=True)
class RolloutPreview:
    rollout: Rollout
    stages: list[RolloutStage]
    plan: list[selectors.StagePlan]


def rollout_preview(
    *, release_spec: dict[str, Any] | None = None, release_id: int | None = None, **options: Any
) -> RolloutPreview:
    """The dry run of a rollout that is not created: the same validation and plan, and
    nothing kept (the rows made to compute it are rolled back)."""
    with transaction.atomic():
        if release_spec is not None:
            release_id = release_get_or_create(**release_spec, actor=options["actor"]).pk
        assert release_id is not None
        rollout = rollout_create(release_id=release_id, **options)
        stages = list(rollout.stages.order_by("position"))
        plan = selectors.rollout_plan(rollout=rollout, now=timezone.now())
        transaction.set_rollback(True)
    return RolloutPreview(rollout=rollout, stages=stages, plan=plan)


@transaction.atomic
def rollout_submit(
    *, release_spec: dict[str, Any] | None, release_id: int | None, start: bool, actor: str, **options: Any
) -> Rollout:
    """What CI posts: the release (by id, or inline: made if new), the rollout, and
    with `start` the first stage dispatched, all or nothing."""
    if release_spec is not None:
        release_id = release_get_or_create(**release_spec, actor=actor).pk
    assert release_id is not None
    rollout = rollout_create(release_id=release_id, actor=actor, **options)
    if start:
        rollout = rollout_start(rollout_id=rollout.pk, actor=actor)
    return rollout


# --- Moving statuses -----------------------------------------------------------------


def _locked(rollout_id: int) -> Rollout:
    return Rollout.objects.select_for_update().select_related("release").get(pk=rollout_id)


def _move(rollout: Rollout, new: str, *, actor: str, reason: str = "", fields: Sequence[str] = ()) -> None:
    old = rollout.status
    rollout.status = new
    rollout.status_reason = reason[:2000]
    rollout.save(update_fields=["status", "status_reason", *fields])
    audit_record(
        actor=actor,
        action="rollout.status",
        object_type="rollout",
        object_id=rollout.pk,
        old={"status": old},
        new={"status": new},
        reason=reason,
    )


def _stage_move(stage: RolloutStage, new: str, *, actor: str, reason: str = "", fields: Sequence[str] = ()) -> None:
    old = stage.status
    stage.status = new
    stage.save(update_fields=["status", *fields])
    audit_record(
        actor=actor,
        action="rollout.stage.status",
        object_type="rollout",
        object_id=stage.rollout_id,
        old={"stage": stage.position, "status": old},
        new={"stage": stage.position, "status": new},
        reason=reason,
    )


def _refuse(rollout: Rollout, verb: str) -> DomainError:
    return DomainError(f"rollout #{rollout.pk} is {rollout.status}; it cannot be {verb}", code="illegal_move")


def _current_stage(rollout: Rollout) -> RolloutStage | None:
    if rollout.current_position is None:
        return None
    return RolloutStage.objects.select_for_update().get(rollout=rollout, position=rollout.current_position)


def _active_conflict(rollout: Rollout) -> DomainError | None:
    other = (
        Rollout.objects.filter(component=rollout.component, status__in=ROLLOUT_ACTIVE_STATUSES)
        .exclude(pk=rollout.pk)
        .values_list("pk", "target_version", "status")
        .first()
    )
    if other is None:
        return None
    return DomainError(
        f"component {rollout.component} already has an active rollout: #{other[0]} to {other[1]} is {other[2]}; "
        "complete, roll back or abort it first",
        code="rollout_active",
    )


# --- Dispatch ------------------------------------------------------------------------


def _update_payload(rollout: Rollout) -> dict[str, Any]:
    return {"component": rollout.component, "image": rollout.release.image, "version": rollout.target_version}


def _actor_for(rollout: Rollout) -> str:
    return f"rollout:{rollout.pk}"


def _updates_mark_sent(*, pairs: Sequence[tuple[int, uuid.UUID]], now: datetime, rollback: bool) -> None:
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


def _updates_insert_sent(*, rollout: Rollout, stage: RolloutStage, now: datetime, limit: int | None) -> None:
    """One SENT update per candidate tenant of the stage, each naming the id of the
    command that will carry it, in one INSERT ... SELECT. The (rollout, tenant) unique
    constraint makes a second or concurrent dispatch insert nothing for a tenant that
    already has its update (ON CONFLICT DO NOTHING); the commands are then written from
    the updates (`_stage_send`), so a tenant never gets a second one."""
    candidates_sql, candidates_params = selectors.stage_candidates(
        rollout=rollout, stage=stage, now=now, limit=limit
    ).query.sql_with_params()
    table = TenantUpdate._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} "  # noqa: S608 - table from model metadata, candidates built by the ORM, values bound
            "(rollout_id, stage_id, tenant_id, from_version, to_version, status, command_id, attempts, sent_at, "
            "error, rollback_error) "
            "SELECT %s, %s, c.tenant_id, c.from_version, %s, %s, gen_random_uuid(), 1, %s, '', '' "
            f"FROM ({candidates_sql}) AS c(tenant_id, from_version) "
            "ON CONFLICT ON CONSTRAINT tenant_update_once_per_rollout DO NOTHING",
            [rollout.pk, stage.pk, rollout.target_version, UpdateStatus.SENT, now, *candidates_params],
        )


def _stage_send(*, rollout: Rollout, stage: RolloutStage, now: datetime) -> int:
    """Pick the stage's tenants, create their updates and `update` commands with two
    INSERT ... SELECT (the rows never pass through Python) and one audit row for the
    stage's commands: a constant number of queries whatever the stage's size. Each
    command is created by `rollout:<id>` and its update points at it. Run again, or
    concurrently, it adds nothing for a tenant already sent this rollout's update.
    Returns how many commands it queued."""
    limit = None if stage.internal or (stage.percent or 0) >= 100 else stage.planned_size
    if limit != 0:
        _updates_insert_sent(rollout=rollout, stage=stage, now=now, limit=limit)
    return commands_queue_select(
        source=TenantUpdate.objects.filter(stage=stage, status=UpdateStatus.SENT, command__isnull=False)
        .exclude(Exists(Command.objects.filter(pk=OuterRef("command_id"))))
        .values_list("command_id", "tenant_id"),
        type=CommandType.UPDATE,
        payload=_update_payload(rollout),
        actor=_actor_for(rollout),
        ttl_seconds=rollout.update_timeout_seconds,
        subject_type="rollout",
        subject_id=rollout.pk,
        subject={"stage": stage.position},
    )


def _stage_dispatch(*, rollout: Rollout, stage: RolloutStage, now: datetime) -> int:
    """Start the stage (locked by the caller): send its updates, mark it UPDATING."""
    dispatched = _stage_send(rollout=rollout, stage=stage, now=now)
    stage.dispatched = dispatched
    stage.started_at = now
    stage.deadline_at = now + timedelta(seconds=stage.soak_seconds + rollout.stage_deadline_seconds)
    _stage_move(
        stage,
        StageStatus.UPDATING,
        actor=_actor_for(rollout),
        reason=f"dispatched {dispatched} updates",
        fields=["dispatched", "started_at", "deadline_at"],
    )
    return dispatched


def _advance(*, rollout: Rollout, actor: str, now: datetime) -> None:
    """Start the next stage with tenants in it; complete the rollout after the last.
    An empty stage (no eligible tenants) passes at once: there is nothing to watch."""
    stages = list(
        RolloutStage.objects.select_for_update()
        .filter(rollout=rollout, status=StageStatus.PENDING)
        .order_by("position")
    )
    for stage in stages:
        rollout.current_position = stage.position
        rollout.save(update_fields=["current_position"])
        if _stage_dispatch(rollout=rollout, stage=stage, now=now):
            return
        _stage_pass(rollout=rollout, stage=stage, actor=actor, reason="no eligible tenants in this stage", now=now)
    rollout.finished_at = now
    _move(rollout, RolloutStatus.COMPLETED, actor=actor, reason="every stage passed", fields=["finished_at"])
    alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_INCONCLUSIVE)


def _stage_pass(*, rollout: Rollout, stage: RolloutStage, actor: str, reason: str, now: datetime) -> None:
    stage.finished_at = now
    stage.gate = GateOutcome.PASS
    stage.gate_reason = reason
    stage.gate_at = now
    _stage_move(
        stage, StageStatus.PASSED, actor=actor, reason=reason, fields=["finished_at", "gate", "gate_reason", "gate_at"]
    )


def _updates_move(*, rows: Sequence[tuple[int, str]], new: str, actor: str, reason: str, **fields: Any) -> int:
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


def _updates_skip_pending(*, rollout: Rollout, actor: str, reason: str, now: datetime) -> int:
    rows = list(TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.PENDING).values_list("pk", "status"))
    return _updates_move(
        rows=rows, new=UpdateStatus.SKIPPED, actor=actor, reason=reason, error=reason[:2000], finished_at=now
    )


def _updates_withdraw(*, rollout: Rollout, actor: str, reason: str, to_status: str) -> int:
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
    return _updates_move(
        rows=rows, new=to_status, actor=actor, reason=f"withdrawn before delivery: {reason}", sent_at=None, error=error
    )


def _updates_resend(*, rollout: Rollout, statuses: Sequence[str], actor: str, now: datetime) -> int:
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
    _updates_move(rows=gone, new=UpdateStatus.SKIPPED, actor=actor, reason=why, error=why, finished_at=now)
    payload = _update_payload(rollout)
    commands = commands_queue_bulk(
        tenant_ids=[tenant_id for _, tenant_id in live],
        type=CommandType.UPDATE,
        payloads=[payload] * len(live),
        actor=_actor_for(rollout),
        ttl_seconds=rollout.update_timeout_seconds,
    )
    _updates_mark_sent(pairs=[(pk, c.pk) for (pk, _), c in zip(live, commands, strict=True)], now=now, rollback=False)
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


# --- Lifecycle -----------------------------------------------------------------------


@transaction.atomic
def rollout_start(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Snapshot the eligible population, size the stages, dispatch the first stage."""
    rollout = _locked(rollout_id)
    if not rollout.can_start():
        raise _refuse(rollout, "started")
    conflict = _active_conflict(rollout)
    if conflict:
        raise conflict
    now = timezone.now()
    eligible = selectors.tenants_eligible(component=rollout.component, version=rollout.target_version, now=now)
    internal = eligible.filter(is_internal=True).count()
    population = eligible.filter(is_internal=False).count()
    if not internal and not population:
        raise DomainError(
            f"no eligible tenants: every ACTIVE tenant with a fresh heartbeat runs {rollout.component} "
            f"{rollout.target_version} already",
            code="nothing_to_update",
        )
    stages = list(RolloutStage.objects.select_for_update().filter(rollout=rollout).order_by("position"))
    sizes = selectors.stage_sizes(percents=[None if s.internal else s.percent for s in stages], population=population)
    taken = 0
    for stage, size in zip(stages, sizes, strict=True):
        if stage.internal:
            stage.planned_size = internal
        else:
            stage.planned_size = size if size is not None else max(0, population - taken)
            taken += stage.planned_size
    RolloutStage.objects.bulk_update(stages, ["planned_size"])
    rollout.population = population
    rollout.started_at = now
    try:
        with transaction.atomic():
            _move(
                rollout,
                RolloutStatus.RUNNING,
                actor=actor,
                reason=reason or f"{internal} internal and {population} other eligible tenants",
                fields=["population", "started_at"],
            )
    except IntegrityError as exc:
        raise _active_conflict(rollout) or DomainError("another rollout became active", code="rollout_active") from exc
    _advance(rollout=rollout, actor=actor, now=now)
    return rollout


@transaction.atomic
def rollout_pause(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Stop dispatch: updates not yet handed to an agent are withdrawn (back to
    PENDING), nothing advances. Updates already delivered finish on their own."""
    rollout = _locked(rollout_id)
    if not rollout.can_pause():
        raise _refuse(rollout, "paused")
    withdrawn = _updates_withdraw(
        rollout=rollout, actor=actor, reason=reason or "rollout paused", to_status=UpdateStatus.PENDING
    )
    rollout.paused_at = timezone.now()
    _move(
        rollout,
        RolloutStatus.PAUSED,
        actor=actor,
        reason=reason or f"paused; {withdrawn} undelivered updates withdrawn",
        fields=["paused_at"],
    )
    return rollout


@transaction.atomic
def rollout_resume(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Continue where it left off: the withdrawn updates are sent again, and the
    stage's deadline moves by the time spent paused."""
    rollout = _locked(rollout_id)
    if not rollout.can_resume():
        raise _refuse(rollout, "resumed")
    now = timezone.now()
    stage = _current_stage(rollout)
    if stage is not None and stage.deadline_at is not None and rollout.paused_at is not None:
        stage.deadline_at += now - rollout.paused_at
        stage.save(update_fields=["deadline_at"])
    resent = _updates_resend(rollout=rollout, statuses=[UpdateStatus.PENDING], actor=actor, now=now)
    rollout.paused_at = None
    _move(
        rollout,
        RolloutStatus.RUNNING,
        actor=actor,
        reason=reason or f"resumed; {resent} updates re-sent",
        fields=["paused_at"],
    )
    return rollout


@transaction.atomic
def rollout_promote(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Staff pass the current stage (once its updates are done) and start the next."""
    rollout = _locked(rollout_id)
    if not rollout.can_promote():
        raise _refuse(rollout, "promoted")
    stage = _current_stage(rollout)
    if stage is None or stage.status not in (StageStatus.SOAKING, StageStatus.AWAITING_PROMOTE):
        state = stage.status if stage else "none"
        raise DomainError(
            f"rollout #{rollout.pk}: the current stage is {state}; only a soaking or passed stage can be promoted",
            code="illegal_move",
        )
    now = timezone.now()
    _stage_pass(rollout=rollout, stage=stage, actor=actor, reason=reason or f"promoted by {actor}", now=now)
    _advance(rollout=rollout, actor=actor, now=now)
    return rollout


@transaction.atomic
def rollout_abort(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Stop for good without rolling back: undelivered updates are withdrawn, tenants
    stay on whatever version they run now."""
    rollout = _locked(rollout_id)
    if not rollout.can_abort():
        raise _refuse(rollout, "aborted")
    now = timezone.now()
    why = reason or f"aborted by {actor}"
    _updates_withdraw(rollout=rollout, actor=actor, reason=why, to_status=UpdateStatus.SKIPPED)
    _updates_skip_pending(rollout=rollout, actor=actor, reason=why, now=now)
    stage = _current_stage(rollout)
    if stage is not None and stage.status in STAGE_STARTED_STATUSES:
        stage.finished_at = now
        _stage_move(stage, StageStatus.HALTED, actor=actor, reason=why, fields=["finished_at"])
    rollout.finished_at = now
    _move(rollout, RolloutStatus.ABORTED, actor=actor, reason=why, fields=["finished_at"])
    alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_INCONCLUSIVE)
    return rollout


@transaction.atomic
def rollout_rollback(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    rollout = _locked(rollout_id)
    if not rollout.can_rollback():
        raise _refuse(rollout, "rolled back")
    _rollback_begin(rollout=rollout, actor=actor, reason=reason or f"rollback by {actor}", now=timezone.now())
    return rollout


@transaction.atomic
def rollout_retry(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """After the cause of a halt is fixed: send the failed (and withdrawn) updates
    again and run the current stage anew, with a fresh deadline."""
    rollout = _locked(rollout_id)
    if not rollout.can_retry():
        raise _refuse(rollout, "retried")
    now = timezone.now()
    resent = _updates_resend(
        rollout=rollout, statuses=[UpdateStatus.FAILED, UpdateStatus.PENDING], actor=actor, now=now
    )
    stage = _current_stage(rollout)
    if stage is not None:
        stage.updates_done_at = None
        stage.awaiting_promote_since = None
        stage.finished_at = None
        stage.deadline_at = now + timedelta(seconds=stage.soak_seconds + rollout.stage_deadline_seconds)
        stage.gate = ""
        stage.gate_reason = ""
        _stage_move(
            stage,
            StageStatus.UPDATING,
            actor=actor,
            reason=f"retry: {resent} updates re-sent",
            fields=["updates_done_at", "awaiting_promote_since", "finished_at", "deadline_at", "gate", "gate_reason"],
        )
    rollout.halted_at = None
    _move(
        rollout,
        RolloutStatus.RUNNING,
        actor=actor,
        reason=reason or f"retried; {resent} updates re-sent",
        fields=["halted_at"],
    )
    alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_HALTED)
    return rollout


def _halt(*, rollout: Rollout, stage: RolloutStage | None, reason: str, actor: str, now: datetime) -> None:
    _updates_withdraw(rollout=rollout, actor=actor, reason=f"rollout halted: {reason}", to_status=UpdateStatus.PENDING)
    if stage is not None and stage.status in STAGE_STARTED_STATUSES:
        stage.finished_at = now
        _stage_move(stage, StageStatus.HALTED, actor=actor, reason=reason, fields=["finished_at"])
    rollout.halted_at = now
    rollout.paused_at = None
    _move(rollout, RolloutStatus.HALTED, actor=actor, reason=reason, fields=["halted_at", "paused_at"])
    alert_raise(
        subject_type="rollout",
        subject_id=rollout.pk,
        kind=ALERT_HALTED,
        severity=AlertSeverity.HARD,
        message=f"rollout #{rollout.pk} of {rollout.component} {rollout.target_version} halted: {reason}",
    )
    if rollout.on_halt == OnHalt.ROLLBACK:
        _rollback_begin(rollout=rollout, actor=actor, reason=f"automatic rollback after halt: {reason}", now=now)


def _needs_rollback() -> Q:
    """The tenants the rollout updated, or may have: answered succeeded, handed the
    update and not answered, or failed without the agent restoring the old image."""
    return Q(status__in=(UpdateStatus.SUCCEEDED, UpdateStatus.SENT)) | (
        Q(status=UpdateStatus.FAILED) & ~Q(command__result__contains={"rolled_back": True})
    )


def _rollback_begin(*, rollout: Rollout, actor: str, reason: str, now: datetime) -> None:
    """The fast path back: an `update` to its previous version for every tenant the
    rollout updated, newest stage first, all at once (no stages, no soak)."""
    _updates_withdraw(rollout=rollout, actor=actor, reason=reason, to_status=UpdateStatus.SKIPPED)
    _updates_skip_pending(rollout=rollout, actor=actor, reason=f"not sent: {reason}", now=now)
    targets = list(
        TenantUpdate.objects.filter(rollout=rollout, rollback_command__isnull=True)
        .filter(_needs_rollback())
        .order_by("-stage__position", "id")
        .values_list("pk", "tenant_id", "from_version", "command__result", "tenant__status")
    )
    images = selectors.release_previous_images(component=rollout.component, versions=[t[2] for t in targets if t[2]])
    sendable: list[tuple[int, int, dict[str, Any]]] = []
    unrollable: list[int] = []
    for pk, tenant_id, from_version, result, tenant_status in targets:
        if not from_version or tenant_status not in TENANT_LIVE_STATUSES:
            unrollable.append(pk)
            continue
        payload: dict[str, Any] = {"component": rollout.component, "version": from_version}
        previous_image = images.get(from_version) or ((result or {}).get("details") or {}).get("previous_image")
        if isinstance(previous_image, str) and previous_image:
            payload["image"] = previous_image
        sendable.append((pk, tenant_id, payload))
    if unrollable:
        TenantUpdate.objects.filter(pk__in=unrollable).update(
            rollback_error="cannot roll back: previous version unknown or tenant no longer live",
            rollback_finished_at=now,
        )
    commands = commands_queue_bulk(
        tenant_ids=[tenant_id for _, tenant_id, _ in sendable],
        type=CommandType.UPDATE,
        payloads=[payload for _, _, payload in sendable],
        actor=_actor_for(rollout),
        ttl_seconds=rollout.update_timeout_seconds,
    )
    _updates_mark_sent(
        pairs=[(pk, c.pk) for (pk, _, _), c in zip(sendable, commands, strict=True)], now=now, rollback=True
    )
    stage = _current_stage(rollout)
    if stage is not None and stage.status in STAGE_STARTED_STATUSES:
        stage.finished_at = now
        _stage_move(stage, StageStatus.HALTED, actor=actor, reason=reason, fields=["finished_at"])
    rollout.paused_at = None
    _move(
        rollout,
        RolloutStatus.ROLLING_BACK,
        actor=actor,
        reason=f"{reason}; {len(sendable)} rollback commands sent, {len(unrollable)} tenants cannot be rolled back",
        fields=["paused_at"],
    )
    _rollback_check(rollout=rollout, actor=actor, now=now)


def _rollback_check(*, rollout: Rollout, actor: str, now: datetime) -> bool:
    """ROLLED_BACK once every rollback command has been answered (or expired)."""
    outstanding = TenantUpdate.objects.filter(
        rollout=rollout, rollback_command__isnull=False, rollback_finished_at__isnull=True
    ).exists()
    if outstanding:
        return False
    failures = TenantUpdate.objects.filter(rollout=rollout).exclude(rollback_error="").count()
    rollout.finished_at = now
    _move(
        rollout,
        RolloutStatus.ROLLED_BACK,
        actor=actor,
        reason=f"every rollback reported; {failures} tenants not rolled back"
        if failures
        else "every rollback reported",
        fields=["finished_at"],
    )
    alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_INCONCLUSIVE)
    if failures:
        alert_raise(
            subject_type="rollout",
            subject_id=rollout.pk,
            kind=ALERT_ROLLBACK_FAILED,
            severity=AlertSeverity.HARD,
            message=f"rollout #{rollout.pk}: {failures} tenants did not roll back {rollout.component}",
        )
    else:
        alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_HALTED)
    return True


# --- Evaluation (beat) ---------------------------------------------------------------


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
    return updated, rolled_back


def _thresholds(rollout: Rollout) -> Thresholds:
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
    rollout = _locked(rollout_id)
    if rollout.status == RolloutStatus.ROLLING_BACK:
        _rollback_check(rollout=rollout, actor=SYSTEM_ACTOR, now=now)
        return None
    if rollout.status != RolloutStatus.RUNNING:
        return None
    stage = _current_stage(rollout)
    if stage is None or stage.status not in STAGE_STARTED_STATUSES:
        return None
    stage_counts, totals = selectors.update_counts(
        rollout_id=rollout.pk, stage_id=stage.pk, now=now, update_timeout=rollout.update_timeout_seconds
    )
    if stage.status == StageStatus.UPDATING and not stage_counts.in_flight and not stage_counts.pending:
        stage.updates_done_at = now
        _stage_move(
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
    result = gate_evaluate(signals=signals, thresholds=_thresholds(rollout))
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
        _halt(rollout=rollout, stage=stage, reason=f"stage {stage.name}: {result.reason}", actor=SYSTEM_ACTOR, now=now)
    elif result.outcome == GateOutcome.PASS and stage.status != StageStatus.AWAITING_PROMOTE:
        is_last = not RolloutStage.objects.filter(rollout=rollout, position__gt=stage.position).exists()
        if rollout.auto_advance or is_last:
            _stage_pass(rollout=rollout, stage=stage, actor=SYSTEM_ACTOR, reason=result.reason, now=now)
            _advance(rollout=rollout, actor=SYSTEM_ACTOR, now=now)
        else:
            stage.awaiting_promote_since = now
            stage.deadline_at = now + timedelta(seconds=rollout.stage_deadline_seconds)
            _stage_move(
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
    check every rolling-back one. Single-flight across workers (advisory lock)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [EVALUATE_LOCK_KEY])
        (locked,) = cursor.fetchone()
    if not locked:
        return EvaluateReport(ran=False)
    try:
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
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [EVALUATE_LOCK_KEY])
