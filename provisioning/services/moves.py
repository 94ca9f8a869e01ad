"""Starting a tenant's backup now, its recovery and its migration (the pipelines are in
provisioning/pipelines/), and the monthly overflow check that migrates tenants from
Hetzner (hourly) to Netcup contract servers as they come free.

A tenant has at most one move at a time: a start takes the tenant's row lock and
refuses while a move job of the tenant is active, so two starts racing (staff and the
monthly check, or two overlapping checks) make one job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub.alerts.services import alert_raise, alert_resolve
from hub.audit import audit_record
from hub.db.locks import single_flight
from hub.errors import DomainError, NotFound
from hub.freeze import fleet_frozen
from hub.models import AlertSeverity
from hub.pipeline.models import JOB_ACTIVE_STATUSES, Job, JobStatus
from hub.pipeline.services import job_start
from provisioning.models import MoveKind, Server, ServerProvider, ServerStatus, TenantMove
from provisioning.pipeline_names import BACKUP_TENANT, MIGRATE_TENANT, MOVE_PIPELINES, RECOVER_TENANT
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)

OVERFLOW_CHECK = "provisioning.overflow_check"


def _locked_tenant(tenant_id: int) -> Tenant:
    tenant = Tenant.objects.select_for_update(of=("self",)).select_related("server").filter(pk=tenant_id).first()
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    return tenant


def active_move_job(tenant_id: int) -> Job | None:
    return Job.objects.filter(
        pipeline__in=MOVE_PIPELINES, subject_type="tenant", subject_id=str(tenant_id), status__in=JOB_ACTIVE_STATUSES
    ).first()


# --- backup now ---------------------------------------------------------------------


@transaction.atomic
def backup_now_start(*, tenant_id: int, actor: str) -> Job:
    """The tenant's backup, run now; a backup already running for it is that job."""
    tenant = _locked_tenant(tenant_id)
    if tenant.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED) or tenant.server is None:
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; only a live tenant on a server is backed up")
    running = Job.objects.filter(
        pipeline=BACKUP_TENANT, subject_type="tenant", subject_id=str(tenant.pk), status__in=JOB_ACTIVE_STATUSES
    ).first()
    if running is not None:
        return running
    move = active_move_job(tenant.pk)
    if move is not None:
        raise DomainError(f"tenant {tenant.pk} is being moved (job {move.pk})", code="tenant_moving")
    job = job_start(pipeline=BACKUP_TENANT, subject_type="tenant", subject_id=tenant.pk, actor=actor)
    audit_record(actor=actor, action="tenant.backup_now", object_type="tenant", object_id=tenant.pk, new=job.pk)
    return job


# --- recover and migrate ------------------------------------------------------------


def _start_move(
    tenant: Tenant,
    *,
    kind: str,
    actor: str,
    reason: str,
    wanted_server: Server | None = None,
    wanted_provider: str = "",
) -> TenantMove:
    """With the tenant locked: the move row and its job, in one transaction."""
    if tenant.status != TenantStatus.ACTIVE or tenant.server is None:
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; only an active tenant on a server is moved")
    running = active_move_job(tenant.pk)
    if running is not None:
        raise DomainError(f"tenant {tenant.pk} is being moved already (job {running.pk})", code="tenant_moving")
    move = TenantMove.objects.create(
        tenant=tenant,
        kind=kind,
        source_server=tenant.server,
        wanted_server=wanted_server,
        wanted_provider=wanted_provider,
        reason=reason[:500],
    )
    job = job_start(
        pipeline=RECOVER_TENANT if kind == MoveKind.RECOVER else MIGRATE_TENANT,
        subject_type="tenant",
        subject_id=tenant.pk,
        idempotency_key=f"tenant-move:{move.pk}",
        actor=actor,
    )
    move.job = job
    move.save(update_fields=["job"])
    audit_record(
        actor=actor,
        action=f"tenant.{kind.lower()}",
        object_type="tenant",
        object_id=tenant.pk,
        old=tenant.server_id,
        new={
            "move": move.pk,
            "job": job.pk,
            "server": wanted_server.pk if wanted_server else None,
            "provider": wanted_provider,
        },
        reason=reason,
    )
    return move


