"""The reads behind the checks: one query each, whatever the size of the fleet."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import connection
from django.db.models import (
    BigIntegerField,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Greatest

from hub.db.bulksql import EpochSeconds, UtcMinute
from tenants.models import TENANT_LIVE_STATUSES, BackupReport, Tenant

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
        .annotate(
            silent_for=RawSQL(
                "FLOOR(EXTRACT(EPOCH FROM (%s - last_heartbeat_at)))::bigint", [now], output_field=BigIntegerField()
            )
        )
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


def tenants_backup_failing(*, stale_before: datetime) -> list[Mapping[str, Any]]:
    """Active tenants whose latest backup report failed (some or all databases) or is
    older than `stale_before`, or that never reported though registered before it; the
    report's time in seconds since the epoch."""
    latest = BackupReport.objects.filter(tenant=OuterRef("pk")).order_by("-last_run")
    return list(
        Tenant.objects.filter(status="ACTIVE", registered_at__isnull=False)
        .annotate(
            report_outcome=Subquery(latest.values("outcome")[:1]),
            report_last_run=Subquery(latest.values("last_run")[:1]),
            report_databases=Subquery(latest.values("databases")[:1]),
        )
        .filter(
            Q(report_outcome__in=["PARTIAL", "FAILED"])
            | Q(report_last_run__lt=stale_before)
            | Q(report_outcome__isnull=True, registered_at__lt=stale_before)
        )
        .annotate(report_last_run_epoch=EpochSeconds("report_last_run"))
        .values("id", "report_outcome", "report_last_run_epoch", "report_databases")
    )
