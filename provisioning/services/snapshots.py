"""Daily provider snapshots of every tenant's server.

Staggered: each tenant has a slot, a minute of the (UTC) day taken from a hash of its
id, so the fleet's snapshots spread evenly over the day and the provider never sees the
whole fleet at once. Each run (beat, every 15 minutes) takes the tenants whose slot has
come and who have no snapshot of the day yet; a run that was missed is caught up by the
next. Idempotent: the image carries the tenant and the day in its labels and is looked
up by them before one is made, so a retry after a lost answer finds it. The newest
SNAPSHOT_KEEP available snapshots of a tenant are kept, older ones deleted at the
provider. A failed snapshot opens `snapshot_failed`; a tenant without an available
snapshot for SNAPSHOT_MISSING_HOURS opens `snapshot_missing`."""

from __future__ import annotations

import hashlib
import logging
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q
from django.utils import timezone

from hub.alerts.services import Failing, alert_raise, alert_resolve, alerts_sync
from hub.models import AlertSeverity
from hub.pipeline.spec import PermanentStepError
from provisioning.integrations.hetzner import ProviderError
from provisioning.integrations.netcup import NetcupError
from provisioning.models import Server, Snapshot, SnapshotState
from provisioning.providers import backend_for
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)

MINUTES_PER_DAY = 24 * 60
SNAPSHOTTED_STATUSES = (TenantStatus.ACTIVE, TenantStatus.SUSPENDED)
# What a provider call may fail with; anything else is a bug and propagates.
PROVIDER_FAILURES: tuple[type[Exception], ...] = (ProviderError, NetcupError, PermanentStepError)


