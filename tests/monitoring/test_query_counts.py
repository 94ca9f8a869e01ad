"""Every check is set-based: its number of SQL queries is the same for 10 tenants and
for 1,000, whether it opens, counts or resolves their alerts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hub.models import Alert, AlertStatus
from monitoring.models import HubPresence
from monitoring.services.checks import check_execute
from provisioning.models import Order, OrderStatus
from tenants.models import BackupReport, Tenant, TenantContainers
from tests.factories import ago, healthy_fleet

pytestmark = pytest.mark.django_db

BIG = 1000
# Lock, run record, one read of the failing tenants, the alert sync, its audit rows and
# notification rows: whatever the fleet, never more than this.
MAX_QUERIES = 25
SMALL = 10


def failing_fleet() -> dict[str, object]:
    """Every tenant fails every tenant check."""
    now = timezone.now()
    return {
        "last_heartbeat_at": now - timedelta(minutes=10),
        "disk_percent": 95.0,
        "memory_percent": 97.0,
        "containers": [{"name": "ghost", "state": "exited", "health": None}],
        "tls_expires_at": now + timedelta(days=3),
    }


def healthy() -> None:
    Tenant.objects.update(
        last_heartbeat_at=timezone.now(),
        disk_percent=10.0,
        memory_percent=10.0,
        tls_expires_at=timezone.now() + timedelta(days=90),
    )
    TenantContainers.objects.update(containers=[{"name": "ghost", "state": "running", "health": "healthy"}])
    BackupReport.objects.update(last_run=timezone.now(), outcome="SUCCESS", databases={"ghost": {"status": "success"}})


def queries_for(name: str, count: int, at_most: Any) -> tuple[int, int, int]:
    """Queries of the opening run, the counting run and the resolving run."""
    Alert.objects.all().delete()
    Tenant.objects.all().delete()
    HubPresence.objects.update_or_create(
        pk=1, defaults={"beat_seen_at": timezone.now(), "resumed_at": ago(days=1), "outage_reason": ""}
    )
    tenants = healthy_fleet(count, **failing_fleet())
    # One tenant still heartbeats: with none at all, the Hub's intake would be down.
    Tenant.objects.filter(pk=tenants[0].pk).update(last_heartbeat_at=timezone.now())
    BackupReport.objects.bulk_create(
        [
            BackupReport(
                tenant=t,
                report_id=f"00000000-0000-0000-0000-{t.pk:012d}",
                last_run=ago(hours=3),
                duration_seconds=1,
                databases={"ghost": {"status": "failed"}},
                outcome="FAILED",
            )
            for t in tenants
        ]
    )
    counts = []
    for phase in ("open", "count", "resolve"):
        if phase == "resolve":
            healthy()
        with at_most(MAX_QUERIES) as captured:
            assert check_execute(name=name).ran
        counts.append(len(captured))
        HubPresence.objects.filter(pk=1).update(beat_seen_at=timezone.now())
    opened = Alert.objects.exclude(subject_type="hub").count()
    assert opened >= count - 1, f"{name}: expected alerts for all {count} tenants, got {opened}"
    assert not Alert.objects.filter(status=AlertStatus.OPEN).exclude(subject_type="hub").exists()
    return counts[0], counts[1], counts[2]


@pytest.mark.parametrize("check", ["heartbeats", "disk", "memory", "containers", "tls", "backups"])
def test_queries_do_not_grow_with_the_fleet(check: str, django_assert_max_num_queries: Any) -> None:
    small = queries_for(check, SMALL, django_assert_max_num_queries)
    big = queries_for(check, BIG, django_assert_max_num_queries)
    assert big == small, f"{check}: {small} queries for {SMALL} tenants, {big} for {BIG}"


def stuck_orders_queries(count: int) -> list[int]:
    Alert.objects.all().delete()
    Order.objects.all().delete()
    Order.objects.bulk_create(
        [Order(domain=f"o{i}.example", status=OrderStatus.DNS_PENDING) for i in range(count)], batch_size=2000
    )
    Order.objects.update(status_changed_at=ago(hours=5))
    counts = []
    for phase in ("open", "count", "resolve"):
        if phase == "resolve":
            Order.objects.update(status=OrderStatus.FULFILLED)
        with CaptureQueriesContext(connection) as captured:
            assert check_execute(name="stuck_work").ran
        counts.append(len(captured.captured_queries))
        assert counts[-1] <= MAX_QUERIES
    assert Alert.objects.filter(kind="order_stuck").count() == count
    return counts


def test_stuck_orders_queries_do_not_grow_with_the_number_of_orders() -> None:
    with override_settings(ORDER_STATUS_DEADLINES={"DNS_PENDING": 1800}):
        assert stuck_orders_queries(SMALL) == stuck_orders_queries(BIG)


def test_the_schedule_is_in_the_database_and_every_task_exists() -> None:
    from django_celery_beat.models import PeriodicTask

    from hub.celery import app

    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__startswith="monitoring ")}
    assert len(tasks) == 16
    assert "monitoring resources" not in tasks
    assert {tasks["monitoring disk"].task, tasks["monitoring memory"].task} == {
        "monitoring.check_disk",
        "monitoring.check_memory",
    }
    assert tasks["monitoring disk"].interval.every == tasks["monitoring memory"].interval.every == 60
    assert all(t.queue == "monitoring" and t.enabled for t in tasks.values())
    assert tasks["monitoring hub database backup"].crontab.hour == "3"
    assert tasks["monitoring server snapshots"].interval.every == 900
    assert tasks["monitoring restore drill"].crontab.day_of_week == "0"
    assert tasks["monitoring heartbeats"].interval.every == 30
    assert tasks["monitoring hub self-watch"].interval.every == 60
    history = tasks["monitoring heartbeat history prune"].crontab
    assert (history.minute, history.hour) == ("30", "*")
    app.loader.import_default_modules()
    assert {t.task for t in tasks.values()} <= set(app.tasks)
