"""A rollout's lifecycle as staff and the evaluation drive it: start, pause, resume,
promote, abort, roll back, retry; halts and the rollback of what was updated."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Case, CharField, Count, Exists, F, Func, JSONField, OuterRef, Q, Subquery, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Coalesce, JSONObject, NullIf
from django.db.models.lookups import Exact
from django.utils import timezone

from hub.alerts.services import alert_raise, alert_resolve
from hub.db.ids import UUID7_SQL
from hub.errors import DomainError
from hub.freeze import fleet_refuse_if_frozen
from hub.models import AlertSeverity
from rollouts import selectors
from rollouts.models import (
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
from rollouts.services.dispatch import (
    actor_for,
    stage_dispatch,
    updates_resend,
    updates_skip_pending,
    updates_withdraw,
)
from rollouts.services.transitions import (
    ALERT_HALTED,
    ALERT_INCONCLUSIVE,
    ALERT_ROLLBACK_FAILED,
    active_conflict,
    current_stage,
    refusal,
    rollout_locked,
    rollout_move,
    stage_move,
)
from tenants.models import TENANT_LIVE_STATUSES, Command, CommandType
from tenants.services.commands_bulk import commands_queue_select


def advance(*, rollout: Rollout, actor: str, now: datetime) -> None:
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
        if stage_dispatch(rollout=rollout, stage=stage, now=now):
            return
        stage_pass(rollout=rollout, stage=stage, actor=actor, reason="no eligible tenants in this stage", now=now)
    rollout.finished_at = now
    rollout_move(rollout, RolloutStatus.COMPLETED, actor=actor, reason="every stage passed", fields=["finished_at"])
    alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_INCONCLUSIVE)


def stage_pass(*, rollout: Rollout, stage: RolloutStage, actor: str, reason: str, now: datetime) -> None:
    stage.finished_at = now
    stage.gate = GateOutcome.PASS
    stage.gate_reason = reason
    stage.gate_at = now
    stage_move(
        stage, StageStatus.PASSED, actor=actor, reason=reason, fields=["finished_at", "gate", "gate_reason", "gate_at"]
    )


@transaction.atomic
def rollout_start(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Snapshot the eligible population, size the stages, dispatch the first stage."""
    fleet_refuse_if_frozen("starting a rollout")
    rollout = rollout_locked(rollout_id)
    if not rollout.can_start():
        raise refusal(rollout, "started")
    conflict = active_conflict(rollout)
    if conflict:
        raise conflict
    now = timezone.now()
    eligible = selectors.tenants_eligible(component=rollout.component, version=rollout.target_version, now=now)
    counted = eligible.aggregate(
        internal=Count("pk", filter=Q(is_internal=True)), population=Count("pk", filter=Q(is_internal=False))
    )
    internal, population = counted["internal"], counted["population"]
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
            rollout_move(
                rollout,
                RolloutStatus.RUNNING,
                actor=actor,
                reason=reason or f"{internal} internal and {population} other eligible tenants",
                fields=["population", "started_at"],
            )
    except IntegrityError as exc:
        raise active_conflict(rollout) or DomainError("another rollout became active", code="rollout_active") from exc
    advance(rollout=rollout, actor=actor, now=now)
    return rollout


