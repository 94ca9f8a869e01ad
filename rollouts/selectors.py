"""Reads of the rollouts app: canary selection, the dry-run plan, and the counts the
gate judges. Each is a constant number of queries whatever the size of the fleet."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    CharField,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce

from hub.db.filters import matches_no_row
from hub.releases import CurrentRelease
from rollouts.models import (
    UPDATE_DISPATCHED_STATUSES,
    Release,
    Rollout,
    RolloutStage,
    RolloutStatus,
    TenantUpdate,
    UpdateStatus,
)
from tenants.models import Tenant, TenantStatus


def _stale_before(now: datetime) -> ExpressionWrapper:
    """Per tenant: a heartbeat older than this means the tenant is lost."""
    intervals = settings.ROLLOUT_HEARTBEAT_STALE_INTERVALS
    return ExpressionWrapper(
        Value(now) - F("heartbeat_interval") * Value(timedelta(seconds=intervals)), output_field=DateTimeField()
    )


def tenant_lost_q(now: datetime) -> Q:
    return Q(last_heartbeat_at__isnull=True) | Q(last_heartbeat_at__lt=_stale_before(now))


def tenants_eligible(*, component: str, version: str, now: datetime, rollout_id: int | None = None) -> QuerySet[Tenant]:
    """Tenants that may take the update now: ACTIVE, heartbeat fresh, not already on the
    target version, and not yet part of this rollout. Newest first."""
    queryset = (
        Tenant.objects.filter(status=TenantStatus.ACTIVE)
        .filter(last_heartbeat_at__gte=_stale_before(now))
        .exclude(versions__contains={component: version})
    )
    if rollout_id is not None:
        queryset = queryset.exclude(Exists(TenantUpdate.objects.filter(rollout_id=rollout_id, tenant=OuterRef("pk"))))
    return queryset.order_by("-created_at", "-id")


def stage_candidates(*, rollout: Rollout, stage: RolloutStage, now: datetime, limit: int | None) -> QuerySet[Any, Any]:
    """(tenant id, its current version of the component or "") for the stage: a query,
    so dispatch can insert from it without reading the rows. A stage of a set size
    takes the newest tenants first; a stage that takes every tenant left comes oldest
    first, so its updates reach the (rollout, tenant) index in ascending order and are
    appended at its right edge (6% less for the insert at 100,000 tenants than in
    descending order, bench/RESULTS.md 2026-12-07 06:00).

    Keep an order that no index gives: the sort makes Postgres read every candidate
    before the first update is inserted. Without it, on freshly analysed statistics,
    Postgres chose to check "no update yet" by scanning the updates table the statement
    was filling, once per tenant: the INSERT took 116 s instead of 2 at 100,000
    tenants."""
    queryset = tenants_eligible(
        component=rollout.component, version=rollout.target_version, now=now, rollout_id=rollout.pk
    ).filter(is_internal=stage.internal)
    rows = queryset.annotate(
        from_version=Coalesce(KT(f"versions__{rollout.component}"), Value(""), output_field=CharField())
    ).values_list("pk", "from_version")
    if limit is None:
        return rows.order_by("created_at", "id")
    return rows[:limit]


def stage_sizes(*, percents: Sequence[int | None], population: int) -> list[int | None]:
    """How many non-internal tenants each stage takes: its cumulative percentage of the
    population minus what earlier stages took; None for the internal stage (all of
    them) and for a 100% stage (all that remain)."""
    sizes: list[int | None] = []
    taken = 0
    for percent in percents:
        if percent is None:
            sizes.append(None)
        elif percent >= 100:
            sizes.append(None)
            taken = population
        else:
            cumulative = min(population, math.ceil(population * percent / 100))
            sizes.append(max(0, cumulative - taken))
            taken = max(taken, cumulative)
    return sizes


@dataclass(frozen=True)
class StagePlan:
    position: int
    name: str
    internal: bool
    percent: int | None
    soak_seconds: int
    tenant_ids: list[int] = field(default_factory=list)
    dispatched: bool = False


def rollout_plan(*, rollout: Rollout, now: datetime) -> list[StagePlan]:
    """Which tenants fall into which stage: the dispatched stages as they went out, the
    rest as they would if dispatched now (the dry run). Two queries."""
    stages = list(rollout.stages.order_by("position"))
    actual: dict[int, list[int]] = {}
    for stage_id, tenant_id in (
        TenantUpdate.objects.filter(rollout=rollout).order_by("stage_id", "id").values_list("stage_id", "tenant_id")
    ):
        actual.setdefault(stage_id, []).append(tenant_id)
    eligible = list(
        tenants_eligible(
            component=rollout.component, version=rollout.target_version, now=now, rollout_id=rollout.pk
        ).values_list("pk", "is_internal")
    )
    internal = [pk for pk, is_internal in eligible if is_internal]
    rest = [pk for pk, is_internal in eligible if not is_internal]
    population = rollout.population if rollout.population is not None else len(rest)
    sizes = stage_sizes(percents=[None if s.internal else s.percent for s in stages], population=population)
    plans = []
    for stage, size in zip(stages, sizes, strict=True):
        dispatched = stage.started_at is not None
        if dispatched:
            ids = actual.get(stage.pk, [])
        elif stage.internal:
            ids, internal = internal, []
        else:
            take = len(rest) if size is None else size
            ids, rest = rest[:take], rest[take:]
        plans.append(
            StagePlan(
                position=stage.position,
                name=stage.name,
                internal=stage.internal,
                percent=stage.percent,
                soak_seconds=stage.soak_seconds,
                tenant_ids=ids,
                dispatched=dispatched,
            )
        )
    return plans


@dataclass(frozen=True)
class UpdateCounts:
    dispatched: int = 0
    pending: int = 0
    in_flight: int = 0
    finished: int = 0
    failed: int = 0


def update_counts(
    *, rollout_id: int, stage_id: int, now: datetime, update_timeout: int
) -> tuple[UpdateCounts, UpdateCounts]:
    """(the stage's counts, the whole rollout's counts) in one query. An update SENT
    longer ago than the timeout is no longer in flight: it timed out."""
    timed_out_before = now - timedelta(seconds=update_timeout)
    dispatched = Q(status__in=UPDATE_DISPATCHED_STATUSES)
    in_flight = Q(status=UpdateStatus.SENT, sent_at__gt=timed_out_before)
    finished = Q(status__in=(UpdateStatus.SUCCEEDED, UpdateStatus.FAILED))
    failed = Q(status=UpdateStatus.FAILED)
    pending = Q(status=UpdateStatus.PENDING)
    in_stage = Q(stage_id=stage_id)
    row = TenantUpdate.objects.filter(rollout_id=rollout_id).aggregate(
        s_dispatched=Count("id", filter=in_stage & dispatched),
        s_pending=Count("id", filter=in_stage & pending),
        s_in_flight=Count("id", filter=in_stage & in_flight),
        s_finished=Count("id", filter=in_stage & finished),
        s_failed=Count("id", filter=in_stage & failed),
        dispatched=Count("id", filter=dispatched),
        pending=Count("id", filter=pending),
        in_flight=Count("id", filter=in_flight),
        finished=Count("id", filter=finished),
        failed=Count("id", filter=failed),
    )
    stage = UpdateCounts(
        dispatched=row["s_dispatched"],
        pending=row["s_pending"],
        in_flight=row["s_in_flight"],
        finished=row["s_finished"],
        failed=row["s_failed"],
    )
    total = UpdateCounts(
        dispatched=row["dispatched"],
        pending=row["pending"],
        in_flight=row["in_flight"],
        finished=row["finished"],
        failed=row["failed"],
    )
    return stage, total


@dataclass(frozen=True)
class HeartbeatCounts:
    """Tenants (and how many of them lost) in three groups: updated by the current
    stage, updated by earlier stages, and not updated (the control group)."""

    stage: int
    stage_lost: int
    earlier: int
    earlier_lost: int
    control: int
    control_lost: int
    freshest: datetime | None


def heartbeat_counts(*, rollout_id: int, stage_id: int, now: datetime, since: datetime) -> HeartbeatCounts:
    """Lost heartbeats among the ACTIVE tenants, grouped by what this rollout did to
    them, in one query. Tenants already lost when the rollout started (`since`) are
    left out of the control group: a few long-dead servers must not mask, or block,
    every rollout."""
    dispatched = TenantUpdate.objects.filter(
        rollout_id=rollout_id, tenant=OuterRef("pk"), status__in=UPDATE_DISPATCHED_STATUSES
    )
    in_stage = Q(in_stage=True)
    in_earlier = Q(in_rollout=True, in_stage=False)
    control = Q(in_rollout=False)
    row = (
        Tenant.objects.filter(status=TenantStatus.ACTIVE, registered_at__isnull=False)
        .alias(in_rollout=Exists(dispatched), in_stage=Exists(dispatched.filter(stage_id=stage_id)))
        .filter(Q(in_rollout=True) | Q(last_heartbeat_at__gte=_stale_before(since)))
        .aggregate(
            stage=Count("id", filter=in_stage),
            stage_lost=Count("id", filter=in_stage & tenant_lost_q(now)),
            earlier=Count("id", filter=in_earlier),
            earlier_lost=Count("id", filter=in_earlier & tenant_lost_q(now)),
            control=Count("id", filter=control),
            control_lost=Count("id", filter=control & tenant_lost_q(now)),
            freshest=Max("last_heartbeat_at"),
        )
    )
    return HeartbeatCounts(**row)


def status_counts(*, rollout_id: int) -> dict[int, dict[str, int]]:
    """stage id -> {update status: count}, in one query (the admin's and API's bars)."""
    counts: dict[int, dict[str, int]] = {}
    rows = (
        TenantUpdate.objects.filter(rollout_id=rollout_id)
        .values_list("stage_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for stage_id, status, n in rows:
        counts.setdefault(stage_id, {})[status] = n
    return counts


def failing_updates(*, rollout_id: int, limit: int = 50) -> QuerySet[TenantUpdate]:
    return (
        TenantUpdate.objects.filter(rollout_id=rollout_id)
        .filter(Q(status=UpdateStatus.FAILED) | ~Q(rollback_error=""))
        .select_related("tenant", "stage")
        .order_by("-finished_at", "-id")[:limit]
    )


def rollout_list(*, filters: dict[str, Any] | None = None) -> QuerySet[Rollout]:
    filters = filters or {}
    queryset = Rollout.objects.select_related("release").prefetch_related(
        Prefetch("stages", queryset=RolloutStage.objects.order_by("position"))
    )
    if matches_no_row(*filters.values()):
        return queryset.none()
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    if filters.get("component"):
        queryset = queryset.filter(component=filters["component"])
    return queryset.order_by("-id")


def release_list(*, filters: dict[str, Any] | None = None) -> QuerySet[Release]:
    filters = filters or {}
    queryset = Release.objects.order_by("-id")
    if matches_no_row(*filters.values()):
        return queryset.none()
    if filters.get("component"):
        queryset = queryset.filter(component=filters["component"])
    return queryset


def current_releases(components: Iterable[str]) -> dict[str, Release]:
    """component -> the release a new tenant gets: the release of the component's last
    COMPLETED rollout, else the release staff marked as its default. A component with
    neither is absent from the answer. Two queries, however many components."""
    wanted = sorted(set(components))
    completed = (
        Rollout.objects.filter(component__in=wanted, status=RolloutStatus.COMPLETED)
        .select_related("release")
        .order_by("component", F("finished_at").desc(nulls_last=True), "-id")
        .distinct("component")
    )
    current = {rollout.component: rollout.release for rollout in completed}
    for release in Release.objects.filter(component__in=set(wanted) - set(current), is_default=True):
        current[release.component] = release
    return current


def current_release_pins(components: Collection[str]) -> dict[str, CurrentRelease]:
    """current_releases as plain values: what rollouts answers to hub.releases."""
    return {
        component: CurrentRelease(component=component, version=release.version, image=release.image)
        for component, release in current_releases(components).items()
    }
