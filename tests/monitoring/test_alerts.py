"""Alerts: one open per subject and kind, counted while the condition holds, resolved
when it clears; notification rows once per opening and channel, routed by severity."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from hub.alerts import Failing, alert_acknowledge, alert_raise, alert_resolve, alerts_sync
from hub.models import Alert, AlertSeverity, AlertStatus, AuditEvent
from monitoring import notifications
from monitoring.models import Notification, NotificationChannel

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("webhook_configured")]

HARD, MEDIUM, SOFT = AlertSeverity.HARD, AlertSeverity.MEDIUM, AlertSeverity.SOFT


@pytest.fixture
def webhook_configured():  # type: ignore[no-untyped-def]
    with override_settings(ALERT_WEBHOOK_URL="http://127.0.0.1:9/hook", STAFF_EMAILS=["ops@example.com"]):
        yield


def channels(alert: Alert) -> list[str]:
    return sorted(alert.notifications.values_list("channel", flat=True))


def test_raise_opens_once_and_counts_while_the_condition_holds() -> None:
    first = alert_raise(subject_type="tenant", subject_id=7, kind="disk_high", severity=MEDIUM, message="91%")
    again = alert_raise(subject_type="tenant", subject_id=7, kind="disk_high", severity=MEDIUM, message="92%")

    assert again.pk == first.pk
    again.refresh_from_db()
    assert (again.count, again.message, again.status) == (2, "92%", AlertStatus.OPEN)
    assert channels(again) == [NotificationChannel.EMAIL]
    assert AuditEvent.objects.filter(action="alert.open", object_id=str(first.pk)).count() == 1


def test_routing_by_severity() -> None:
    soft = alert_raise(subject_type="tenant", subject_id=1, kind="a", severity=SOFT, message="m")
    medium = alert_raise(subject_type="tenant", subject_id=1, kind="b", severity=MEDIUM, message="m")
    hard = alert_raise(subject_type="tenant", subject_id=1, kind="c", severity=HARD, message="m")

    assert channels(soft) == []
    assert channels(medium) == [NotificationChannel.EMAIL]
    assert channels(hard) == [NotificationChannel.EMAIL, NotificationChannel.WEBHOOK]


def test_escalation_adds_only_the_missing_channel() -> None:
    alert = alert_raise(subject_type="tenant", subject_id=1, kind="backup_failed", severity=MEDIUM, message="m")
    alert_raise(subject_type="tenant", subject_id=1, kind="backup_failed", severity=HARD, message="m")
    alert_raise(subject_type="tenant", subject_id=1, kind="backup_failed", severity=MEDIUM, message="m")
    alert_raise(subject_type="tenant", subject_id=1, kind="backup_failed", severity=HARD, message="m")

    assert channels(alert) == [NotificationChannel.EMAIL, NotificationChannel.WEBHOOK]


def test_a_new_opening_after_resolution_is_announced_again() -> None:
    first = alert_raise(subject_type="server", subject_id=3, kind="x", severity=MEDIUM, message="m")
    assert alert_resolve(subject_type="server", subject_id=3, kind="x") == 1
    second = alert_raise(subject_type="server", subject_id=3, kind="x", severity=MEDIUM, message="m")

    assert second.pk != first.pk
    assert Notification.objects.count() == 2
    assert Alert.objects.get(pk=first.pk).status == AlertStatus.RESOLVED


def test_sync_opens_counts_and_resolves() -> None:
    # given two failing subjects
    result = alerts_sync(
        kind="tls_expiring", subject_type="tenant", failing={1: Failing(MEDIUM, "10 d"), 2: Failing(HARD, "expired")}
    )
    assert sorted(result.opened) == ["1", "2"]
    assert Notification.objects.count() == 3  # email for both, webhook for the HARD one

    # when one still fails, one clears and one is new
    result = alerts_sync(
        kind="tls_expiring", subject_type="tenant", failing={1: Failing(MEDIUM, "9 d"), 3: Failing(MEDIUM, "5 d")}
    )

    # then
    assert (result.opened, result.counted, result.resolved) == (["3"], ["1"], ["2"])
    open_alerts = {a.subject_id: a for a in Alert.objects.filter(kind="tls_expiring", status=AlertStatus.OPEN)}
    assert sorted(open_alerts) == ["1", "3"]
    assert (open_alerts["1"].count, open_alerts["1"].message) == (2, "9 d")
    assert Notification.objects.count() == 4
    assert Alert.objects.get(subject_id="2", kind="tls_expiring").resolved_at is not None


def test_sync_escalation_notifies_the_new_channel_once() -> None:
    alerts_sync(kind="backup_failed", subject_type="tenant", failing={5: Failing(MEDIUM, "1 of 3 failed")})
    alerts_sync(kind="backup_failed", subject_type="tenant", failing={5: Failing(HARD, "3 of 3 failed")})
    alerts_sync(kind="backup_failed", subject_type="tenant", failing={5: Failing(HARD, "3 of 3 failed")})

    alert = Alert.objects.get(kind="backup_failed", status=AlertStatus.OPEN)
    assert (alert.severity, alert.count) == (HARD, 3)
    assert channels(alert) == [NotificationChannel.EMAIL, NotificationChannel.WEBHOOK]


def test_sync_audits_each_opening_and_each_resolution() -> None:
    # given two subjects failing, then one of them healed
    alerts_sync(
        kind="disk_high",
        subject_type="tenant",
        failing={1: Failing(MEDIUM, "disk 91%"), 2: Failing(HARD, "x" * 2100)},
    )
    one, two = Alert.objects.order_by("subject_id")
    result = alerts_sync(kind="disk_high", subject_type="tenant", failing={2: Failing(HARD, "disk 99%")})

    # then each alert has its own opening row, and the healed one its resolution row
    assert result.resolved == ["1"]
    opened = {e.object_id: e for e in AuditEvent.objects.filter(action="alert.open")}
    assert set(opened) == {str(one.pk), str(two.pk)}
    assert (opened[str(one.pk)].actor, opened[str(one.pk)].new, opened[str(one.pk)].reason) == (
        "monitoring",
        MEDIUM,
        "disk 91%",
    )
    assert (opened[str(two.pk)].new, opened[str(two.pk)].reason) == (HARD, "x" * 2000)
    (resolved,) = AuditEvent.objects.filter(action="alert.resolve")
    assert (resolved.actor, resolved.object_type, resolved.object_id, resolved.old, resolved.new) == (
        "monitoring",
        "alert",
        str(one.pk),
        None,
        AlertStatus.RESOLVED,
    )
    assert Alert.objects.get(pk=one.pk).status == AlertStatus.RESOLVED


def test_sync_leaves_other_kinds_alone() -> None:
    alert_raise(subject_type="tenant", subject_id=1, kind="disk_high", severity=MEDIUM, message="m")
    alerts_sync(kind="memory_high", subject_type="tenant", failing={})
    assert Alert.objects.get(kind="disk_high").status == AlertStatus.OPEN


def test_acknowledge_records_who_and_keeps_the_alert_open() -> None:
    alert = alert_raise(subject_type="tenant", subject_id=1, kind="disk_high", severity=MEDIUM, message="m")
    assert alert_acknowledge(alert_ids=[alert.pk], actor="alice") == 1
    assert alert_acknowledge(alert_ids=[alert.pk], actor="bob") == 0
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.status) == ("alice", AlertStatus.OPEN)
    assert AuditEvent.objects.filter(action="alert.acknowledge", actor="alice").count() == 1


def test_admin_lists_filters_and_acknowledges(admin_client) -> None:  # type: ignore[no-untyped-def]
    alert = alert_raise(subject_type="tenant", subject_id=1, kind="disk_high", severity=MEDIUM, message="disk 91%")
    url = "/admin/hub/alert/"

    page = admin_client.get(url, {"severity__exact": "MEDIUM", "status__exact": "OPEN", "subject_type": "tenant"})
    assert page.status_code == 200
    assert b"disk 91%" in page.content

    response = admin_client.post(url, {"action": "acknowledge", "_selected_action": [alert.pk]})
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == "admin"


def test_lost_notification_messages_are_requeued_but_not_those_being_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    enqueued: list[int] = []
    monkeypatch.setattr(
        notifications, "notifications_enqueue", lambda *, notification_ids: enqueued.extend(notification_ids)
    )
    alert = alert_raise(subject_type="tenant", subject_id=1, kind="c", severity=HARD, message="m")
    email, hook = alert.notifications.order_by("channel")
    old = timezone.now() - timedelta(hours=1)
    Notification.objects.filter(pk=email.pk).update(created_at=old)  # never tried: its message was lost
    Notification.objects.filter(pk=hook.pk).update(created_at=old, last_attempt_at=timezone.now())  # in backoff

    assert notifications.notifications_requeue() == 1
    assert enqueued == [email.pk]
