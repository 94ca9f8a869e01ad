"""Each check opens the right alert with the right severity, counts it while the
condition holds and resolves it when the condition clears."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from hub.db.locks import lock_key
from hub.models import Alert, AlertSeverity, AlertStatus
from monitoring.models import CheckOutcome, CheckRun, HubPresence
from monitoring.services.checks import check_execute
from provisioning.models import Order, OrderStatus, Server, ServerProvider, ServerStatus
from tenants.models import BackupReport, HeartbeatSample, Tenant
from tenants.services.history import heartbeat_partitions_ensure
from tests.factories import OrderFactory, ServerFactory, ago, containers_report, healthy_fleet

pytestmark = pytest.mark.django_db

HARD, MEDIUM = AlertSeverity.HARD, AlertSeverity.MEDIUM


def open_alerts(kind: str) -> dict[str, Alert]:
    return {a.subject_id: a for a in Alert.objects.filter(kind=kind, status=AlertStatus.OPEN)}


def run(name: str) -> dict[str, Any]:
    result = check_execute(name=name)
    assert result.ran
    return result.summary


def hub_seen_just_now() -> None:
    """The Hub has been up: no outage grace in play."""
    HubPresence.objects.update_or_create(
        pk=1, defaults={"beat_seen_at": timezone.now(), "resumed_at": ago(days=1), "outage_reason": ""}
    )


def test_heartbeat_staleness_opens_hard_counts_and_resolves() -> None:
    hub_seen_just_now()
    fresh = healthy_fleet(1, last_heartbeat_at=ago(seconds=30))[0]
    stale = healthy_fleet(1, last_heartbeat_at=ago(seconds=200))[0]  # 3 x 60 s missed
    slow = healthy_fleet(1, last_heartbeat_at=ago(seconds=200), heartbeat_interval=300)[0]  # its own interval

    run("heartbeats")
    run("heartbeats")

    alerts = open_alerts("heartbeat_stale")
    assert list(alerts) == [str(stale.pk)]
    assert (alerts[str(stale.pk)].severity, alerts[str(stale.pk)].count) == (HARD, 2)
    assert str(fresh.pk) not in alerts and str(slow.pk) not in alerts
    silent_for = int(alerts[str(stale.pk)].message.split("no heartbeat for ")[1].split(" s ")[0])
    assert 200 <= silent_for < 230, alerts[str(stale.pk)].message
    assert alerts[str(stale.pk)].message.endswith("(interval 60 s; stale after 3 missed)")

    Tenant.objects.filter(pk=stale.pk).update(last_heartbeat_at=timezone.now())
    run("heartbeats")
    assert open_alerts("heartbeat_stale") == {}


def test_disk_and_memory() -> None:
    full, busy, _fine = healthy_fleet(3)
    Tenant.objects.filter(pk=full.pk).update(disk_percent=91.0)
    Tenant.objects.filter(pk=busy.pk).update(memory_percent=95.0)

    run("disk")
    run("disk")
    run("memory")
    run("memory")

    assert list(open_alerts("disk_high")) == [str(full.pk)]
    assert list(open_alerts("memory_high")) == [str(busy.pk)]
    assert open_alerts("disk_high")[str(full.pk)].severity == MEDIUM
    assert open_alerts("disk_high")[str(full.pk)].count == 2
    assert "91%" in open_alerts("disk_high")[str(full.pk)].message

    Tenant.objects.filter(pk=full.pk).update(disk_percent=85.0)
    Tenant.objects.filter(pk=busy.pk).update(memory_percent=40.0)
    run("disk")
    assert open_alerts("disk_high") == {} and list(open_alerts("memory_high")) == [str(busy.pk)]
    run("memory")
    assert open_alerts("memory_high") == {}


def test_containers_crashed_or_unhealthy() -> None:
    crashed, unhealthy, _fine = healthy_fleet(3)
    containers_report(
        [crashed], [{"name": "ghost", "state": "exited", "health": None}, {"name": "n", "state": "running"}]
    )
    containers_report([unhealthy], [{"name": "odoo", "state": "running", "health": "unhealthy"}])

    run("containers")
    run("containers")

    alerts = open_alerts("containers_unhealthy")
    assert sorted(alerts) == sorted([str(crashed.pk), str(unhealthy.pk)])
    assert "ghost (exited)" in alerts[str(crashed.pk)].message
    assert "odoo (unhealthy)" in alerts[str(unhealthy.pk)].message
    assert {a.count for a in alerts.values()} == {2}

    containers_report([crashed, unhealthy], [{"name": "ghost", "state": "running", "health": "healthy"}])
    run("containers")
    assert open_alerts("containers_unhealthy") == {}


def test_tls_expiry() -> None:
    soon, expired, _fine = healthy_fleet(3)
    now = timezone.now()
    Tenant.objects.filter(pk=soon.pk).update(tls_expires_at=now + timedelta(days=10))
    Tenant.objects.filter(pk=expired.pk).update(tls_expires_at=now - timedelta(hours=1))

    run("tls")
    run("tls")

    alerts = open_alerts("tls_expiring")
    assert {k: a.severity for k, a in alerts.items()} == {str(soon.pk): MEDIUM, str(expired.pk): HARD}
    soon_at, expired_at = now + timedelta(days=10), now - timedelta(hours=1)
    assert alerts[str(soon.pk)].message in {
        f"TLS certificate expires in {days} days ({soon_at:%Y-%m-%d %H:%M} UTC)" for days in ("10.0", "9.9")
    }
    assert alerts[str(expired.pk)].message == f"TLS certificate expired at {expired_at:%Y-%m-%d %H:%M} UTC"

    Tenant.objects.filter(pk__in=[soon.pk, expired.pk]).update(tls_expires_at=now + timedelta(days=80))
    run("tls")
    assert open_alerts("tls_expiring") == {}


def report(tenant: Tenant, *, hours_ago: float, statuses: dict[str, str]) -> BackupReport:
    databases = {name: {"status": status} for name, status in statuses.items()}
    failed = sum(1 for s in statuses.values() if s == "failed")
    outcome = "FAILED" if failed == len(statuses) else "PARTIAL" if failed else "SUCCESS"
    return BackupReport.objects.create(
        tenant=tenant,
        report_id=uuid.uuid4(),
        last_run=ago(hours=hours_ago),
        duration_seconds=100,
        databases=databases,
        outcome=outcome,
    )


def test_backups() -> None:
    partial, failed, old, never, fine = healthy_fleet(5)
    report(partial, hours_ago=30, statuses={"ghost": "success"})
    report(partial, hours_ago=6, statuses={"ghost": "success", "nextcloud": "failed"})
    report(failed, hours_ago=6, statuses={"ghost": "failed", "nextcloud": "failed"})
    report(old, hours_ago=50, statuses={"ghost": "success"})
    report(fine, hours_ago=50, statuses={"ghost": "failed"})
    report(fine, hours_ago=5, statuses={"ghost": "success"})  # the latest one counts

    run("backups")
    run("backups")

    alerts = open_alerts("backup_failed")
    assert {k: a.severity for k, a in alerts.items()} == {
        str(partial.pk): MEDIUM,
        str(failed.pk): HARD,
        str(old.pk): HARD,
        str(never.pk): HARD,
    }
    assert alerts[str(partial.pk)].message == "1 of 2 database backups failed: nextcloud"
    assert alerts[str(failed.pk)].message == "every database backup failed: ghost, nextcloud"
    old_run = BackupReport.objects.get(tenant=old).last_run
    assert alerts[str(old.pk)].message == f"latest backup report is 50 h old ({old_run:%Y-%m-%d %H:%M} UTC)"
    assert {a.count for a in alerts.values()} == {2}

    for tenant in (partial, failed, old, never):
        report(tenant, hours_ago=1, statuses={"ghost": "success"})
    run("backups")
    assert open_alerts("backup_failed") == {}


def test_backup_and_container_messages_list_names_in_a_stable_order() -> None:
    """Database names in code point order (upper case first); the containers, which
    Postgres describes, in the agent's order, anything that is not an object skipped."""
    partial, crashed = healthy_fleet(2)
    report(partial, hours_ago=1, statuses={"zeta": "failed", "Zulu": "failed", "alpha": "failed", "beta": "success"})
    containers_report(
        [crashed],
        [
            {"name": "web", "state": "restarting"},
            {"name": "api", "state": "running"},
            "not a container",
            {"name": "Db", "state": "running", "health": "unhealthy"},
        ],
    )

    run("backups")
    run("containers")

    assert open_alerts("backup_failed")[str(partial.pk)].message == "3 of 4 database backups failed: Zulu, alpha, zeta"
    assert open_alerts("containers_unhealthy")[str(crashed.pk)].message == (
        "2 container(s) crashed or unhealthy: web (restarting), Db (unhealthy)"
    )


