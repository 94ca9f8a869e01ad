"""Reads: querysets shaped for their callers, each a constant number of queries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Max, Q, QuerySet

from tenants.models import (
    COMMAND_OPEN_STATUSES,
    AgentCredential,
    BackupOutcome,
    BackupReport,
    Command,
    CommandStatus,
    Tenant,
)


def tenant_list(*, filters: dict[str, Any] | None = None) -> QuerySet[Tenant]:
    filters = filters or {}
    queryset = Tenant.objects.select_related("server", "container_report").order_by("id")
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    if filters.get("region"):
        queryset = queryset.filter(region=filters["region"])
    if filters.get("domain"):
        queryset = queryset.filter(domain__icontains=filters["domain"])
    return queryset


def command_list(*, tenant_id: int) -> QuerySet[Command]:
    return Command.objects.filter(tenant_id=tenant_id).order_by("-created_at")


def commands_deliverable(
    *, tenant_id: int | None = None, now: datetime, redelivery_timeout: float
) -> QuerySet[Command]:
    """Commands to hand out in a heartbeat reply: never delivered, or delivered and
    unanswered for longer than the redelivery timeout; never expired ones."""
    redeliver_before = now - timedelta(seconds=redelivery_timeout)
    queryset = Command.objects.filter(
        Q(status=CommandStatus.PENDING) | Q(status=CommandStatus.DELIVERED, delivered_at__lt=redeliver_before),
        expires_at__gt=now,
    )
    if tenant_id is not None:
        queryset = queryset.filter(tenant_id=tenant_id)
    return queryset


def commands_expired(*, now: datetime) -> QuerySet[Command]:
    return Command.objects.filter(status__in=COMMAND_OPEN_STATUSES, expires_at__lte=now)


# Every key-cache miss of the heartbeat runs one of these; compiling them through the
# ORM cost more CPU than all the rest of the heartbeat, so they are written out.
_CREDENTIALS_USABLE_SQL = f"""
    SELECT c.key_prefix, c.id, c.tenant_id, c.key_hash, c.expires_at, t.heartbeat_interval
    FROM {AgentCredential._meta.db_table} c JOIN {Tenant._meta.db_table} t ON t.id = c.tenant_id
    WHERE c.key_prefix {{match}} %s AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > %s)
    ORDER BY c.id DESC
"""  # noqa: S608 - table names from model metadata, values bound


def agent_credentials_usable(*, key_prefix: str, now: datetime) -> list[tuple[int, int, str, datetime | None, int]]:
    """(credential id, tenant id, key hash, expires_at, heartbeat interval) of the keys
    with this prefix that work now, newest first."""
    with connection.cursor() as cursor:
        cursor.execute(_CREDENTIALS_USABLE_SQL.format(match="="), [key_prefix, now])
        return [tuple(row[1:]) for row in cursor.fetchall()]


def agent_credentials_usable_in_bucket(
    *, bucket: str, now: datetime
) -> list[tuple[str, int, int, str, datetime | None, int]]:
    """(key prefix, then as agent_credentials_usable) of the keys that work now and whose
    prefix starts with `bucket` (hex characters), newest first."""
    if not bucket.isalnum():
        raise ValueError(f"not a key prefix bucket: {bucket!r}")
    with connection.cursor() as cursor:
        cursor.execute(_CREDENTIALS_USABLE_SQL.format(match="LIKE"), [f"{bucket}%", now])
        return [tuple(row) for row in cursor.fetchall()]


def agent_credentials_fingerprint() -> str:
    """Changes whenever a key is revoked or given an expiry: the key caches of the web
    processes compare it (through Redis) to know when to forget what they hold."""
    row = AgentCredential.objects.filter(Q(revoked_at__isnull=False) | Q(expires_at__isnull=False)).aggregate(
        count=Count("id"), last=Max("updated_at")
    )
    last = row["last"].isoformat() if row["last"] else "-"
    return f"{row['count']}:{last}"


def final_backup_confirmed(*, tenant_id: int, since: datetime) -> bool:
    """A backup that ran after `since` succeeded for every database and its off-site
    copy was uploaded: the data the customer left is safe before the server is wiped
    (a copy that stayed on the server is wiped with it)."""
    return BackupReport.objects.filter(
        tenant_id=tenant_id, last_run__gte=since, outcome=BackupOutcome.SUCCESS, remote_sync__status="success"
    ).exists()
