"""MEDIUM and HARD notifications go out once per opening, through the real Celery
worker, by Django's email backend and to a local webhook receiver; a failing webhook
is retried with backoff, alone; a duplicated message sends nothing more; many
notifications are a few batch messages; a storm past ALERT_STORM_THRESHOLD is one
digest per channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from hub.alerts.models import Notification, NotificationChannel, NotificationStatus
from hub.alerts.notify import notifications_enqueue, notifications_requeue
from hub.alerts.services import Failing, alert_raise, alerts_sync
from hub.celery import app
from hub.models import Alert, AlertSeverity
from monitoring.models import CheckRun
from tests.conftest import wait_for
from tests.factories import healthy_fleet
from tests.hub.alerts.conftest import WebhookReceiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


MAIL_SEPARATOR = "-" * 79 + "\n"


def mails(mail_dir: Path) -> list[str]:
    """Every message mailed: Django's file backend appends the messages a process sends
    within one second to one file, each followed by a line of 79 dashes."""
    return [
        message
        for path in sorted(mail_dir.iterdir())
        for message in path.read_text().split(MAIL_SEPARATOR)
        if message.strip()
    ]


def all_sent(count: int) -> bool:
    return Notification.objects.filter(status=NotificationStatus.SENT).count() == count


def test_medium_and_hard_are_sent_once_through_the_worker(
    notifying: Any, mail_dir: Path, webhook: WebhookReceiver
) -> None:
    handled_before = notifying.log().count("succeeded in")
    # given a HARD and a MEDIUM alert opened (and a SOFT one, which only the admin shows)
    hard = alert_raise(
        subject_type="tenant",
        subject_id=11,
        kind="heartbeat_stale",
        severity=AlertSeverity.HARD,
        message="no heartbeat for 400 s",
    )
    alerts_sync(kind="disk_high", subject_type="tenant", failing={12: Failing(AlertSeverity.MEDIUM, "disk 91%")})
    alert_raise(subject_type="tenant", subject_id=13, kind="soft_thing", severity=AlertSeverity.SOFT, message="m")

    # when the worker has sent them
    wait_for(lambda: all_sent(3), timeout=30, message="3 notifications sent")

    # then staff got two emails and the chat one post, for the HARD alert
    sent = mails(mail_dir)
    assert len(sent) == 2
    assert any("[HARD] heartbeat_stale on tenant 11" in m and "no heartbeat for 400 s" in m for m in sent)
    assert any("[MEDIUM] disk_high on tenant 12" in m for m in sent)
    assert len(webhook.posts) == 1
    assert "[HARD] heartbeat_stale on tenant 11" in webhook.posts[0]["text"]

    # when the conditions hold (counted), and the messages are delivered again
    alert_raise(
        subject_type="tenant",
        subject_id=11,
        kind="heartbeat_stale",
        severity=AlertSeverity.HARD,
        message="no heartbeat for 430 s",
    )
    alerts_sync(kind="disk_high", subject_type="tenant", failing={12: Failing(AlertSeverity.MEDIUM, "disk 92%")})
    ids = list(Notification.objects.values_list("id", flat=True))
    for notification_id in ids:
        app.send_task("monitoring.send_notification", args=[notification_id])
    with override_settings(ALERT_NOTIFICATION_LOST_AFTER=0):
        assert notifications_requeue() == 0  # nothing PENDING to requeue
    wait_for(
        # two batch messages (the HARD alert's email and post, the MEDIUM email) and the copies
        lambda: notifying.log().count("succeeded in") >= handled_before + 2 + len(ids),
        timeout=30,
        message="the duplicate messages handled",
    )

    # then nothing more was sent
    assert len(mails(mail_dir)) == 2
    assert len(webhook.posts) == 1
    assert Notification.objects.filter(alert=hard).count() == 2


def test_a_failing_webhook_is_retried_and_still_sent_once(
    notifying: Any, mail_dir: Path, webhook: WebhookReceiver
) -> None:
    webhook.fail_next = 1
    alert_raise(
        subject_type="server",
        subject_id=5,
        kind="server_missing_at_provider",
        severity=AlertSeverity.HARD,
        message="gone at Hetzner",
    )

    hook = wait_for(
        lambda: Notification.objects.filter(
            channel=NotificationChannel.WEBHOOK, status=NotificationStatus.SENT
        ).first(),
        timeout=40,
        message="the webhook sent after a retry",
    )
    assert hook.attempts == 2 and hook.last_error == ""
    assert len(webhook.posts) == 1
    wait_for(lambda: len(mails(mail_dir)) == 1, timeout=10, message="the email")


def test_a_scheduled_check_runs_on_the_worker_and_its_alert_is_mailed_once(notifying: Any, mail_dir: Path) -> None:
    # given a tenant whose disk is full
    (tenant,) = healthy_fleet(1, disk_percent=97.0)

    # when beat's message for the check reaches the worker, twice
    app.send_task("monitoring.check_disk")
    wait_for(
        lambda: Alert.objects.filter(kind="disk_high", subject_id=str(tenant.pk)).exists(),
        timeout=30,
        message="the disk alert",
    )
    app.send_task("monitoring.check_disk")
    wait_for(lambda: Alert.objects.get(kind="disk_high").count == 2, timeout=30, message="the alert counted")

    # then one alert, one email
    wait_for(lambda: all_sent(1), timeout=30, message="the email sent")
    assert len(mails(mail_dir)) == 1
    assert CheckRun.objects.get(name="disk").runs == 2


def messages(worker: Any, task: str, event: str) -> int:
    """How many messages of this task the worker logged as `received` or `succeeded`."""
    return sum(1 for line in worker.log().splitlines() if f"Task {task}[" in line and event in line)


BATCH = "monitoring.send_notifications"
SINGLE = "monitoring.send_notification"


def test_a_storm_is_a_few_batch_messages_and_each_notification_is_sent_once(
    notifying: Any, mail_dir: Path, webhook: WebhookReceiver
) -> None:
    batches_before = messages(notifying, BATCH, "received")
    done_before = messages(notifying, BATCH, "succeeded")
    singles_before = messages(notifying, SINGLE, "received")
    # given 40 tenants that go HARD at once (80 notifications: email and webhook), 25 per message
    failing = {pk: Failing(AlertSeverity.HARD, f"no heartbeat from {pk}") for pk in range(1000, 1040)}
    with override_settings(ALERT_NOTIFICATION_BATCH_SIZE=25), transaction.atomic():
        result = alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=failing)
        # and every batch message published twice, back to back (a redelivery)
        transaction.on_commit(lambda: notifications_enqueue(notification_ids=result.notifications))

    # when the worker has handled them
    wait_for(lambda: all_sent(80), timeout=60, message="80 notifications sent")
    wait_for(
        lambda: messages(notifying, BATCH, "succeeded") >= done_before + 8,
        timeout=30,
        message="the 4 batches and their 4 copies handled",
    )

    # then the broker carried 4 messages (twice), none per notification
    assert messages(notifying, BATCH, "received") - batches_before == 8
    assert messages(notifying, SINGLE, "received") == singles_before
    # and each opening was mailed and posted exactly once
    sent = mails(mail_dir)
    assert len(sent) == 40
    assert len(webhook.posts) == 40
    for pk in failing:
        assert sum(f"heartbeat_stale on tenant {pk}\n" in m for m in sent) == 1
        assert sum(f"heartbeat_stale on tenant {pk}*" in p["text"] for p in webhook.posts) == 1
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}


def test_a_failed_delivery_in_a_batch_is_retried_alone(
    notifying: Any, mail_dir: Path, webhook: WebhookReceiver
) -> None:
    singles_before = messages(notifying, SINGLE, "received")
    # given the webhook refuses its first post, in a batch of 10 notifications
    webhook.fail_next = 1
    failing = {pk: Failing(AlertSeverity.HARD, f"no heartbeat from {pk}") for pk in range(2000, 2005)}
    alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=failing)

    # when the worker has sent them
    wait_for(lambda: all_sent(10), timeout=40, message="10 notifications sent")

    # then the failed one was retried on its own and the others were not sent again
    assert messages(notifying, SINGLE, "received") - singles_before == 1
    retried = Notification.objects.get(attempts=2)
    assert retried.channel == NotificationChannel.WEBHOOK and retried.last_error == ""
    assert Notification.objects.filter(attempts=1).count() == 9
    assert len(webhook.posts) == 5
    assert len(mails(mail_dir)) == 5


def test_a_storm_reaches_staff_as_one_email_and_one_post(
    notifying: Any, mail_dir: Path, webhook: WebhookReceiver
) -> None:
    # given 300 tenants that go HARD in one check run (the storm threshold is 50)
    failing = {pk: Failing(AlertSeverity.HARD, f"no heartbeat from {pk}") for pk in range(3000, 3300)}
    with override_settings(ALERT_STORM_THRESHOLD=50):
        alerts_sync(kind="heartbeat_stale", subject_type="tenant", failing=failing)

    # when the worker has sent what was written
    wait_for(lambda: all_sent(2), timeout=30, message="the two digests sent")

    # then staff got one email and the chat one post, each about all 300
    sent = mails(mail_dir)
    assert len(sent) == 1 and len(webhook.posts) == 1
    assert "[HARD] heartbeat_stale on 300 tenants at once" in sent[0]
    assert "tenant 3000: no heartbeat from 3000" in sent[0] and "... and 280 more" in sent[0]
    assert "*[HARD] heartbeat_stale on 300 tenants at once*" in webhook.posts[0]["text"]
    assert Alert.objects.filter(kind="heartbeat_stale", status="OPEN").count() == 300
