"""A rollout's and a stage's status moves, each audited, and the checks every lifecycle
service shares."""

from __future__ import annotations

from collections.abc import Sequence

from hub import events
from hub.audit import audit_record, status_move
from hub.errors import DomainError, IllegalMove
from rollouts.models import (
    ROLLOUT_ACTIVE_STATUSES,
    Rollout,
    RolloutStage,
)

SYSTEM_ACTOR = "rollouts"
ALERT_HALTED = "rollout_halted"
ALERT_INCONCLUSIVE = "rollout_inconclusive"
ALERT_ROLLBACK_FAILED = "rollout_rollback_failed"


def rollout_locked(rollout_id: int) -> Rollout:
    return Rollout.objects.select_for_update().select_related("release").get(pk=rollout_id)


def rollout_move(rollout: Rollout, new: str, *, actor: str, reason: str = "", fields: Sequence[str] = ()) -> None:
    """The rollout's status, with why (`status_reason`) and the columns the caller set."""
    rollout.status_reason = reason[:2000]
    moved = status_move(
        rollout,
        new,
        actor=actor,
        reason=reason,
        fields=["status_reason", *fields],
        as_recorded=lambda status: {"status": status},
    )
    if not moved:
        rollout.save(update_fields=["status_reason", *fields])


def stage_move(stage: RolloutStage, new: str, *, actor: str, reason: str = "", fields: Sequence[str] = ()) -> None:
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
    rollout_progressed(stage.rollout_id, stage=stage.position, status=new)


def rollout_progressed(rollout_id: int | None, **detail: object) -> None:
    """Tell the live pages (a rollout's page, the dashboard) that a rollout moved on:
    a stage, or updates sent or answered (None: some rollouts, counted in `detail`)."""
    events.publish("rollout.progress", {"rollout": rollout_id, **detail})


def refusal(rollout: Rollout, verb: str) -> DomainError:
    return IllegalMove(f"rollout #{rollout.pk} is {rollout.status}; it cannot be {verb}")


def current_stage(rollout: Rollout) -> RolloutStage | None:
    if rollout.current_position is None:
        return None
    return RolloutStage.objects.select_for_update().get(rollout=rollout, position=rollout.current_position)


def active_conflict(rollout: Rollout) -> DomainError | None:
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
