"""Heartbeat history that scales with the fleet, in three tiers: raw samples in hourly
partitions kept HEARTBEAT_RAW_RETENTION_HOURS, 5-minute rollups per tenant in daily
partitions kept HEARTBEAT_ROLLUP_RETENTION_DAYS, then condensed into hourly rows per
tenant, in daily partitions kept HEARTBEAT_HISTORY_RETENTION_DAYS. The latest state of
every tenant is on its Tenant row (what the fleet checks and the rollout gates read);
this is what the Hub keeps of the past. Retention drops whole partitions: no row of
the live tables is scanned or deleted, and no lock on them is held past
HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS. Condensing reads a day's partition by its own
name, a table no writer touches any more."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from hub.db.partitions import (
    Maintenance,
    Partition,
    PartitionedTable,
    partitions,
    partitions_drop_before,
    partitions_ensure,
)

RAW = PartitionedTable("tenants_heartbeatsample", timedelta(hours=1))
# Each rollup row is updated a few times after its insert (one merge per flush that
# brings a sample of its bucket): room on the page keeps those updates HOT.
ROLLUPS = PartitionedTable("tenants_heartbeatrollup", timedelta(days=1), storage="fillfactor=80")
# Written once a row, never updated: pages full.
HOURLY = PartitionedTable("tenants_heartbeathourly", timedelta(days=1))
# The SQL of a sample's bucket start, from a timestamptz column.
ROLLUP_SQL_BUCKET = (
    "date_bin(make_interval(secs => " + "{seconds}" + "), {column}, timestamptz '1970-01-01 00:00:00+00')"
)


def rollup_bucket_sql(column: str) -> str:
    return ROLLUP_SQL_BUCKET.format(seconds=int(settings.HEARTBEAT_ROLLUP_SECONDS), column=column)


def heartbeat_partitions_ensure(*, first: datetime, last: datetime) -> Maintenance:
    """The raw and rollup partitions that samples from `first` to `last` need."""
    lock_timeout = settings.HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS
    report = partitions_ensure(RAW, first=first, last=last, lock_timeout_ms=lock_timeout)
    report.add(partitions_ensure(ROLLUPS, first=first, last=last, lock_timeout_ms=lock_timeout))
    return report


@dataclass
class HistoryMaintenance(Maintenance):
    """A maintenance run, with the 5-minute days it condensed into hours."""

    condensed: list[str] = field(default_factory=list)
    condensed_hours: int = 0
    # The longest condensing statement: it reads an old partition no one writes and
    # inserts into the hourly table, so it holds no lock a live writer waits on.
    longest_condense_ms: float = 0.0


# An hour's row from the 5-minute rows of that hour (HEARTBEAT_ROLLUP_SECONDS divides
# an hour). An hour already condensed is left as it is, so condensing a day again (its
# drop was skipped, or two runs overlapped) counts nothing twice.
CONDENSE_SQL = (
    "INSERT INTO {hourly} (tenant_id, bucket_start, samples, disk_sum, disk_max, memory_sum, memory_max, "
    "load_sum, load_max, uptime_min) "
    "SELECT tenant_id, date_bin(interval '1 hour', bucket_start, timestamptz '1970-01-01 00:00:00+00'), "
    "sum(samples), sum(disk_sum), max(disk_max), sum(memory_sum), max(memory_max), sum(load_sum), max(load_max), "
    'min(uptime_min) FROM "{partition}" GROUP BY 1, 2 '
    "ON CONFLICT (tenant_id, bucket_start) DO NOTHING"
)


def rollups_condense_day(partition: Partition, *, report: HistoryMaintenance) -> None:
    """One day of 5-minute rollups, condensed into that day's hourly rows."""
    report.add(
        partitions_ensure(
            HOURLY,
            first=partition.start,
            last=partition.start,
            lock_timeout_ms=settings.HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS,
        )
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(CONDENSE_SQL.format(hourly=HOURLY.name, partition=partition.name))
        report.condensed_hours += max(cursor.rowcount, 0)
    report.longest_condense_ms = max(report.longest_condense_ms, (time.perf_counter() - started) * 1000)
    report.condensed.append(partition.name)


def rollups_condense(*, cutoff: datetime, history_cutoff: datetime, report: HistoryMaintenance) -> datetime:
    """Condense each 5-minute day wholly past `cutoff` and not yet past `history_cutoff`,
    oldest first, at most HEARTBEAT_CONDENSE_DAYS_PER_RUN of them. Returns the time
    before which every 5-minute partition may go: its hours are kept, or it is past
    the history's retention."""
    due = sorted(
        (
            p
            for p in partitions(ROLLUPS).values()
            if p.state == "attached" and history_cutoff < p.start + ROLLUPS.width <= cutoff
        ),
        key=lambda p: p.start,
    )
    for number, partition in enumerate(due):
        if number == settings.HEARTBEAT_CONDENSE_DAYS_PER_RUN:
            return partition.start
        rollups_condense_day(partition, report=report)
    return cutoff


def heartbeat_history_maintain(*, now: datetime | None = None) -> HistoryMaintenance:
    """Make the partitions of the next HEARTBEAT_PARTITIONS_AHEAD_HOURS, drop the raw
    ones past HEARTBEAT_RAW_RETENTION_HOURS, condense the 5-minute days past
    HEARTBEAT_ROLLUP_RETENTION_DAYS into hours and drop them, and drop the hours past
    HEARTBEAT_HISTORY_RETENTION_DAYS. A partition is dropped only once all of it is
    past retention (and a 5-minute one only once its hours are kept), so everything
    younger is always kept."""
    now = now or timezone.now()
    lock_timeout = settings.HEARTBEAT_PARTITION_LOCK_TIMEOUT_MS
    report = HistoryMaintenance()
    report.add(
        heartbeat_partitions_ensure(first=now, last=now + timedelta(hours=settings.HEARTBEAT_PARTITIONS_AHEAD_HOURS))
    )
    report.add(
        partitions_drop_before(
            RAW, cutoff=now - timedelta(hours=settings.HEARTBEAT_RAW_RETENTION_HOURS), lock_timeout_ms=lock_timeout
        )
    )
    history_days = settings.HEARTBEAT_HISTORY_RETENTION_DAYS
    history_cutoff = now - timedelta(days=history_days)
    rollups_cutoff = rollups_condense(
        cutoff=now - timedelta(days=min(settings.HEARTBEAT_ROLLUP_RETENTION_DAYS, history_days)),
        history_cutoff=history_cutoff,
        report=report,
    )
    report.add(partitions_drop_before(ROLLUPS, cutoff=rollups_cutoff, lock_timeout_ms=lock_timeout))
    report.add(partitions_drop_before(HOURLY, cutoff=history_cutoff, lock_timeout_ms=lock_timeout))
    return report