def test_orders_stuck_past_their_status_deadline() -> None:
    stuck = OrderFactory.create(domain="stuck.example", status=OrderStatus.DNS_PENDING)
    fresh = OrderFactory.create(domain="fresh.example", status=OrderStatus.DNS_PENDING)
    # waiting days for its customer's nameservers has a deadline of its own: not stuck
    waiting = OrderFactory.create(
        domain="waiting.example",
        status=OrderStatus.DNS_PENDING,
        waiting_reason="waiting for the customer's nameservers",
        waiting_since=ago(hours=30),
    )
    Order.objects.filter(pk__in=[stuck.pk, waiting.pk]).update(status_changed_at=ago(hours=2))

    with override_settings(ORDER_STATUS_DEADLINES={"DNS_PENDING": 1800}):
        summary = run("stuck_work")
        run("stuck_work")
        assert summary["reaper_ran"] is True
        alerts = open_alerts("order_stuck")
        assert list(alerts) == [str(stuck.pk)]
        assert (alerts[str(stuck.pk)].severity, alerts[str(stuck.pk)].count) == (MEDIUM, 2)
        assert alerts[str(stuck.pk)].message == f"order {stuck.pk} has been DNS_PENDING for 120 min (deadline 30 min)"
        assert str(fresh.pk) not in alerts

        Order.objects.filter(pk=stuck.pk).update(status=OrderStatus.DNS_READY, status_changed_at=timezone.now())
        run("stuck_work")
        assert open_alerts("order_stuck") == {}


