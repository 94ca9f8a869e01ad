"""The reads behind the checks: one query each, whatever the size of the fleet."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import orjson
from django.db import connection
from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    QuerySet,
    Value,
)
from django.db.models.functions import Coalesce, Greatest

from hub.db.bulksql import BigIntegerSQL, EpochSeconds, UtcMinute
from tenants.models import TENANT_LIVE_STATUSES, BackupOutcome, BackupReport, Tenant, TenantStatus

# Docker states of a container that stopped or keeps dying, and a failed health check.
CRASHED_STATES = ("exited", "dead", "restarting")
UNHEALTHY = "unhealthy"
# A tenant with a bad container contains one of these. Postgres tests jsonb containment
# (`@>`) quicker than the same filter as a JSON path: over 100,000 tenants of 20
# containers each, 0.58 s against 0.71 s when all are fine, 0.18 against 0.69 s when
# each has one crashed.
_BAD_CONTAINER_PATTERNS = [json.dumps([{"state": state}]) for state in CRASHED_STATES] + [
    json.dumps([{"health": UNHEALTHY}])
]


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
    agent's order, joined by ", ". Postgres finds, counts and describes them: a tenant
    runs 20 containers or more, and decoding every one in Python took 5 s of a storm
    of 100,000 (1.2 s this way)."""
    watched_sql, watched_params = tenants_watched().values_list("id", "containers").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT w.id, bad.count, bad.described
              FROM ({watched_sql}) AS w(id, containers)
             CROSS JOIN LATERAL (
                   SELECT count(*) AS count,
                          string_agg(coalesce(c->>'name', 'None') || ' ('
                                     || CASE WHEN c->>'state' = ANY(%s::text[]) THEN c->>'state' ELSE %s END
                                     || ')', ', ' ORDER BY position) AS described
                     FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.containers) = 'array' THEN w.containers END)
                          WITH ORDINALITY AS listed(c, position)
                    WHERE jsonb_typeof(c) = 'object' AND (c->>'state' = ANY(%s::text[]) OR c->>'health' = %s)
                   ) AS bad
             WHERE w.containers @> ANY(%s::jsonb[])
            """,  # noqa: S608 - the inner query is built by the ORM, the values are parameters
            [
                *watched_params,
                list(CRASHED_STATES),
                UNHEALTHY,
                list(CRASHED_STATES),
                UNHEALTHY,
                _BAD_CONTAINER_PATTERNS,
            ],
        )
        return cast(list[tuple[int, int, str]], cursor.fetchall())


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