@transaction.atomic
def tenant_recover_start(*, tenant_id: int, actor: str, reason: str = "") -> TenantMove:
    """The tenant's server is lost: a new one, its latest backup restored, DNS switched."""
    tenant = _locked_tenant(tenant_id)
    return _start_move(tenant, kind=MoveKind.RECOVER, actor=actor, reason=reason or "server lost")


@transaction.atomic
def tenant_migrate_start(
    *, tenant_id: int, actor: str, server_id: int | None = None, provider: str = "", reason: str = ""
) -> TenantMove:
    """Move a living tenant to `server_id`, or to a pool server of `provider`."""
    if (server_id is None) == (not provider):
        raise DomainError("name a target server or a provider, not both", code="invalid")
    tenant = _locked_tenant(tenant_id)
    wanted = None
    if server_id is not None:
        wanted = Server.objects.filter(pk=server_id).first()
        if wanted is None:
            raise DomainError(f"server {server_id} does not exist", code="invalid")
        if wanted.pk == tenant.server_id:
            raise DomainError(f"tenant {tenant.pk} is on server {wanted.pk} already")
        if wanted.status != ServerStatus.AVAILABLE:
            raise DomainError(f"server {wanted.pk} is {wanted.status}, not AVAILABLE")
        if (wanted.region, wanted.tier) != (tenant.region, tenant.plan):
            raise DomainError(
                f"server {wanted.pk} is {wanted.region}/{wanted.tier}; "
                f"tenant {tenant.pk} needs {tenant.region}/{tenant.plan}"
            )
    return _start_move(
        tenant,
        kind=MoveKind.MIGRATE,
        actor=actor,
        reason=reason or "staff",
        wanted_server=wanted,
        wanted_provider=provider,
    )


def move_job_finished(job: Job) -> None:
    """In the transaction that ends a move's job: staff hear of a move that did not
    make it (HARD when the tenant had already switched, or an undo failed)."""
    move = TenantMove.objects.filter(job_id=job.pk).first()
    if move is None:
        return
    if move.finished_at is None:
        TenantMove.objects.filter(pk=move.pk).update(finished_at=timezone.now())
    audit_record(
        actor="provisioning",
        action=f"tenant.{move.kind.lower()}.finished",
        object_type="tenant",
        object_id=move.tenant_id,
        new={
            "move": move.pk,
            "job": job.pk,
            "status": job.status,
            "server": move.target_server_id,
            "downtime_seconds": move.downtime_seconds,
        },
    )
    if job.status == JobStatus.SUCCEEDED:
        # The tenant was moved after all (a retried or a later move): staff need not act.
        for kind in (MoveKind.RECOVER, MoveKind.MIGRATE):
            alert_resolve(subject_type="tenant", subject_id=move.tenant_id, kind=f"tenant_{kind.lower()}_failed")
        return
    switched = move.switched_at is not None
    alert_raise(
        subject_type="tenant",
        subject_id=move.tenant_id,
        kind=f"tenant_{move.kind.lower()}_failed",
        severity=AlertSeverity.HARD
        if switched or job.compensation_failed or move.kind == MoveKind.RECOVER
        else AlertSeverity.MEDIUM,
        message=(
            f"{move.kind.lower()} of tenant {move.tenant_id} (job {job.pk}) ended {job.status}: {job.error[:500]}. "
            + (
                f"The tenant already runs on server {move.target_server_id}; finish by hand."
                if switched
                else f"The tenant stays on server {move.source_server_id}."
            )
        ),
    )


# --- the monthly overflow check -----------------------------------------------------


