"""The reads behind the checks: one query each, whatever the size of the fleet."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from django.db.models import (
    BigIntegerField,
    BooleanField,
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

from hub.db.bulksql import EpochSeconds
from tenants.models import TENANT_LIVE_STATUSES, BackupReport, Tenant

# Docker states of a container that stopped or keeps dying, and a failed health check.
CRASHED_STATES = ("exited", "dead", "restarting")
UNHEALTHY = "unhealthy"
_BAD_CONTAINER_PATH = (
    '$[*] ? (@.state == "exited" || @.state == "dead" || @.state == "restarting" || @.health == "unhealthy")'
)


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


def tenants_with_bad_containers() -> list[tuple[int, list[dict[str, Any]]]]:
    bad = RawSQL("jsonb_path_exists(containers, %s::jsonpath)", [_BAD_CONTAINER_PATH], output_field=BooleanField())
    return list(tenants_watched().filter(bad).values_list("id", "containers"))


def tenants_tls_expiring(*, before: datetime) -> list[tuple[int, float]]:
    """(id, expiry in seconds since the epoch) of every certificate expiring before."""
    # The column is nullable, but `__lt` leaves out the NULLs: each row has a date.
    rows = (
        tenants_watched()
        .filter(tls_expires_at__lt=before)
        .annotate(expires=EpochSeconds("tls_expires_at"))
        .values_list("id", "expires")
    )
    return cast(list[tuple[int, float]], list(rows))


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
