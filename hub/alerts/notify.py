"""Alert notifications: which channels a severity goes to, the rows written with an
opening, and sending one row exactly once (claimed under a row lock, marked SENT in
the same transaction). Rows are enqueued in batches: one Celery message per
ALERT_NOTIFICATION_BATCH_SIZE notifications, not one per notification. A storm (more
than ALERT_STORM_THRESHOLD openings of one kind and severity at once) is announced by
one digest per channel, not by one message per alert."""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections import defaultdict
from datetime import datetime, timedelta
from operator import attrgetter
from typing import NamedTuple

import requests
from celery import current_app
from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from hub.alerts.models import Alert, AlertSeverity, Notification, NotificationChannel, NotificationStatus

logger = logging.getLogger(__name__)

SEND_BATCH_TASK = "monitoring.send_notifications"
CHANNELS_BY_SEVERITY: dict[str, tuple[str, ...]] = {
    AlertSeverity.SOFT: (),
    AlertSeverity.MEDIUM: (NotificationChannel.EMAIL,),
    AlertSeverity.HARD: (NotificationChannel.EMAIL, NotificationChannel.WEBHOOK),
}


class NotificationDeliveryError(Exception):
    """The mail server or the webhook refused or did not answer; worth retrying."""


class Opening(NamedTuple):
    """An alert that was just opened (or escalated): what the notifications say. A named
    tuple: an alert storm makes 100,000 of them, in a quarter of a frozen dataclass's
    time."""

    alert_id: int
    subject_type: str
    subject_id: str
    kind: str
    severity: str
    message: str
    first_seen_at: datetime

    @classmethod
    def of(cls, alert: Alert) -> Opening:
        return cls(
            alert_id=alert.pk,
            subject_type=alert.subject_type,
            subject_id=alert.subject_id,
            kind=alert.kind,
            severity=alert.severity,
            message=alert.message,
            first_seen_at=alert.first_seen_at,
        )


def channels_for(severity: str) -> tuple[str, ...]:
    """The channels a severity is routed to, minus those not configured."""
    configured: dict[str, bool] = {
        NotificationChannel.EMAIL: bool(settings.STAFF_EMAILS),
        NotificationChannel.WEBHOOK: bool(settings.ALERT_WEBHOOK_URL),
    }
    return tuple(channel for channel in CHANNELS_BY_SEVERITY.get(severity, ()) if configured[channel])


def dedup_key(opening: Opening, channel: str) -> str:
    return f"alert:{opening.alert_id}:{int(opening.first_seen_at.timestamp() * 1_000_000)}:{channel}"


def _texts(opening: Opening) -> tuple[str, str]:
    subject = f"[{opening.severity}] {opening.kind} on {opening.subject_type} {opening.subject_id}"
    body = (
        f"{opening.message}\n\n"
        f"first seen {opening.first_seen_at:%Y-%m-%d %H:%M:%S} UTC\n"
        f"{settings.HUB_PUBLIC_URL}/admin/hub/alert/{opening.alert_id}/change/"
    )
    return subject[:300], body


# How many of a storm's alerts its digest names; the admin link lists them all.
STORM_DIGEST_LISTED = 20


def _storm_keys(group: list[Opening], channels: tuple[str, ...]) -> list[str]:
    """The same alerts give the same keys (an alert row is one opening: a new opening
    is a new row), so a digest is written once per channel however often it is
    computed, and an escalated storm adds only the channels it did not have."""
    digest = hashlib.sha256(",".join(map(str, sorted(o.alert_id for o in group))).encode()).hexdigest()[:32]
    return [f"storm:{group[0].subject_type}:{group[0].kind}:{digest}:{channel}"[:200] for channel in channels]


def _storm_texts(group: list[Opening]) -> tuple[str, str]:
    first = group[0]
    # The first few by id, without sorting a storm of 100,000.
    listed = heapq.nsmallest(STORM_DIGEST_LISTED, group, key=attrgetter("alert_id"))
    lines = [f"  {o.subject_type} {o.subject_id}: {o.message}" for o in listed]
    if len(group) > len(listed):
        lines.append(f"  ... and {len(group) - len(listed):,} more")
    subject = f"[{first.severity}] {first.kind} on {len(group):,} {first.subject_type}s at once"
    body = (
        f"{len(group):,} {first.subject_type} alerts of kind {first.kind} opened or escalated to "
        f"{first.severity} in one check run. The first {len(listed)}:\n"
        + "\n".join(lines)
        + f"\n\nfirst seen {min(o.first_seen_at for o in group):%Y-%m-%d %H:%M:%S} UTC\n"
        f"{settings.HUB_PUBLIC_URL}/admin/hub/alert/?kind={first.kind}&status__exact=OPEN"
        f"&subject_type={first.subject_type}"
    )
    return subject[:300], body


def _rows(openings: list[Opening]) -> list[tuple[int, str, str, str, str, int]]:
    """(alert, channel, dedup key, subject, body, openings covered) of each row to write:
    one per opening and channel, or one digest per channel for a storm."""
    groups: dict[tuple[str, str, str], list[Opening]] = defaultdict(list)
    for opening in openings:
        groups[(opening.subject_type, opening.kind, opening.severity)].append(opening)
    threshold = settings.ALERT_STORM_THRESHOLD
    rows = []
    for (_, _, severity), group in groups.items():
        channels = channels_for(severity)
        if threshold and len(group) > threshold:
            anchor = min(o.alert_id for o in group)
            texts = _storm_texts(group)
            keys = _storm_keys(group, channels)
            rows += [(anchor, channel, key, *texts, len(group)) for channel, key in zip(channels, keys, strict=True)]
        else:
            rows += [(o.alert_id, channel, dedup_key(o, channel), *_texts(o), 1) for o in group for channel in channels]
    return rows


