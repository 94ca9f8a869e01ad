"""Tables partitioned by time (Postgres declarative range partitioning), made and
dropped a whole partition at a time, so that keeping a table to its retention never
scans or deletes rows of the live table.

A partitioned table here has one partition per `width` (an hour, a day), named after
the table and the partition's start in UTC (`tenants_heartbeatsample_p2026120418`).
There is no default partition: a row for a time with no partition fails with
`no partition of relation ... found for row`, which `is_missing_partition` recognises
so the writer can `partitions_ensure` and write again (the periodic maintenance
creates them ahead of time, so that is rare).

Locks: a new partition is made as a plain table and then attached, which takes only
SHARE UPDATE EXCLUSIVE on the parent (reads and writes go on); an old one is detached
CONCURRENTLY (the same lock) and then dropped on its own. Every statement runs under
`lock_timeout`, so DDL waiting behind a long query never queues the live table's
readers and writers behind it for longer than that: it gives up and the next run
tries again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, connection

NAME_FORMAT = {timedelta(hours=1): "%Y%m%d%H", timedelta(days=1): "%Y%m%d"}


@dataclass(frozen=True)
class PartitionedTable:
    name: str
    width: timedelta
    # Storage parameters of each partition (a partitioned parent holds none itself).
    storage: str = ""

    def partition_name(self, start: datetime) -> str:
        return f"{self.name}_p{start.strftime(NAME_FORMAT[self.width])}"

    def partition_start(self, partition: str) -> datetime | None:
        suffix = partition.removeprefix(f"{self.name}_p")
        try:
            return datetime.strptime(suffix, NAME_FORMAT[self.width]).replace(tzinfo=UTC)
        except ValueError:
            return None

    def floor(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC)
        if self.width == timedelta(days=1):
            return moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return moment.replace(minute=0, second=0, microsecond=0)

    def starts(self, first: datetime, last: datetime) -> Iterator[datetime]:
        start = self.floor(first)
        while start <= last:
            yield start
            start += self.width


@dataclass
class Maintenance:
    """What one maintenance run did, with the longest DDL statement it ran (how long a
    lock on the parent could have been held)."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    longest_statement_ms: float = 0.0

    def add(self, other: Maintenance) -> None:
        """Add what `other` did to this run's report."""
        self.created += other.created
        self.dropped += other.dropped
        self.skipped += other.skipped
        self.longest_statement_ms = max(self.longest_statement_ms, other.longest_statement_ms)


def is_missing_partition(exc: BaseException) -> bool:
    """True for the error Postgres raises for a row no partition accepts."""
    return "no partition of relation" in str(exc)


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime
    # "attached", "detaching" (a concurrent detach that did not finish), or "detached"
    # (detached, not yet dropped).
    state: str


def partitions(table: PartitionedTable) -> dict[str, Partition]:
    """The tables named as partitions of `table`, attached or left half-way, by name."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.inhparent IS NOT NULL, coalesce(i.inhdetachpending, false) "
            "FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = %s::regclass "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace AND c.relname LIKE %s",
            [table.name, table.name.replace("_", "\\_") + "\\_p%"],
        )
        rows = cursor.fetchall()
    found = {}
    for name, attached, pending in rows:
        start = table.partition_start(name)
        if start is not None:
            state = "detaching" if pending else "attached" if attached else "detached"
            found[name] = Partition(name=name, start=start, state=state)
    return found


def _timed(sql: str, report: Maintenance, lock_timeout_ms: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        started = time.perf_counter()
        try:
            cursor.execute(sql)
        finally:
            report.longest_statement_ms = max(report.longest_statement_ms, (time.perf_counter() - started) * 1000)
            cursor.execute("RESET lock_timeout")


def partitions_ensure(
    table: PartitionedTable, *, first: datetime, last: datetime, lock_timeout_ms: int = 100
) -> Maintenance:
    """Every partition that rows from `first` to `last` need. Idempotent; two callers at
    once are fine (a partition the other made first is skipped)."""
    report = Maintenance()
    existing = partitions(table)
    for start in table.starts(first, last):
        name = table.partition_name(start)
        if name in existing and existing[name].state == "attached":
            continue
        end = start + table.width
        try:
            _timed(
                f'CREATE TABLE IF NOT EXISTS "{name}" (LIKE "{table.name}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                + (f" WITH ({table.storage})" if table.storage else ""),
                report,
                lock_timeout_ms,
            )
            _timed(
                f'ALTER TABLE "{table.name}" ATTACH PARTITION "{name}" '
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')",
                report,
                lock_timeout_ms,
            )
        except DatabaseError as exc:
            if "already a partition" not in str(exc) and "would overlap" not in str(exc):
                raise
        report.created.append(name)
    return report


def partitions_drop_before(table: PartitionedTable, *, cutoff: datetime, lock_timeout_ms: int = 100) -> Maintenance:
    """Drop every partition that holds only rows older than `cutoff`. Outside a
    transaction a partition is first detached CONCURRENTLY, so the parent is never
    locked against its readers and writers; inside one (tests) it is dropped directly,
    under the same lock_timeout. A partition whose lock cannot be had in time is left
    for the next run (`skipped`)."""
    report = Maintenance()
    for partition in sorted(partitions(table).values(), key=lambda p: p.start):
        name = partition.name
        if partition.start + table.width > cutoff:
            continue
        try:
            if partition.state == "detaching":
                _timed(f'ALTER TABLE "{table.name}" DETACH PARTITION "{name}" FINALIZE', report, lock_timeout_ms)
            elif partition.state == "attached" and not connection.in_atomic_block:
                _timed(f'ALTER TABLE "{table.name}" DETACH PARTITION "{name}" CONCURRENTLY', report, lock_timeout_ms)
            _timed(f'DROP TABLE "{name}"', report, lock_timeout_ms)
        except DatabaseError as exc:
            if "lock timeout" not in str(exc):
                raise
            report.skipped.append(name)
            continue
        report.dropped.append(name)
    return report
