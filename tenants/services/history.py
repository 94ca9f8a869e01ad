"""Heartbeat history that scales with the fleet: raw samples in hourly partitions kept
HEARTBEAT_RAW_RETENTION_HOURS, 5-minute rollups per tenant in daily partitions kept
HEARTBEAT_HISTORY_RETENTION_DAYS. The latest state of every tenant is on its Tenant
row (what the fleet checks and the rollout gates read); this is what the Hub keeps
of the past. Retention drops whole partitions: no row of the live table is scanned
or deleted, and no lock on it is held past HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from hub.db.partitions import Maintenance, PartitionedTable, partitions_drop_before, partitions_ensure

RAW = PartitionedTable("tenants_heartbeatsample", timedelta(hours=1))
# Each rollup row is updated a few times after its insert (one merge per flush that
# brings a sample of its bucket): room on the page keeps those updates HOT.
ROLLUPS = PartitionedTable("tenants_heartbeatrollup", timedelta(days=1), storage="fillfactor=80")
# The SQL of a sample's bucket start, from a timestamptz column.
ROLLUP_SQL_BUCKET = (
    "date_bin(make_interval(secs => " + "{seconds}" + "), {column}, timestamptz '1970-01-01 00:00:00+00')"
)


def rollup_bucket_sql(column: str) -> str:
    return ROLLUP_SQL_BUCKET.format(seconds=int(settings.HEARTBEAT_ROLLUP_SECONDS), column=column)


def heartbeat_partitions_ensure(*, first: datetime, last: datetime) -> Maintenance:
    """The raw and rollup partitions that samples from `first` to `last` need."""
    lock_timeout = settings.HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS
    return partitions_ensure(RAW, first=first, last=last, lock_timeout_ms=lock_timeout).merge(
        partitions_ensure(ROLLUPS, first=first, last=last, lock_timeout_ms=lock_timeout)
    )


def heartbeat_history_maintain(*, now: datetime | None = None) -> Maintenance:
    """Make the partitions of the next HEARTBEAT_PARTITIONS_AHEAD_HOURS, drop the raw
    ones past HEARTBEAT_RAW_RETENTION_HOURS and the rollup ones past
    HEARTBEAT_HISTORY_RETENTION_DAYS. A partition is dropped only once all of it is
    past retention, so everything younger is always kept."""
    now = now or timezone.now()
    lock_timeout = settings.HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS
    made = heartbeat_partitions_ensure(first=now, last=now + timedelta(hours=settings.HEARTBEAT_PARTITIONS_AHEAD_HOURS))
    raw = partitions_drop_before(
        RAW, cutoff=now - timedelta(hours=settings.HEARTBEAT_RAW_RETENTION_HOURS), lock_timeout_ms=lock_timeout
    )
    rollups = partitions_drop_before(
        ROLLUPS, cutoff=now - timedelta(days=settings.HEARTBEAT_HISTORY_RETENTION_DAYS), lock_timeout_ms=lock_timeout
    )
    return made.merge(raw).merge(rollups)