def notifications_create(openings: list[Opening]) -> list[int]:
    """Write the notification rows of these openings (one per channel, once per
    opening: the dedup key is unique; a storm's openings share a digest) and enqueue
    their sending on commit. Call in the transaction that opens the alerts. One query
    whatever the number of openings."""
    rows = _rows(openings)
    if not rows:
        return []
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table}
                (alert_id, channel, dedup_key, subject, body, covers, status, attempts, last_error, created_at)
            SELECT s.alert_id, s.channel, s.dedup_key, s.subject, s.body, s.covers, 'PENDING', 0, '', %s
              FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[])
                   AS s(alert_id, channel, dedup_key, subject, body, covers)
            ON CONFLICT (dedup_key) DO NOTHING
            RETURNING id
            """,  # noqa: S608 - the table name is ours, the values are parameters
            [timezone.now(), *([row[i] for row in rows] for i in range(6))],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        transaction.on_commit(lambda: notifications_enqueue(notification_ids=ids))
    return ids


def notifications_enqueue(*, notification_ids: list[int]) -> int:
    """One `monitoring.send_notifications` message per ALERT_NOTIFICATION_BATCH_SIZE
    ids, over one broker connection. Returns the number of messages."""
    # The task by name (its module imports the checks, which import the alerts), on the
    # current app (hub.celery's), as hub.queue sends.
    size = max(1, settings.ALERT_NOTIFICATION_BATCH_SIZE)
    batches = [notification_ids[i : i + size] for i in range(0, len(notification_ids), size)]
    if not batches:
        return 0
    with current_app.producer_or_acquire() as producer:
        for batch in batches:
            current_app.send_task(SEND_BATCH_TASK, args=[batch], producer=producer)
    return len(batches)


def _deliver(notification: Notification) -> None:
    if notification.channel == NotificationChannel.EMAIL:
        try:
            send_mail(notification.subject, notification.body, settings.DEFAULT_FROM_EMAIL, list(settings.STAFF_EMAILS))
        except OSError as exc:  # smtplib's errors are OSErrors
            raise NotificationDeliveryError(f"email: {exc}") from exc
        return
    url = settings.ALERT_WEBHOOK_URL
    if not url:
        raise NotificationDeliveryError("ALERT_WEBHOOK_URL is not set")
    try:
        response = requests.post(
            url, json={"text": f"*{notification.subject}*\n{notification.body}"}, timeout=settings.ALERT_WEBHOOK_TIMEOUT
        )
    except requests.RequestException as exc:
        raise NotificationDeliveryError(f"webhook: {type(exc).__name__}") from exc
    if response.status_code >= 300:
        raise NotificationDeliveryError(f"webhook answered {response.status_code}")


def notification_send(*, notification_id: int) -> bool:
    """Send it if nobody has: the row is claimed with SKIP LOCKED (a duplicate delivery
    of the message skips it, a sent one is not PENDING) and marked SENT in the same
    transaction. True when this call sent it."""
    try:
        with transaction.atomic():
            notification = (
                Notification.objects.select_for_update(skip_locked=True)
                .filter(pk=notification_id, status=NotificationStatus.PENDING)
                .first()
            )
            if notification is None:
                return False
            _deliver(notification)
            now = timezone.now()
            notification.status = NotificationStatus.SENT
            notification.sent_at = now
            notification.last_attempt_at = now
            notification.attempts += 1
            notification.last_error = ""
            notification.save(update_fields=["status", "sent_at", "last_attempt_at", "attempts", "last_error"])
    except NotificationDeliveryError as exc:
        _record_attempt(notification_id=notification_id, error=str(exc))
        raise
    logger.info("notification %s sent (%s)", notification_id, notification.channel)
    return True


def notifications_send_batch(*, notification_ids: list[int]) -> dict[int, str]:
    """Send each of them as `notification_send` does, each claimed and marked SENT in a
    transaction of its own: a batch delivered twice (or two copies at once) sends
    nothing twice, and a delivery that fails neither undoes nor holds up the others.
    Returns the ids whose delivery failed, with the error, for a retry one by one."""
    failed: dict[int, str] = {}
    for notification_id in notification_ids:
        try:
            notification_send(notification_id=notification_id)
        except NotificationDeliveryError as exc:
            failed[notification_id] = str(exc)
    return failed


def _record_attempt(*, notification_id: int, error: str) -> None:
    Notification.objects.filter(pk=notification_id, status=NotificationStatus.PENDING).update(
        attempts=F("attempts") + 1, last_attempt_at=timezone.now(), last_error=error[:2000]
    )


def notification_give_up(*, notification_id: int, error: str) -> int:
    """Out of retries: FAILED, visible in the admin; the alert itself stays open."""
    logger.error("notification %s failed for good: %s", notification_id, error)
    return Notification.objects.filter(pk=notification_id, status=NotificationStatus.PENDING).update(
        status=NotificationStatus.FAILED, last_error=error[:2000]
    )


def notifications_requeue(*, now: datetime | None = None) -> int:
    """Enqueue again the PENDING notifications whose message was lost (broker flushed,
    worker gone): not tried, or last tried, longer ago than ALERT_NOTIFICATION_LOST_AFTER."""
    now = now or timezone.now()
    lost_before = now - timedelta(seconds=settings.ALERT_NOTIFICATION_LOST_AFTER)
    ids = list(
        Notification.objects.filter(status=NotificationStatus.PENDING)
        .filter(Q(last_attempt_at__isnull=True, created_at__lt=lost_before) | Q(last_attempt_at__lt=lost_before))
        .values_list("id", flat=True)[:1000]
    )
    if ids:
        notifications_enqueue(notification_ids=ids)
    return len(ids)
