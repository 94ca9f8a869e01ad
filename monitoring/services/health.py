"""The fleet health checks: heartbeat freshness (with the Hub-outage grace), disk and
memory, containers, TLS expiry and backups. Each is set-based: one read of the failing
tenants, one `alerts_sync` per kind of alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from hub.alerts.services import Failing, alert_raise, alert_resolve, alerts_sync
from hub.audit import audit_record
from hub.collector import collector_paused
from hub.models import AlertSeverity
from monitoring import selectors
from monitoring.models import HubPresence

TENANT = "tenant"
HUB = "hub"
INTAKE_SUBJECT = "heartbeat-intake"


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def hub_presence_observe(*, now: datetime) -> tuple[HubPresence, bool, int]:
    """Record that the Hub looks at the fleet now, and decide whether it was away.

    The Hub was away when no heartbeat check ran for HUB_OUTAGE_GAP_SECONDS (beat or
    workers down), or when no tenant at all could get a heartbeat through (web or flush
    down) and now they can again. Every live tenant heartbeats within its interval, so
    fleet-wide silence means the Hub when it lasts longer than the gap and longer than
    the longest interval. Either way every tenant's staleness clock restarts at the
    Hub's return. Returns the presence, whether heartbeat intake is silent right now
    (then nobody is judged) and the number of watched tenants."""
    gap = timedelta(seconds=settings.HUB_OUTAGE_GAP_SECONDS)
    fleet = selectors.tenants_watched().aggregate(
        tenants=Count("id"), newest=Max("last_heartbeat_at"), longest_interval=Max("heartbeat_interval")
    )
    tenants, newest = fleet["tenants"], fleet["newest"]
    silence = max(gap, timedelta(seconds=1.5 * (fleet["longest_interval"] or 0)))
    intake_silent = tenants >= settings.HEARTBEAT_INTAKE_MIN_FLEET and (newest is None or now - newest > silence)
    with transaction.atomic():
        presence, _ = HubPresence.objects.select_for_update().get_or_create(pk=1)
        reasons = []
        if presence.beat_seen_at is None:
            reasons.append("first heartbeat check")
        elif now - presence.beat_seen_at > gap:
            reasons.append(f"no heartbeat check for {_seconds(now - presence.beat_seen_at)} s")
        was_silent = presence.outage_reason.startswith("intake silent")
        if was_silent and not intake_silent:
            reasons.append("heartbeats arrive again after fleet-wide silence")
        fields = ["beat_seen_at"]
        presence.beat_seen_at = now
        if newest is not None and (presence.intake_seen_at is None or newest > presence.intake_seen_at):
            presence.intake_seen_at = newest
            fields.append("intake_seen_at")
        if reasons:
            old = presence.resumed_at
            presence.resumed_at = now
            presence.outage_reason = "; ".join(reasons)[:200]
            fields += ["resumed_at", "outage_reason"]
            audit_record(
                actor="monitoring",
                action="hub.resumed",
                object_type="hub",
                object_id="presence",
                old=old.isoformat() if old else None,
                new=now.isoformat(),
                reason=presence.outage_reason,
            )
        if intake_silent and not was_silent:
            # Remembered, so that the return of the heartbeats restarts the clocks.
            presence.outage_reason = "intake silent: no heartbeat from any tenant"
            fields = sorted({*fields, "outage_reason"})
        presence.save(update_fields=fields)
    return presence, intake_silent, tenants


@collector_paused()
def check_heartbeats() -> dict[str, Any]:
    now = timezone.now()
    presence, intake_silent, tenants = hub_presence_observe(now=now)
    if intake_silent:
        alert_raise(
            subject_type=HUB,
            subject_id=INTAKE_SUBJECT,
            kind="heartbeat_intake_silent",
            severity=AlertSeverity.HARD,
            message=(
                f"no heartbeat from any of {tenants} tenants for more than {settings.HUB_OUTAGE_GAP_SECONDS} s: "
                "the Hub's web or its heartbeat flush is down. Tenants are not judged stale until it is back."
            ),
        )
        return {"tenants": tenants, "intake_silent": True}
    alert_resolve(subject_type=HUB, subject_id=INTAKE_SUBJECT, kind="heartbeat_intake_silent")
    intervals = settings.HEARTBEAT_STALE_INTERVALS
    stale = selectors.tenants_stale(now=now, intervals=intervals, grace_from=presence.resumed_at)
    failing = {
        tenant_id: Failing(
            AlertSeverity.HARD,
            (
                f"no heartbeat for {'ever' if silent_for is None else f'{silent_for} s'}"
                f" (interval {interval} s; stale after {intervals} missed)"
            ),
        )
        for tenant_id, silent_for, interval in stale
    }
    result = alerts_sync(kind="heartbeat_stale", subject_type=TENANT, failing=failing)
    return {"tenants": tenants, "stale": len(stale), **result.summary()}


def _over_threshold_sync(*, kind: str, metric: str, limit: float, words: str) -> dict[str, Any]:
    over = selectors.tenants_over(metric=metric, threshold=limit)
    failing = {
        tid: Failing(AlertSeverity.MEDIUM, f"{words.format(value=value)} (alert above {limit:.0f}%)")
        for tid, value in over
    }
    return alerts_sync(kind=kind, subject_type=TENANT, failing=failing).summary()


# Disk and memory are two checks, not one: each alert kind is its own unit of work, so
# a storm of both (200,000 alerts at 100,000 tenants) is two tasks that two monitoring
# workers run side by side, each well inside a minute's budget (bench/RESULTS.md).
@collector_paused()
def check_disk() -> dict[str, Any]:
    return _over_threshold_sync(
        kind="disk_high", metric="disk_percent", limit=settings.DISK_ALERT_PERCENT, words="disk {value:.0f}% full"
    )


@collector_paused()
def check_memory() -> dict[str, Any]:
    return _over_threshold_sync(
        kind="memory_high",
        metric="memory_percent",
        limit=settings.MEMORY_ALERT_PERCENT,
        words="memory {value:.0f}% used",
    )


@collector_paused()
def check_containers() -> dict[str, Any]:
    failing = {
        tenant_id: Failing(AlertSeverity.MEDIUM, f"{count} container(s) crashed or unhealthy: {problems[:1500]}")
        for tenant_id, count, problems in selectors.tenants_with_bad_containers()
    }
    return alerts_sync(kind="containers_unhealthy", subject_type=TENANT, failing=failing).summary()


@collector_paused()
def check_tls() -> dict[str, Any]:
    now = timezone.now()
    expiring = selectors.tenants_tls_expiring(before=now + timedelta(days=settings.TLS_EXPIRY_ALERT_DAYS))
    now_epoch = now.timestamp()
    failing = {}
    for tenant_id, expires_epoch, expires_text in expiring:
        if expires_epoch <= now_epoch:
            failing[tenant_id] = Failing(AlertSeverity.HARD, f"TLS certificate expired at {expires_text} UTC")
        else:
            days = (expires_epoch - now_epoch) / 86400
            failing[tenant_id] = Failing(
                AlertSeverity.MEDIUM, f"TLS certificate expires in {days:.1f} days ({expires_text} UTC)"
            )
    return alerts_sync(kind="tls_expiring", subject_type=TENANT, failing=failing).summary()


@collector_paused()
def check_backups() -> dict[str, Any]:
    """Any database failed in the latest report -> MEDIUM; all failed, or the latest
    report (or none at all) older than BACKUP_REPORT_MAX_AGE_HOURS -> HARD."""
    now = timezone.now()
    max_age = timedelta(hours=settings.BACKUP_REPORT_MAX_AGE_HOURS)
    now_epoch, max_age_seconds = now.timestamp(), max_age.total_seconds()
    failing = {}
    for tenant_id, outcome, last_run, databases in selectors.tenants_backup_failing(stale_before=now - max_age):
        failed = sorted(
            name for name, entry in databases.items() if isinstance(entry, dict) and entry.get("status") == "failed"
        )
        if outcome is None or last_run is None:
            failing[tenant_id] = Failing(
                AlertSeverity.HARD, f"no backup report in {settings.BACKUP_REPORT_MAX_AGE_HOURS} h"
            )
        elif last_run < now_epoch - max_age_seconds:
            failing[tenant_id] = Failing(
                AlertSeverity.HARD,
                f"latest backup report is {int(now_epoch - last_run) // 3600} h old "
                f"({datetime.fromtimestamp(last_run, UTC):%Y-%m-%d %H:%M} UTC)",
            )
        elif outcome == "FAILED":
            failing[tenant_id] = Failing(AlertSeverity.HARD, f"every database backup failed: {', '.join(failed)}")
        else:
            failing[tenant_id] = Failing(
                AlertSeverity.MEDIUM, f"{len(failed)} of {len(databases)} database backups failed: {', '.join(failed)}"
            )
    return alerts_sync(kind="backup_failed", subject_type=TENANT, failing=failing).summary()
