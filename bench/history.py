"""Benchmark 6: heartbeat history at fleet scale. A fleet of 100,000 tenants; a day of
raw samples and a month of 5-minute rollups written in bulk into their partitions,
one day of them as dense as the fleet writes it (288 a tenant) for 10,000 tenants;
then one minute of the fleet's heartbeats flushed (history, rollups and state), the
dense day condensed into hours (what one day costs), and the hourly maintenance
(partitions ahead, the days past the rollups' retention condensed, whole partitions
past retention dropped) run while a writer keeps inserting into the live partition.
The writer's statement times before and during the maintenance, and the longest DDL
statement, say how long anything held a lock the live table's writers wait on."""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bench.common import Result, database_url, fresh_database, percentile

GOAL_LOCK_MS = 100.0
RAW_HOURS = 26  # the retention's 24 and two more past it
ROLLUP_DAYS = 32  # the history's retention of 30 and two more past it
DENSE_DAY = 3  # days ago: inside the 5-minute retention, so the maintenance leaves it
DENSE_TENANTS = 10_000


def _fill(tenants: int, now: datetime) -> tuple[int, int, float]:
    """A day (and two hours) of raw samples, one per tenant and hour, and a month (and
    two days) of rollups, one per tenant and day, except the dense day: every 5-minute
    bucket of DENSE_TENANTS tenants. Written by INSERT ... SELECT."""
    from django.db import connection

    from hub.db.partitions import partitions_ensure
    from tenants.services.history import RAW, ROLLUPS

    started = time.perf_counter()
    partitions_ensure(RAW, first=now - timedelta(hours=RAW_HOURS), last=now)
    partitions_ensure(ROLLUPS, first=now - timedelta(days=ROLLUP_DAYS), last=now)
    raw = rollups = 0
    with connection.cursor() as cursor:
        for hour in range(1, RAW_HOURS + 1):
            start = RAW.floor(now - timedelta(hours=hour))
            cursor.execute(
                "INSERT INTO tenants_heartbeatsample SELECT id, %s + make_interval(secs => id %% 3600), 40, 60, 0.5,"
                " 86400, '[]'::jsonb, NULL FROM tenants_tenant",
                [start],
            )
            raw += cursor.rowcount
        for day in range(1, ROLLUP_DAYS + 1):
            start = ROLLUPS.floor(now - timedelta(days=day))
            if day == DENSE_DAY:
                cursor.execute(
                    "INSERT INTO tenants_heartbeatrollup SELECT t.id, %s + make_interval(secs => b * 300), 5,"
                    " 200, 41, 300, 61, 2.5, 0.6, 86400 + b * 300"
                    " FROM (SELECT id FROM tenants_tenant ORDER BY id LIMIT %s) AS t, generate_series(0, 287) AS b"
                    # Laid out as the flush writes it: bucket after bucket, every tenant in each.
                    " ORDER BY b, t.id",
                    [start, DENSE_TENANTS],
                )
                rollups += cursor.rowcount
                continue
            cursor.execute(
                "INSERT INTO tenants_heartbeatrollup SELECT id, %s + make_interval(secs => (id %% 288) * 300), 5,"
                " 200, 41, 300, 61, 2.5, 0.6, 86400 FROM tenants_tenant",
                [start],
            )
            rollups += cursor.rowcount
        cursor.execute("ANALYZE tenants_heartbeatsample, tenants_heartbeatrollup")
    return raw, rollups, time.perf_counter() - started


# What an agent reports (bench/heartbeat.lua's eight containers), and the same tenant
# after one container crashed.
CONTAINERS = [
    {"name": name, "state": "running", "health": None if name in ("redis", "gitea") else "healthy"}
    for name in ("nginx", "postgres", "redis", "openclaw", "safety-wrapper", "secrets-proxy", "nextcloud", "gitea")
]
CONTAINERS_CHANGED = [*CONTAINERS[:-1], {"name": "gitea", "state": "exited", "health": None}]


# The beat runs the flush every 5 seconds (tenants migration 0002).
FLUSHES_A_MINUTE = 12