def in_night_hours(region: str, now: datetime) -> bool:
    """Whether it is night in the region (OVERFLOW_NIGHT_HOURS, the region's local time)."""
    window = settings.OVERFLOW_NIGHT_HOURS.get(region, "0-24")
    start, end = (int(part) for part in window.split("-", 1))
    hour = now.astimezone(ZoneInfo(settings.OVERFLOW_REGION_TIMEZONES.get(region, "UTC"))).hour
    return start <= hour < end if start <= end else hour >= start or hour < end


def overflow_tenants() -> list[Tenant]:
    """Active tenants on a Hetzner server (bought when the pool was empty)."""
    return list(
        Tenant.objects.filter(status=TenantStatus.ACTIVE, server__provider=ServerProvider.HETZNER)
        .select_related("server")
        .order_by("created_at", "id")
    )


def overflow_extra_cost(tenant: Tenant) -> float:
    """EUR per month the tenant costs on Hetzner above a Netcup contract server."""
    return round(settings.HETZNER_MONTHLY_EUR[tenant.plan] - settings.NETCUP_MONTHLY_EUR[tenant.plan], 2)


@dataclass(frozen=True)
class OverflowRun:
    started: list[int]
    skipped: str = ""


def overflow_check(*, now: datetime | None = None, actor: str = "overflow-check") -> OverflowRun:
    """Every overflow tenant whose region and tier has a free Netcup server is migrated
    to one, at most OVERFLOW_MIGRATIONS_MAX moves running at once, each in its region's
    night hours; never while the fleet is frozen. One run at a time (a second, while
    one runs, does nothing); a tenant already moving is left to its move."""
    now = now or timezone.now()
    if fleet_frozen():
        return OverflowRun(started=[], skipped="the fleet is frozen")
    with single_flight(OVERFLOW_CHECK) as mine:
        if not mine:
            return OverflowRun(started=[], skipped="another overflow check is running")
        return _overflow_migrate(now=now, actor=actor)


def _overflow_migrate(*, now: datetime, actor: str) -> OverflowRun:
    running = Job.objects.filter(pipeline=MIGRATE_TENANT, status__in=JOB_ACTIVE_STATUSES).count()
    room = settings.OVERFLOW_MIGRATIONS_MAX - running
    started: list[int] = []
    for tenant in overflow_tenants():
        if room <= 0:
            break
        if not in_night_hours(tenant.region, now):
            continue
        free = Server.objects.filter(
            provider=ServerProvider.NETCUP, region=tenant.region, tier=tenant.plan, status=ServerStatus.AVAILABLE
        ).count()
        reserved = TenantMove.objects.filter(
            kind=MoveKind.MIGRATE,
            wanted_provider=ServerProvider.NETCUP,
            target_server=None,
            tenant__region=tenant.region,
            tenant__plan=tenant.plan,
            job__status__in=JOB_ACTIVE_STATUSES,
        ).count()
        if free - reserved <= 0:
            continue
        try:
            move = tenant_migrate_start(
                tenant_id=tenant.pk, actor=actor, provider=ServerProvider.NETCUP, reason="monthly overflow check"
            )
        except DomainError as exc:
            logger.info("overflow check: tenant %s not migrated: %s", tenant.pk, exc)
            continue
        started.append(move.pk)
        room -= 1
    return OverflowRun(started=started)


@dataclass(frozen=True)
class OverflowRow:
    tenant: Tenant
    extra_eur_per_month: float
    # A free Netcup server of its region and tier: the next check moves it (at night).
    contract_server_free: bool


def overflow_report() -> list[OverflowRow]:
    """The admin's list: each overflow tenant and what it costs above a contract server."""
    free = set(
        Server.objects.filter(provider=ServerProvider.NETCUP, status=ServerStatus.AVAILABLE)
        .values_list("region", "tier")
        .distinct()
    )
    return [
        OverflowRow(
            tenant=tenant,
            extra_eur_per_month=overflow_extra_cost(tenant),
            contract_server_free=(tenant.region, tenant.plan) in free,
        )
        for tenant in overflow_tenants()
    ]