def snapshot_slot(tenant_id: int) -> int:
    """The tenant's minute of the day (0-1439), stable and evenly spread."""
    digest = hashlib.blake2b(f"snapshot:{tenant_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % MINUTES_PER_DAY


def snapshot_label(tenant_id: int, day: date) -> str:
    return f"hub-tenant-{tenant_id}-{day:%Y%m%d}"


def snapshot_labels(tenant_id: int, day: date) -> dict[str, str]:
    return {"hub-snapshot": "daily", "tenant": str(tenant_id), "day": day.isoformat()}


def tenants_due(*, now: datetime) -> list[tuple[int, int]]:
    """(tenant id, server id) of every tenant whose slot of today has come and that has
    no snapshot of today being made or made; earliest slot first."""
    day = now.date()
    minute = now.hour * 60 + now.minute
    done_today = Snapshot.objects.filter(
        tenant=OuterRef("pk"), day=day, state__in=[SnapshotState.CREATING, SnapshotState.AVAILABLE]
    )
    rows = (
        Tenant.objects.filter(status__in=SNAPSHOTTED_STATUSES, server__isnull=False)
        .filter(~Exists(done_today))
        .values_list("id", "server_id")
    )
    due = [(tenant_id, server_id) for tenant_id, server_id in rows if snapshot_slot(tenant_id) <= minute]
    return sorted(due, key=lambda row: (snapshot_slot(row[0]), row[0]))


def snapshot_take(*, tenant_id: int, server_id: int, day: date) -> Snapshot:
    """Make (or find) the tenant's snapshot of the day and record what the provider says."""
    server = Server.objects.get(pk=server_id)
    with transaction.atomic():
        snapshot, _ = Snapshot.objects.get_or_create(
            tenant_id=tenant_id,
            day=day,
            defaults={"server": server, "provider": server.provider, "label": snapshot_label(tenant_id, day)},
        )
        Snapshot.objects.filter(pk=snapshot.pk).update(attempts=F("attempts") + 1, server=server)
    try:
        made = backend_for(server.provider).snapshot_take(
            server, name=snapshot.label, labels=snapshot_labels(tenant_id, day)
        )
    except PROVIDER_FAILURES as exc:
        error = str(exc)[:2000]
        Snapshot.objects.filter(pk=snapshot.pk).update(state=SnapshotState.FAILED, error=error)
        alert_raise(
            subject_type="tenant",
            subject_id=tenant_id,
            kind="snapshot_failed",
            severity=AlertSeverity.MEDIUM,
            message=f"snapshot {snapshot.label} of {server} failed: {error}",
        )
        logger.warning("snapshot %s failed: %s", snapshot.label, error)
        snapshot.refresh_from_db()
        return snapshot
    available = made.status == "available"
    Snapshot.objects.filter(pk=snapshot.pk).update(
        provider_image_id=made.image_id,
        state=SnapshotState.AVAILABLE if available else SnapshotState.CREATING,
        available_at=timezone.now() if available else None,
        error="",
    )
    alert_resolve(subject_type="tenant", subject_id=tenant_id, kind="snapshot_failed")
    snapshot.refresh_from_db()
    return snapshot


def snapshots_refresh(*, limit: int) -> int:
    """Ask the provider about the snapshots still being made; returns how many became available."""
    became = 0
    for snapshot in Snapshot.objects.filter(state=SnapshotState.CREATING).exclude(provider_image_id="")[:limit]:
        try:
            backend = backend_for(snapshot.provider)
            status = backend.snapshot_status(snapshot.server, image_id=snapshot.provider_image_id)
        except PROVIDER_FAILURES as exc:
            logger.warning("snapshot %s: status unknown: %s", snapshot.label, exc)
            continue
        if status == "available":
            Snapshot.objects.filter(pk=snapshot.pk).update(state=SnapshotState.AVAILABLE, available_at=timezone.now())
            became += 1
        elif status == "missing":
            Snapshot.objects.filter(pk=snapshot.pk).update(
                state=SnapshotState.FAILED, error="the provider no longer has the image"
            )
    return became


def snapshots_prune(*, keep: int) -> int:
    """Delete, at the provider and then here, every available snapshot of a tenant but
    its newest `keep`."""
    crowded = (
        Snapshot.objects.filter(state=SnapshotState.AVAILABLE)
        .values("tenant_id")
        .annotate(n=Count("id"))
        .filter(n__gt=keep)
        .values_list("tenant_id", flat=True)
    )
    deleted = 0
    for tenant_id in list(crowded):
        for snapshot in Snapshot.objects.filter(tenant_id=tenant_id, state=SnapshotState.AVAILABLE).order_by(
            "-day", "-id"
        )[keep:]:
            try:
                backend_for(snapshot.provider).snapshot_delete(snapshot.server, image_id=snapshot.provider_image_id)
            except PROVIDER_FAILURES as exc:
                logger.warning("snapshot %s: delete failed, next run tries again: %s", snapshot.label, exc)
                continue
            Snapshot.objects.filter(pk=snapshot.pk).update(state=SnapshotState.DELETED, deleted_at=timezone.now())
            deleted += 1
    return deleted


def snapshots_missing(*, now: datetime) -> dict[str, int]:
    """`snapshot_missing` (MEDIUM) for every tenant that has had a server for longer
    than SNAPSHOT_MISSING_HOURS and no snapshot that became available within them."""
    cutoff = now - timedelta(hours=settings.SNAPSHOT_MISSING_HOURS)
    rows = (
        Tenant.objects.filter(status__in=SNAPSHOTTED_STATUSES, server__isnull=False, created_at__lt=cutoff)
        .annotate(
            last=Max("snapshots__available_at", filter=Q(snapshots__state=SnapshotState.AVAILABLE)),
        )
        .filter(Q(last__isnull=True) | Q(last__lt=cutoff))
        .values_list("id", "last")
    )
    failing = {
        tenant_id: Failing(
            AlertSeverity.MEDIUM,
            f"no server snapshot in {settings.SNAPSHOT_MISSING_HOURS} h"
            + (f" (last {last:%Y-%m-%d %H:%M} UTC)" if last else " (none yet)"),
        )
        for tenant_id, last in rows
    }
    return alerts_sync(kind="snapshot_missing", subject_type="tenant", failing=failing).summary()


def snapshots_run(*, now: datetime | None = None) -> dict[str, Any]:
    """One pass (the beat check): take what is due, refresh, prune, alert."""
    now = now or timezone.now()
    due = tenants_due(now=now)[: settings.SNAPSHOT_MAX_PER_RUN]
    taken = [snapshot_take(tenant_id=t, server_id=s, day=now.date()) for t, s in due]
    became = snapshots_refresh(limit=settings.SNAPSHOT_MAX_PER_RUN)
    pruned = snapshots_prune(keep=settings.SNAPSHOT_KEEP)
    return {
        "due": len(due),
        "taken": sum(s.state != SnapshotState.FAILED for s in taken),
        "failed": sum(s.state == SnapshotState.FAILED for s in taken),
        "became_available": became,
        "pruned": pruned,
        "missing": snapshots_missing(now=now),
    }
