"""The reads behind the checks: one query each, whatever the size of the fleet."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import orjson
from django.db import connection
from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    QuerySet,
    TextField,
    Value,
)
from django.db.models.functions import Coalesce, Greatest

from hub.db.bulksql import BigIntegerSQL, EpochSeconds, UtcMinute
from tenants.models import TENANT_LIVE_STATUSES, BackupOutcome, BackupReport, Tenant, TenantStatus


def tenants_watched() -> QuerySet[Tenant]:
    """Tenants whose agent registered and should be talking to the Hub."""
    return Tenant.objects.filter(status__in=TENANT_LIVE_STATUSES, registered_at__isnull=False)


def tenants_stale(*, now: datetime, intervals: int, grace_from: datetime | None) -> list[tuple[int, int | None, int]]:
    """(id, whole seconds since its last heartbeat or None, heartbeat_interval) of every
    tenant that missed more than `intervals` of its own heartbeat intervals. The clock
    starts at the later of its last heartbeat (or registration) and `grace_from` (the
    Hub's return). The seconds are counted by Postgres: in an outage of the whole fleet
    that is 100,000 timestamps Python need not parse."""
    clock: Coalesce | Greatest = Coalesce(F("last_heartbeat_at"), F("registered_at"))
    if grace_from is not None:
        clock = Greatest(clock, Value(grace_from, output_field=DateTimeField()))
    allowed = ExpressionWrapper(
        F("heartbeat_interval") * Value(timedelta(seconds=intervals)), output_field=DurationField()
    )
    return list(
        tenants_watched()
        .annotate(clock=clock)
        .annotate(stale_at=ExpressionWrapper(F("clock") + allowed, output_field=DateTimeField()))
        .filter(stale_at__lt=now)
        .annotate(silent_for=BigIntegerSQL("FLOOR(EXTRACT(EPOCH FROM (%s - last_heartbeat_at)))::bigint", [now]))
        .values_list("id", "silent_for", "heartbeat_interval")
    )


def tenants_over(*, metric: str, threshold: float) -> list[tuple[int, float]]:
    return list(
        tenants_watched()
        .filter(last_heartbeat_at__isnull=False, **{f"{metric}__gt": threshold})
        .values_list("id", metric)
    )


def tenants_with_bad_containers() -> list[tuple[int, int, str]]:
    """(id, how many containers crashed or are unhealthy, their descriptions) of every
    watched tenant with at least one: each "name (state)" or "name (unhealthy)", in the
    agent's order, joined by ", ". Postgres described them when the heartbeat wrote the
    containers (`TenantContainers.bad`, indexed where set): unpacking 20 containers of
    each of 100,000 tenants here took 1.1 s of every storm, and 0.45 s of every quiet run."""
    return list(
        tenants_watched()
        .filter(container_report__bad__isnull=False)
        .annotate(
            bad=Func(F("container_report__bad"), function="cardinality", output_field=IntegerField()),
            described=Func(
                F("container_report__bad"), Value(", "), function="array_to_string", output_field=TextField()
            ),
        )
        .values_list("id", "bad", "described")
    )


def tenants_tls_expiring(*, before: datetime) -> list[tuple[int, float, str]]:
    """(id, expiry in seconds since the epoch, its UTC minute as text) of every
    certificate expiring before."""
    # The column is nullable, but `__lt` leaves out the NULLs: each row has a date.
    rows = (
        tenants_watched()
        .filter(tls_expires_at__lt=before)
        .annotate(expires=EpochSeconds("tls_expires_at"), expires_text=UtcMinute("tls_expires_at"))
        .values_list("id", "expires", "expires_text")
    )
    return cast(list[tuple[int, float, str]], list(rows))


class BackupStanding(NamedTuple):
    tenant_id: int
    outcome: str | None
    last_run_epoch: float | None
    databases: dict[str, Any]


def tenants_backup_failing(*, stale_before: datetime) -> list[BackupStanding]:
    """Active tenants whose latest backup report failed (some or all databases) or is
    older than `stale_before`, or that never reported though registered before it, with
    that report (outcome, time in seconds since the epoch, databases; None, None, {} when
    there is none). The latest report is found once per tenant (LATERAL); as three ORM
    subqueries, repeated in the filter, a storm of 100,000 took 1.8-2.3 s against 0.9-1.1."""
    tenants, reports = Tenant._meta.db_table, BackupReport._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT t.id, r.outcome, EXTRACT(EPOCH FROM r.last_run)::float8, r.databases::text
              FROM {tenants} AS t
              LEFT JOIN LATERAL (
                   SELECT b.outcome, b.last_run, b.databases FROM {reports} AS b
                    WHERE b.tenant_id = t.id ORDER BY b.last_run DESC LIMIT 1
                   ) AS r ON true
             WHERE t.status = %s AND t.registered_at IS NOT NULL
               AND (r.outcome = ANY(%s::text[]) OR r.last_run < %s
                    OR (r.outcome IS NULL AND t.registered_at < %s))
            """,  # noqa: S608 - the table names are ours, the values are parameters
            [TenantStatus.ACTIVE, [BackupOutcome.PARTIAL, BackupOutcome.FAILED], stale_before, stale_before],
        )
        return [
            BackupStanding(pk, outcome, last_run, orjson.loads(databases) if databases else {})
            for pk, outcome, last_run, databases in cursor.fetchall()
        ]