def _flush_one_minute(
    tenant_ids: list[int], now: datetime, containers: list[dict[str, str | None]]
) -> tuple[float, int]:
    """Every tenant's heartbeat of one minute, through the buffer and the flush, as the
    beat flushes them: every 5 seconds, the tenants heard meanwhile. Each tenant beats
    at its own second of the minute, so every flush touches every page of the tenants
    table. Returns the flushes' time in all, and the samples they wrote."""
    from tenants import redis_store
    from tenants.services import heartbeat_flush
    from tenants.services.heartbeats import _to_epoch_us

    sample = {
        "disk": 41.0,
        "mem": 62.0,
        "load": 0.4,
        "up": 86400,
        "containers": containers,
        "versions": {},
        "tls": None,
    }
    client = redis_store.client()
    elapsed, flushed = 0.0, 0
    for part in range(FLUSHES_A_MINUTE):
        at = _to_epoch_us(now) + part * 5_000_000
        heard = tenant_ids[part::FLUSHES_A_MINUTE]
        for start in range(0, len(heard), 10_000):
            client.rpush(
                redis_store.HISTORY_KEY,
                *(
                    json.dumps({**sample, "tenant": pk, "at": at + i})
                    for i, pk in enumerate(heard[start : start + 10_000])
                ),
            )
        started = time.perf_counter()
        flushed += heartbeat_flush().samples
        elapsed += time.perf_counter() - started
    return elapsed, flushed


def _raw_sample_bytes(since: datetime) -> dict[bool, float]:
    """The average size of a flushed raw sample's row, with and without its list."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT containers IS NOT NULL, avg(pg_column_size(s.*)) FROM tenants_heartbeatsample AS s "
            "WHERE received_at >= %s GROUP BY 1",
            [since],
        )
        return {kept: float(size) for kept, size in cursor.fetchall()}


def _history_samples(first: datetime, last: datetime) -> int:
    """Samples counted by the 5-minute rollups and the hours whose buckets start in
    [first, last), each moment in one of them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT coalesce(sum(samples), 0) FROM tenants_heartbeatrollup"
            " WHERE bucket_start >= %(first)s AND bucket_start < %(last)s)"
            " + (SELECT coalesce(sum(samples), 0) FROM tenants_heartbeathourly"
            " WHERE bucket_start >= %(first)s AND bucket_start < %(last)s)",
            {"first": first, "last": last},
        )
        return int(cursor.fetchone()[0])


@dataclass(frozen=True)
class _Condensed:
    rows: int
    hours: int
    seconds: float
    rollup_bytes: int
    hourly_bytes: int


def _condense_dense_day(now: datetime) -> _Condensed:
    """The dense day condensed into hours, as the maintenance does once a day."""
    from django.db import connection

    from hub.db.partitions import partitions
    from tenants.services.history import HOURLY, ROLLUPS, HistoryMaintenance, rollups_condense_day

    partition = partitions(ROLLUPS)[ROLLUPS.partition_name(now - timedelta(days=DENSE_DAY))]
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT count(*), pg_total_relation_size(%s::regclass) FROM "{partition.name}"', [partition.name]
        )
        rows, rollup_bytes = cursor.fetchone()
    report = HistoryMaintenance()
    started = time.perf_counter()
    rollups_condense_day(partition, report=report)
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [HOURLY.partition_name(partition.start)])
        (hourly_bytes,) = cursor.fetchone()
    return _Condensed(rows, report.condensed_hours, seconds, rollup_bytes, hourly_bytes)


class _Writer(threading.Thread):
    """Inserts 500 samples into the live partition every 20 ms on a connection of its
    own, timing every statement."""

    def __init__(self, tenant_ids: list[int]) -> None:
        super().__init__(daemon=True)
        self.tenant_ids = tenant_ids
        self.stop = threading.Event()
        self.timings: list[tuple[float, float]] = []  # (start, seconds)
        self.errors = 0

    def run(self) -> None:
        import psycopg

        with psycopg.connect(database_url(), autocommit=True) as conn:
            offset = 0
            while not self.stop.is_set():
                batch = self.tenant_ids[offset : offset + 500] or self.tenant_ids[:500]
                offset = (offset + 500) % len(self.tenant_ids)
                started = time.perf_counter()
                try:
                    conn.execute(
                        "INSERT INTO tenants_heartbeatsample SELECT t, clock_timestamp(), 40, 60, 0.5, 86400,"
                        " '[]'::jsonb, NULL FROM unnest(%s::bigint[]) AS t ON CONFLICT DO NOTHING",
                        [batch],
                    )
                except psycopg.Error:
                    self.errors += 1
                self.timings.append((started, time.perf_counter() - started))
                time.sleep(0.02)

    def between(self, first: float, last: float) -> list[float]:
        return [seconds for started, seconds in self.timings if first <= started <= last]