def test_netcup_shortfall_says_how_many_of_which_plan() -> None:
    ServerFactory.create(
        provider=ServerProvider.NETCUP, region="us", tier="build", ipv4="192.0.2.1", status=ServerStatus.AVAILABLE
    )
    with override_settings(POOL_TARGETS={("us", "build"): 3}, POOL_NETCUP={("us", "build")}):
        run("pool_replenish")
        alert = open_alerts("pool_netcup_shortfall")["pool-us-build"]
        assert alert.severity == MEDIUM
        assert "order 2 x Netcup RS 2000 G12 (us)" in alert.message
        assert Server.objects.count() == 1  # nothing bought

        for i in range(2):
            ServerFactory.create(
                provider=ServerProvider.NETCUP,
                region="us",
                tier="build",
                ipv4=f"192.0.2.{10 + i}",
                status=ServerStatus.PREPARING,
            )
        run("pool_replenish")
        assert open_alerts("pool_netcup_shortfall") == {}


def test_history_prune_drops_only_partitions_past_retention() -> None:
    (tenant,) = healthy_fleet(1)
    heartbeat_partitions_ensure(first=ago(days=41), last=timezone.now())
    samples = [
        HeartbeatSample(
            tenant=tenant,
            received_at=ago(days=days, minutes=i),
            disk_percent=1,
            memory_percent=1,
            load=0,
            uptime_seconds=1,
        )
        for i, days in enumerate([40] * 25 + [0] * 5)
    ]
    HeartbeatSample.objects.bulk_create(samples)

    with override_settings(HEARTBEAT_RAW_RETENTION_HOURS=24):
        summary = run("prune_history")

    assert summary["dropped"] and not summary["skipped"]
    assert HeartbeatSample.objects.count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_check_never_runs_twice_at_once() -> None:
    # given another session holds the check's lock
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [lock_key("monitoring.check:disk")])
        # when the check is started
        result = check_execute(name="disk")
        # then it does nothing
        assert result.ran is False
        assert not CheckRun.objects.filter(name="disk").exists()
        # and once the other session lets go, it runs
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_key("monitoring.check:disk")])
        assert check_execute(name="disk").ran is True
    finally:
        other.close()


def test_a_failing_check_is_recorded_and_alerted(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitoring.services import checks

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setitem(checks.CHECKS, "tls", broken)
    with pytest.raises(RuntimeError):
        check_execute(name="tls")
    run_row = CheckRun.objects.get(name="tls")
    assert run_row.last_outcome == CheckOutcome.ERROR and "boom" in run_row.last_error
    assert open_alerts("check_failed")["tls"].severity == MEDIUM

    monkeypatch.undo()
    run("tls")
    assert open_alerts("check_failed") == {}
    assert CheckRun.objects.get(name="tls").last_outcome == CheckOutcome.OK
