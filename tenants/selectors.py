"""Reads: querysets shaped for their callers, each a constant number of queries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q, QuerySet

from hub.db.filters import matches_no_row
from tenants.models import (
    COMMAND_OPEN_STATUSES,
    AgentCredential,
    BackupOutcome,
    BackupReport,
    Command,
    CommandStatus,
    HeartbeatHourly,
    HeartbeatRollup,
    Tenant,
)


def tenant_list(*, filters: dict[str, Any] | None = None) -> QuerySet[Tenant]:
    filters = filters or {}
    queryset = Tenant.objects.select_related("server", "container_report").order_by("id")
    if matches_no_row(*filters.values()):
        return queryset.none()
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


class HistoryPoint(NamedTuple):
    """One bucket of a tenant's heartbeat history: its start, its width in seconds, and
    what the samples in it said."""

    start: datetime
    seconds: int
    samples: int
    disk_avg: float
    disk_max: float
    memory_avg: float
    memory_max: float
    load_avg: float
    load_max: float
    uptime_min: int


_HISTORY_SQL = """
    SELECT bucket_start, {rollup_seconds}, samples, disk_sum / samples, disk_max, memory_sum / samples, memory_max,
           load_sum / samples, load_max, uptime_min
    FROM {rollups} WHERE tenant_id = %(tenant)s
      AND bucket_start > %(since)s - make_interval(secs => {rollup_seconds}) AND bucket_start < %(until)s
    UNION ALL
    SELECT h.bucket_start, 3600, h.samples, h.disk_sum / h.samples, h.disk_max, h.memory_sum / h.samples,
           h.memory_max, h.load_sum / h.samples, h.load_max, h.uptime_min
    FROM {hourly} h WHERE h.tenant_id = %(tenant)s
      AND h.bucket_start > %(since)s - interval '1 hour' AND h.bucket_start < %(until)s
      AND NOT EXISTS (
          SELECT 1 FROM {rollups} r WHERE r.tenant_id = h.tenant_id
            AND r.bucket_start >= h.bucket_start AND r.bucket_start < h.bucket_start + interval '1 hour'
      )
    ORDER BY 1
"""


def heartbeat_history(*, tenant_id: int, since: datetime, until: datetime) -> list[HistoryPoint]:
    """The tenant's history from `since` to `until`, oldest first, in one query: the
    5-minute rollups where they are still kept, hours before that. An hour condensed
    while its 5-minute rows are still there (its day not dropped yet) is given once,
    in 5 minutes."""
    sql = _HISTORY_SQL.format(
        rollups=HeartbeatRollup._meta.db_table,
        hourly=HeartbeatHourly._meta.db_table,
        rollup_seconds=int(settings.HEARTBEAT_ROLLUP_SECONDS),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"tenant": tenant_id, "since": since, "until": until})
        return [HistoryPoint(*row) for row in cursor.fetchall()]