def run(quick: bool) -> Result:
    tenants = 2_000 if quick else 100_000
    result = Result(
        f"heartbeat history: {tenants:,} tenants, {RAW_HOURS} h of raw samples and {ROLLUP_DAYS} days of rollups, "
        "one minute flushed, a day condensed into hours, the hourly maintenance under a live writer"
    )
    from django.db import connection
    from django.test import override_settings

    from ops.simulation import fleet_simulate
    from tenants.models import HeartbeatRollup, HeartbeatSample
    from tenants.services.history import RAW, ROLLUPS, heartbeat_history_maintain

    with fresh_database():
        started = time.perf_counter()
        tenant_ids = [agent.tenant_id for agent in fleet_simulate(count=tenants, actor="bench")]
        simulate_s = time.perf_counter() - started
        now = datetime.now(UTC)
        raw, rollups, fill_s = _fill(tenants, now)
        first_flush_s, flushed = _flush_one_minute(tenant_ids, now, CONTAINERS)
        second_flush_s, _ = _flush_one_minute(tenant_ids, now + timedelta(seconds=60), CONTAINERS)
        changed_flush_s, _ = _flush_one_minute(tenant_ids, now + timedelta(seconds=120), CONTAINERS_CHANGED)
        rollups_now = HeartbeatRollup.objects.filter(bucket_start__gte=now - timedelta(minutes=10)).count()
        sample_bytes = _raw_sample_bytes(now)

        dense = _condense_dense_day(now)

        raw_cutoff = now - timedelta(hours=24)
        # Whole hours after the history's cutoff: an hour straddling it is kept whole.
        history_from = RAW.floor(now - timedelta(days=30)) + timedelta(hours=1)
        recent = now - timedelta(minutes=10)
        kept_raw_before = HeartbeatSample.objects.filter(received_at__gte=raw_cutoff, received_at__lt=now).count()
        samples_before = _history_samples(history_from, recent)

        writer = _Writer(tenant_ids)
        writer.start()
        time.sleep(2.0)
        maintain_started = time.perf_counter()
        # Every day due, in one run (a run condenses HEARTBEAT_CONDENSE_DAYS_PER_RUN).
        with override_settings(HEARTBEAT_CONDENSE_DAYS_PER_RUN=ROLLUP_DAYS):
            done = heartbeat_history_maintain(now=now)
        maintain_s = time.perf_counter() - maintain_started
        time.sleep(1.0)
        writer.stop.set()
        writer.join(timeout=30)
        before = [s for t, s in writer.timings if t < maintain_started]
        during = writer.between(maintain_started, maintain_started + maintain_s)

        kept_raw_after = HeartbeatSample.objects.filter(received_at__gte=raw_cutoff, received_at__lt=now).count()
        samples_after = _history_samples(history_from, recent)
        rollups_left = HeartbeatRollup.objects.filter(bucket_start__lt=now - timedelta(days=8)).count()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_total_relation_size(%s::regclass)", [RAW.partition_name(now - timedelta(hours=2))]
            )
            (raw_partition_bytes,) = cursor.fetchone()
            cursor.execute(
                "SELECT pg_total_relation_size(%s::regclass)", [ROLLUPS.partition_name(now - timedelta(days=2))]
            )
            (rollup_partition_bytes,) = cursor.fetchone()

    result.add("simulate_fleet", f"{tenants:,} tenants in {simulate_s:.1f} s", "< 60 s", simulate_s < 60)
    result.add("history written in bulk", f"{raw:,} raw samples + {rollups:,} rollups in {fill_s:.1f} s", "", None)
    result.add(
        "flush of one minute of the fleet",
        f"{flushed:,} samples with {len(CONTAINERS)} containers each, in {FLUSHES_A_MINUTE} flushes: "
        f"{first_flush_s:.2f} s (the tenants' first, new buckets), "
        f"{second_flush_s:.2f} s (the same containers, merged), "
        f"{changed_flush_s:.2f} s (every tenant's containers changed)",
        "",
        flushed == tenants,
    )
    result.add(
        "flush cost per sample",
        f"{second_flush_s / tenants * 1e6:.0f} us (history + rollup + state, containers unchanged); "
        f"{changed_flush_s / tenants * 1e6:.0f} us (containers changed)",
        "",
    )
    result.add(
        "raw sample row (flushed)",
        " / ".join(
            f"{'with its containers' if kept else 'containers unchanged'} {size:.0f} B"
            for kept, size in sorted(sample_bytes.items(), reverse=True)
        ),
        "",
    )
    result.add("rollup rows for those three minutes", f"{rollups_now:,}", "one per tenant and bucket", None)
    result.add(
        "maintenance",
        f"{len(done.dropped)} partitions dropped, {len(done.created)} made, {len(done.skipped)} skipped "
        f"in {maintain_s * 1000:.0f} ms",
        "",
        not done.skipped,
    )
    dense_tenants = dense.rows // 288
    result.add(
        "days condensed into hours by the maintenance",
        f"{len(done.condensed)} days ({done.condensed_hours:,} hours written), the longest statement "
        f"{done.longest_condense_ms:.0f} ms; 5-minute rows left older than 8 days: {rollups_left:,}",
        "every day past 7 days",
        rollups_left == 0 and len(done.condensed) >= 21,
    )
    result.add(
        f"one dense day condensed ({dense_tenants:,} tenants x 288 buckets)",
        f"{dense.rows:,} 5-minute rows into {dense.hours:,} hours in {dense.seconds * 1000:.0f} ms "
        f"({dense.seconds / dense.rows * 1e6:.2f} us a row; a day of 100,000 tenants: "
        f"{dense.seconds / dense.rows * 28_800_000:.0f} s)",
        "",
        dense.hours == dense.rows // 12,
    )
    result.add(
        "a dense day on disk",
        f"5-minute {dense.rollup_bytes / dense.rows:.0f} B/row ({dense.rollup_bytes / dense_tenants / 1e3:.0f} kB a "
        f"tenant), hours {dense.hourly_bytes / dense.hours:.0f} B/row "
        f"({dense.hourly_bytes / dense_tenants / 1e3:.1f} kB a tenant)",
        "",
    )
    result.add(
        "longest DDL statement (lock held)",
        f"{done.longest_statement_ms:.1f} ms",
        f"< {GOAL_LOCK_MS:.0f} ms",
        done.longest_statement_ms < GOAL_LOCK_MS,
    )
    result.add(
        "live writer: statement p50 / max before",
        f"{statistics.median(before) * 1000:.1f} / {max(before) * 1000:.1f} ms ({len(before)} inserts)"
        if before
        else "n/a",
        "",
    )
    result.add(
        "live writer: max during maintenance",
        f"{max(during) * 1000:.1f} ms ({len(during)} inserts, {writer.errors} errors)" if during else "no insert ran",
        f"< {GOAL_LOCK_MS:.0f} ms",
        (max(during) * 1000 < GOAL_LOCK_MS and writer.errors == 0) if during else None,
    )
    result.add(
        "kept: everything younger than retention",
        f"raw {kept_raw_after:,} of {kept_raw_before:,}; samples counted in the 5-minute rollups and hours "
        f"{samples_after:,} of {samples_before:,}",
        "all",
        kept_raw_after == kept_raw_before and samples_after == samples_before,
    )
    result.add(
        "one partition on disk",
        f"raw {raw_partition_bytes / tenants:.0f} B/sample, rollups {rollup_partition_bytes / tenants:.0f} B/row",
        "",
    )
    result.ratio = (
        f"longest lock-holding statement {done.longest_statement_ms:.1f} ms; the live writer's slowest insert "
        f"{(max(during) if during else 0) * 1000:.1f} ms during the maintenance against "
        f"{(percentile(before, 99) if before else 0) * 1000:.1f} ms p99 before"
    )
    result.notes.append(
        "raw samples are written one per tenant and hour (1/60 of the real rate) to keep the bench short: dropping a "
        "partition unlinks its files, its time does not depend on its rows"
    )
    return result