@transaction.atomic
def rollout_pause(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Stop dispatch: updates not yet handed to an agent are withdrawn (back to
    PENDING), nothing advances. Updates already delivered finish on their own."""
    rollout = rollout_locked(rollout_id)
    if not rollout.can_pause():
        raise refusal(rollout, "paused")
    withdrawn = updates_withdraw(
        rollout=rollout, actor=actor, reason=reason or "rollout paused", to_status=UpdateStatus.PENDING
    )
    rollout.paused_at = timezone.now()
    rollout_move(
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
    fleet_refuse_if_frozen("resuming a rollout")
    rollout = rollout_locked(rollout_id)
    if not rollout.can_resume():
        raise refusal(rollout, "resumed")
    now = timezone.now()
    stage = current_stage(rollout)
    if stage is not None and stage.deadline_at is not None and rollout.paused_at is not None:
        stage.deadline_at += now - rollout.paused_at
        stage.save(update_fields=["deadline_at"])
    resent = updates_resend(rollout=rollout, statuses=[UpdateStatus.PENDING], actor=actor, now=now)
    rollout.paused_at = None
    rollout_move(
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
    fleet_refuse_if_frozen("promoting a rollout")
    rollout = rollout_locked(rollout_id)
    if not rollout.can_promote():
        raise refusal(rollout, "promoted")
    stage = current_stage(rollout)
    if stage is None or stage.status not in (StageStatus.SOAKING, StageStatus.AWAITING_PROMOTE):
        state = stage.status if stage else "none"
        raise DomainError(
            f"rollout #{rollout.pk}: the current stage is {state}; only a soaking or passed stage can be promoted",
            code="illegal_move",
        )
    now = timezone.now()
    stage_pass(rollout=rollout, stage=stage, actor=actor, reason=reason or f"promoted by {actor}", now=now)
    advance(rollout=rollout, actor=actor, now=now)
    return rollout


@transaction.atomic
def rollout_abort(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Stop for good without rolling back: undelivered updates are withdrawn, tenants
    stay on whatever version they run now."""
    rollout = rollout_locked(rollout_id)
    if not rollout.can_abort():
        raise refusal(rollout, "aborted")
    now = timezone.now()
    why = reason or f"aborted by {actor}"
    updates_withdraw(rollout=rollout, actor=actor, reason=why, to_status=UpdateStatus.SKIPPED)
    updates_skip_pending(rollout=rollout, actor=actor, reason=why, now=now)
    stage = current_stage(rollout)
    if stage is not None and stage.status in STAGE_STARTED_STATUSES:
        stage.finished_at = now
        stage_move(stage, StageStatus.HALTED, actor=actor, reason=why, fields=["finished_at"])
    rollout.finished_at = now
    rollout_move(rollout, RolloutStatus.ABORTED, actor=actor, reason=why, fields=["finished_at"])
    alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_INCONCLUSIVE)
    return rollout


