"""The operator's dashboard on the admin index: the fleet freeze's switch, fleet health,
open alerts, orders in flight, pool levels against targets, running rollouts and failed
jobs. Every section is one aggregate query (values().annotate(Count)), so the page
costs the same number of queries for ten tenants as for ten thousand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from hub.freeze import fleet_freeze_state
from hub.models import Alert, AlertSeverity, AlertStatus, Job
from hub.pipeline.models import JobStatus
from provisioning.models import ORDER_IN_FLIGHT_STATUSES, Order, Server, ServerStatus
from rollouts.models import ROLLOUT_ACTIVE_STATUSES, Rollout, RolloutStage, TenantUpdate
from tenants.models import TENANT_LIVE_STATUSES, Tenant, TenantStatus

DEFAULT_POOL_TARGETS: dict[tuple[str, str], int] = {("eu", "build"): 3, ("us", "build"): 2}
FAILED_JOBS_SHOWN = 10
WAITING_ORDERS_SHOWN = 10
FAILED_JOBS_WINDOW = timedelta(days=7)


@dataclass
class PoolLevel:
    region: str
    tier: str
    target: int
    available: int
    preparing: int

    @property
    def short(self) -> bool:
        return self.available < self.target

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.available / self.target)) if self.target else 100


@dataclass
class RolloutProgress:
    id: int
    component: str
    target_version: str
    status: str
    stages: list[Mapping[str, Any]] = field(default_factory=list)
    updates: dict[str, int] = field(default_factory=dict)

    @property
    def stages_passed(self) -> int:
        return sum(1 for stage in self.stages if stage["status"] == "PASSED")

    @property
    def percent(self) -> int:
        return round(100 * self.stages_passed / len(self.stages)) if self.stages else 0


def _fleet() -> dict[str, Any]:
    stale_before = timezone.now() - timedelta(
        seconds=settings.AGENT_HEARTBEAT_INTERVAL * getattr(settings, "HEARTBEAT_STALE_INTERVALS", 3)
    )
    row = Tenant.objects.aggregate(
        total=Count("id", filter=~Q(status=TenantStatus.DEPROVISIONED)),
        active=Count("id", filter=Q(status=TenantStatus.ACTIVE)),
        provisioning=Count("id", filter=Q(status=TenantStatus.PROVISIONING)),
        suspended=Count("id", filter=Q(status=TenantStatus.SUSPENDED)),
        healthy=Count("id", filter=Q(status=TenantStatus.ACTIVE, last_heartbeat_at__gte=stale_before)),
        stale=Count(
            "id",
            filter=Q(status__in=TENANT_LIVE_STATUSES, registered_at__isnull=False)
            & (Q(last_heartbeat_at__lt=stale_before) | Q(last_heartbeat_at__isnull=True)),
        ),
    )
    return row


def _alerts() -> dict[str, Any]:
    counts = dict(
        Alert.objects.filter(status=AlertStatus.OPEN).values_list("severity").annotate(n=Count("id")).order_by()
    )
    by_severity = [(value, label, counts.get(value, 0)) for value, label in AlertSeverity.choices]
    return {"by_severity": by_severity, "total": sum(counts.values())}


def _orders() -> dict[str, Any]:
    counts = dict(
        Order.objects.filter(status__in=ORDER_IN_FLIGHT_STATUSES)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_status = [(str(status), counts.get(status, 0)) for status in ORDER_IN_FLIGHT_STATUSES]
    # Orders waiting on their customer (to delegate the domain's nameservers), oldest first.
    waiting = Order.objects.filter(status__in=ORDER_IN_FLIGHT_STATUSES).exclude(waiting_reason="")
    shown = list(
        waiting.order_by("waiting_since", "id").values(
            "id", "domain", "waiting_reason", "waiting_since", "dns_nameservers"
        )[:WAITING_ORDERS_SHOWN]
    )
    return {
        "by_status": by_status,
        "total": sum(counts.values()),
        "waiting": shown,
        "waiting_total": waiting.count() if len(shown) == WAITING_ORDERS_SHOWN else len(shown),
    }


def _pool() -> list[PoolLevel]:
    targets: dict[tuple[str, str], int] = getattr(settings, "POOL_TARGETS", None) or DEFAULT_POOL_TARGETS
    counts: dict[tuple[str, str, str], int] = {
        (region, tier, status): n
        for region, tier, status, n in Server.objects.filter(
            status__in=[ServerStatus.AVAILABLE, ServerStatus.PREPARING]
        )
        .values_list("region", "tier", "status")
        .annotate(n=Count("id"))
        .order_by()
    }
    keys = sorted(set(targets) | {(region, tier) for region, tier, _ in counts})
    return [
        PoolLevel(
            region=region,
            tier=tier,
            target=targets.get((region, tier), 0),
            available=counts.get((region, tier, ServerStatus.AVAILABLE), 0),
            preparing=counts.get((region, tier, ServerStatus.PREPARING), 0),
        )
        for region, tier in keys
    ]


def _rollouts() -> list[RolloutProgress]:
    """Active rollouts with their stages and update counts: three queries."""
    rollouts = {
        r.pk: RolloutProgress(id=r.pk, component=r.component, target_version=r.target_version, status=r.status)
        for r in Rollout.objects.filter(status__in=ROLLOUT_ACTIVE_STATUSES).order_by("id")[:20]
    }
    if not rollouts:
        return []
    for stage in (
        RolloutStage.objects.filter(rollout_id__in=rollouts)
        .order_by("rollout_id", "position")
        .values("rollout_id", "name", "status", "percent", "internal")
    ):
        rollouts[stage["rollout_id"]].stages.append(stage)
    for rollout_id, status, n in (
        TenantUpdate.objects.filter(rollout_id__in=rollouts)
        .values_list("rollout_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        rollouts[rollout_id].updates[status] = n
    return list(rollouts.values())


def _failed_jobs() -> dict[str, Any]:
    """Jobs that ended badly this week and were not retried since: someone should look."""
    failed = Job.objects.filter(
        status__in=[JobStatus.FAILED, JobStatus.ROLLED_BACK],
        finished_at__gte=timezone.now() - FAILED_JOBS_WINDOW,
    )
    jobs = list(
        failed.order_by("-finished_at").values(
            "id", "pipeline", "status", "subject_type", "subject_id", "error", "finished_at"
        )[:FAILED_JOBS_SHOWN]
    )
    return {"jobs": jobs, "total": failed.count() if len(jobs) == FAILED_JOBS_SHOWN else len(jobs)}


def _freeze() -> dict[str, Any]:
    row = fleet_freeze_state()
    return {"frozen": row.frozen, "changed_at": row.changed_at, "changed_by": row.changed_by, "reason": row.reason}


def dashboard_context() -> dict[str, Any]:
    """What the dashboard shows: plain values, also sent as JSON in the event streams' snapshot."""
    return {
        "freeze": _freeze(),
        "fleet": _fleet(),
        "alerts": _alerts(),
        "orders": _orders(),
        "pool": _pool(),
        "rollouts": _rollouts(),
        "failed_jobs": _failed_jobs(),
    }
