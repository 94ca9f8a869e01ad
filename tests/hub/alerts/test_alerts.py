"""Alerts: one open per subject and kind, counted while the condition holds, resolved
when it clears; notification rows once per opening and channel, routed by severity."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from hub.alerts import notify as notifications
from hub.alerts.models import Notification, NotificationChannel
from hub.alerts.services import Failing, alert_acknowledge, alert_raise, alert_resolve, alerts_sync
from hub.models import Alert, AlertSeverity, AlertStatus, AuditEvent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("webhook_configured")]

HARD, MEDIUM, SOFT = AlertSeverity.HARD, AlertSeverity.MEDIUM, AlertSeverity.SOFT


@pytest.fixture
def webhook_configured():
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


def test_resolve_closes_and_audits_only_that_subjects_alert_of_that_kind() -> None:
    # given open alerts of one kind on two subjects, and of another kind on the first
    target = alert_raise(subject_type="server", subject_id=4, kind="x", severity=MEDIUM, message="m")
    other_subject = alert_raise(subject_type="server", subject_id=40, kind="x", severity=MEDIUM, message="m")
    other_kind = alert_raise(subject_type="server", subject_id=4, kind="y", severity=MEDIUM, message="m")

    # when one is resolved, twice (the condition seen cleared again)
    assert alert_resolve(subject_type="server", subject_id=4, kind="x") == 1
    assert alert_resolve(subject_type="server", subject_id=4, kind="x") == 0

    # then it alone is resolved, with its time, and audited once
    statuses = dict(Alert.objects.values_list("id", "status"))
    assert statuses == {
        target.pk: AlertStatus.RESOLVED,
        other_subject.pk: AlertStatus.OPEN,
        other_kind.pk: AlertStatus.OPEN,
    }
    assert Alert.objects.get(pk=target.pk).resolved_at is not None
    (audited,) = AuditEvent.objects.filter(action="alert.resolve")
    assert (audited.object_id, audited.new, audited.actor) == (str(target.pk), AlertStatus.RESOLVED, "monitoring")


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


def test_sync_finds_the_one_escalation_among_steady_and_easing_alerts() -> None:
    # given alerts of every severity, counted once as they are
    before = {1: Failing(SOFT, "s"), 2: Failing(MEDIUM, "m"), 3: Failing(HARD, "h"), 4: Failing(HARD, "h")}
    alerts_sync(kind="tls_expiring", subject_type="tenant", failing=before)
    alerts_sync(kind="tls_expiring", subject_type="tenant", failing=before)
    assert Notification.objects.count() == 5  # MEDIUM: email; each HARD: email and webhook

    # when one HARD eases to MEDIUM and nothing rises, then nobody is told anything new
    eased = {**before, 4: Failing(MEDIUM, "m")}
    alerts_sync(kind="tls_expiring", subject_type="tenant", failing=eased)
    assert Notification.objects.count() == 5

    # when the SOFT one turns MEDIUM while the others hold or ease
    result = alerts_sync(
        kind="tls_expiring",
        subject_type="tenant",
        failing={**eased, 1: Failing(MEDIUM, "m"), 3: Failing(MEDIUM, "m")},
    )

    # then only it is announced, on the email it did not have, and all four are counted
    assert sorted(result.counted) == ["1", "2", "3", "4"]
    (rose,) = Notification.objects.filter(alert__subject_id="1")
    assert rose.channel == NotificationChannel.EMAIL
    assert Notification.objects.count() == 6
    counts = dict(Alert.objects.filter(kind="tls_expiring").values_list("subject_id", "count"))
    assert counts == {"1": 4, "2": 4, "3": 4, "4": 4}


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


def test_sync_with_nothing_failing_resolves_only_that_kind_and_subject_type() -> None:
    # given open alerts of two kinds on tenants, and of the same kind on a server
    alerts_sync(kind="disk_high", subject_type="tenant", failing={1: Failing(MEDIUM, "d"), 2: Failing(HARD, "d")})
    alerts_sync(kind="memory_high", subject_type="tenant", failing={1: Failing(MEDIUM, "m")})
    alerts_sync(kind="disk_high", subject_type="server", failing={1: Failing(MEDIUM, "d")})
    disk = {a.subject_id: a.pk for a in Alert.objects.filter(kind="disk_high", subject_type="tenant")}

    # when the tenants' disk check finds nothing failing
    result = alerts_sync(kind="disk_high", subject_type="tenant", failing={})

    # then those two alerts resolve, each audited, and the others stay open
    assert sorted(result.resolved) == ["1", "2"]
    still_open = sorted(Alert.objects.filter(status=AlertStatus.OPEN).values_list("subject_type", "kind"))
    assert still_open == [("server", "disk_high"), ("tenant", "memory_high")]
    resolved = AuditEvent.objects.filter(action="alert.resolve")
    assert sorted(resolved.values_list("object_id", flat=True)) == sorted(str(pk) for pk in disk.values())
    assert alerts_sync(kind="disk_high", subject_type="tenant", failing={}).resolved == []


def test_sync_keeps_messages_exactly_as_the_check_wrote_them() -> None:
    # given messages with what a JSON or SQL text must escape
    awkward = {
        1: Failing(MEDIUM, "quote ' double \" backslash \\ percent %s"),
        2: Failing(MEDIUM, "new\nline\ttab, ünïcödé ✓, emoji 🚨"),
        3: Failing(HARD, '{"looks": ["like json"]}'),
    }

    # when they are opened, then counted with new texts
    alerts_sync(kind="odd", subject_type="tenant", failing=awkward)
    opened = {a.subject_id: (a.severity, a.message) for a in Alert.objects.filter(kind="odd")}
    alerts_sync(
        kind="odd", subject_type="tenant", failing={k: Failing(HARD, v.message + "!") for k, v in awkward.items()}
    )

    # then the rows hold them byte for byte
    assert opened == {str(k): (v.severity, v.message) for k, v in awkward.items()}
    counted = {a.subject_id: (a.severity, a.message, a.count) for a in Alert.objects.filter(kind="odd")}
    assert counted == {str(k): (HARD, v.message + "!", 2) for k, v in awkward.items()}


def storm(count: int, severity: str = HARD, start: int = 100) -> dict[int, Failing]:
    return {pk: Failing(severity, f"no heartbeat from {pk}") for pk in range(start, start + count)}


@override_settings(ALERT_STORM_THRESHOLD=50)
def test_a_storm_is_announced_by_one_digest_per_channel() -> None:
    # when 60 tenants go HARD in one run (more than the threshold of 50)
    result = alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=storm(60))

    # then every alert is open, and one email and one webhook message announce them all
    assert len(result.opened) == 60
    digests = list(Notification.objects.order_by("channel"))
    assert [(n.channel, n.covers) for n in digests] == [
        (NotificationChannel.EMAIL, 60),
        (NotificationChannel.WEBHOOK, 60),
    ]
    email = digests[0]
    first_alert = Alert.objects.filter(kind="heartbeat_stale").order_by("id").first()
    assert first_alert is not None
    assert email.alert_id == first_alert.pk
    assert email.subject == "[HARD] heartbeat_stale on 60 tenants at once"
    listed = [line for line in email.body.splitlines() if line.startswith("  tenant ")]
    assert listed == [f"  tenant {pk}: no heartbeat from {pk}" for pk in range(100, 120)]
    assert "  ... and 40 more" in email.body
    assert "/admin/hub/alert/?kind=heartbeat_stale&status__exact=OPEN&subject_type=tenant" in email.body

    # when the next run counts them, then nothing more is written
    alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=storm(60))
    assert Notification.objects.count() == 2


@override_settings(ALERT_STORM_THRESHOLD=50)
def test_at_the_threshold_each_alert_is_announced_on_its_own() -> None:
    alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=storm(50))

    assert Notification.objects.count() == 100
    assert set(Notification.objects.values_list("covers", flat=True)) == {1}


@override_settings(ALERT_STORM_THRESHOLD=0)
def test_a_threshold_of_zero_never_digests() -> None:
    alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=storm(120))

    assert Notification.objects.filter(covers=1).count() == 240
    assert not Notification.objects.filter(covers__gt=1).exists()


@override_settings(ALERT_STORM_THRESHOLD=50)
def test_an_escalated_storm_adds_only_the_missing_channel() -> None:
    # given a MEDIUM storm, announced by an email digest
    alerts_sync(kind="backup_failed", subject_type="tenant", failing=storm(60, MEDIUM))
    assert list(Notification.objects.values_list("channel", flat=True)) == [NotificationChannel.EMAIL]

    # when the same alerts all turn HARD
    alerts_sync(kind="backup_failed", subject_type="tenant", failing=storm(60, HARD))

    # then only the webhook digest is added: the email already told staff about them
    assert sorted(Notification.objects.values_list("channel", "covers")) == [
        (NotificationChannel.EMAIL, 60),
        (NotificationChannel.WEBHOOK, 60),
    ]


@override_settings(ALERT_STORM_THRESHOLD=50)
def test_a_storm_digest_is_per_kind_and_severity() -> None:
    # given one run with 60 HARD and 3 MEDIUM openings of one kind
    failing = {**storm(60, HARD), **storm(3, MEDIUM, start=500)}
    alerts_sync(kind="tls_expiring", subject_type="tenant", failing=failing)

    # then the HARD ones share a digest per channel and the MEDIUM ones get an email each
    assert sorted(Notification.objects.values_list("channel", "covers")) == [
        *[(NotificationChannel.EMAIL, 1)] * 3,
        (NotificationChannel.EMAIL, 60),
        (NotificationChannel.WEBHOOK, 60),
    ]


@override_settings(ALERT_STORM_THRESHOLD=50)
def test_the_digest_link_lists_the_storm_in_the_admin(admin_client) -> None:
    alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=storm(60))
    alerts_sync(kind="disk_high", subject_type="tenant", failing=storm(2, MEDIUM, start=900))
    digest = Notification.objects.get(channel=NotificationChannel.EMAIL, covers=60)
    link = digest.body.rsplit("\n", 1)[-1].split("/admin/", 1)[1]

    page = admin_client.get(f"/admin/{link}")

    assert page.status_code == 200
    # the 60 open heartbeat alerts of the storm, not the disk alerts
    assert page.context["cl"].result_count == 60


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


def test_admin_lists_filters_and_acknowledges(admin_client) -> None:
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


def test_the_alert_table_leaves_room_for_its_rows_next_versions() -> None:
    # Every run of a check rewrites each open alert; half of each page free keeps those
    # rewrites beside the old version (HOT), out of the indexes (hub/migrations/0009).
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [Alert._meta.db_table])
        (options,) = cursor.fetchone()
    assert options == ["fillfactor=50"]