@transaction.atomic
def rollout_rollback(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    rollout = rollout_locked(rollout_id)
    if not rollout.can_rollback():
        raise refusal(rollout, "rolled back")
    rollback_begin(rollout=rollout, actor=actor, reason=reason or f"rollback by {actor}", now=timezone.now())
    return rollout


@transaction.atomic
def rollout_retry(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """After the cause of a halt is fixed: send the failed (and withdrawn) updates
    again and run the current stage anew, with a fresh deadline."""
    fleet_refuse_if_frozen("retrying a rollout")
    rollout = rollout_locked(rollout_id)
    if not rollout.can_retry():
        raise refusal(rollout, "retried")
    now = timezone.now()
    resent = updates_resend(rollout=rollout, statuses=[UpdateStatus.FAILED, UpdateStatus.PENDING], actor=actor, now=now)
    stage = current_stage(rollout)
    if stage is not None:
        stage.updates_done_at = None
        stage.awaiting_promote_since = None
        stage.finished_at = None
        stage.deadline_at = now + timedelta(seconds=stage.soak_seconds + rollout.stage_deadline_seconds)
        stage.gate = ""
        stage.gate_reason = ""
        stage_move(
            stage,
            StageStatus.UPDATING,
            actor=actor,
            reason=f"retry: {resent} updates re-sent",
            fields=["updates_done_at", "awaiting_promote_since", "finished_at", "deadline_at", "gate", "gate_reason"],
        )
    rollout.halted_at = None
    rollout_move(
        rollout,
        RolloutStatus.RUNNING,
        actor=actor,
        reason=reason or f"retried; {resent} updates re-sent",
        fields=["halted_at"],
    )
    alert_resolve(subject_type="rollout", subject_id=rollout.pk, kind=ALERT_HALTED)
    return rollout


def halt(*, rollout: Rollout, stage: RolloutStage | None, reason: str, actor: str, now: datetime) -> None:
    updates_withdraw(rollout=rollout, actor=actor, reason=f"rollout halted: {reason}", to_status=UpdateStatus.PENDING)
    if stage is not None and stage.status in STAGE_STARTED_STATUSES:
        stage.finished_at = now
        stage_move(stage, StageStatus.HALTED, actor=actor, reason=reason, fields=["finished_at"])
    rollout.halted_at = now
    rollout.paused_at = None
    rollout_move(rollout, RolloutStatus.HALTED, actor=actor, reason=reason, fields=["halted_at", "paused_at"])
    alert_raise(
        subject_type="rollout",
        subject_id=rollout.pk,
        kind=ALERT_HALTED,
        severity=AlertSeverity.HARD,
        message=f"rollout #{rollout.pk} of {rollout.component} {rollout.target_version} halted: {reason}",
    )
    if rollout.on_halt == OnHalt.ROLLBACK:
        rollback_begin(rollout=rollout, actor=actor, reason=f"automatic rollback after halt: {reason}", now=now)


def needs_rollback() -> Q:
    """The tenants the rollout updated, or may have: answered succeeded, handed the
    update and not answered, or failed without the agent restoring the old image."""
    return Q(status__in=(UpdateStatus.SUCCEEDED, UpdateStatus.SENT)) | (
        Q(status=UpdateStatus.FAILED) & ~Q(command__result__contains={"rolled_back": True})
    )


def rollback_payload(rollout: Rollout) -> Func:
    """An update's rollback payload, as a JSON expression: the component, the version it
    came from, and that version's image, from the known release or, failing that, from
    what the agent said it replaced (`details.previous_image` of the update's answer);
    no image when neither is known."""
    details = KeyTransform("details", "command__result")
    answered_image = Case(
        When(
            Exact(
                Func(KeyTransform("previous_image", details), function="jsonb_typeof", output_field=CharField()),
                "string",
            ),
            then=NullIf(KeyTextTransform("previous_image", details), Value("")),
        ),
        default=None,
        output_field=CharField(),
    )
    release_image = Subquery(
        Release.objects.filter(component=rollout.component, version=OuterRef("from_version"))
        .exclude(image="")
        .values("image")[:1]
    )
    return Func(
        JSONObject(
            component=Value(rollout.component),
            version=F("from_version"),
            image=Coalesce(release_image, answered_image),
        ),
        function="jsonb_strip_nulls",
        output_field=JSONField(),
    )


def rollback_begin(*, rollout: Rollout, actor: str, reason: str, now: datetime) -> None:
    """The fast path back: an `update` to its previous version for every tenant the
    rollout updated, newest stage first, all at once (no stages, no soak). A constant
    number of statements: the updates that cannot be rolled back are marked, the others
    name a new command id each, and the commands are written from them with one
    INSERT ... SELECT, each with its tenant's payload (`rollback_payload`)."""
    updates_withdraw(rollout=rollout, actor=actor, reason=reason, to_status=UpdateStatus.SKIPPED)
    updates_skip_pending(rollout=rollout, actor=actor, reason=f"not sent: {reason}", now=now)
    owed = TenantUpdate.objects.filter(
        rollout=rollout, rollback_command__isnull=True, rollback_finished_at__isnull=True
    ).filter(needs_rollback())
    unrollable = owed.filter(Q(from_version="") | ~Q(tenant__status__in=TENANT_LIVE_STATUSES)).update(
        rollback_error="cannot roll back: previous version unknown or tenant no longer live",
        rollback_finished_at=now,
    )
    sendable = owed.update(rollback_command_id=RawSQL(UUID7_SQL, []), rollback_sent_at=now)  # noqa: S611 - a constant
    commands_queue_select(
        source=TenantUpdate.objects.filter(rollout=rollout, rollback_command__isnull=False)
        .exclude(Exists(Command.objects.filter(pk=OuterRef("rollback_command_id"))))
        .annotate(payload=rollback_payload(rollout))
        .order_by("-stage__position", "id")
        .values_list("rollback_command_id", "tenant_id", "payload"),
        type=CommandType.UPDATE,
        payload=None,
        actor=actor_for(rollout),
        ttl_seconds=rollout.update_timeout_seconds,
        subject_type="rollout",
        subject_id=rollout.pk,
        subject={"rollback": True},
    )
    stage = current_stage(rollout)
    if stage is not None and stage.status in STAGE_STARTED_STATUSES:
        stage.finished_at = now
        stage_move(stage, StageStatus.HALTED, actor=actor, reason=reason, fields=["finished_at"])
    rollout.paused_at = None
    rollout_move(
        rollout,
        RolloutStatus.ROLLING_BACK,
        actor=actor,
        reason=f"{reason}; {sendable} rollback commands sent, {unrollable} tenants cannot be rolled back",
        fields=["paused_at"],
    )
    rollback_check(rollout=rollout, actor=actor, now=now)


def rollback_check(*, rollout: Rollout, actor: str, now: datetime) -> bool:
    """ROLLED_BACK once every rollback command has been answered (or expired)."""
    outstanding = TenantUpdate.objects.filter(
        rollout=rollout, rollback_command__isnull=False, rollback_finished_at__isnull=True
    ).exists()
    if outstanding:
        return False
    failures = TenantUpdate.objects.filter(rollout=rollout).exclude(rollback_error="").count()
    rollout.finished_at = now
    rollout_move(
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
