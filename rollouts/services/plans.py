"""Creating rollouts: the stages, a dry-run preview of who each stage takes, and the
submission of a draft."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record
from hub.errors import DomainError
from rollouts import selectors
from rollouts.models import (
    Release,
    Rollout,
    RolloutStage,
)
from rollouts.services.lifecycle import rollout_start
from rollouts.services.releases import release_get_or_create


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
