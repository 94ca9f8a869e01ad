"""Billing's emails to customers and staff. Each occasion has a dedup key, so however
often an event is handled or a check runs, a notice is written and sent once."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

from billing.models import Notice, NoticeAudience
from hub.queue import enqueue_on_commit

SEND_NOTICE = "billing.send_notice"

logger = logging.getLogger(__name__)


def notice_queue(
    *, kind: str, audience: str, recipients: list[str], subject: str, body: str, dedup_key: str
) -> Notice | None:
    """Write the notice and send it after commit; None when it was already written
    (or there is nobody to tell)."""
    recipients = [r for r in recipients if r]
    if not recipients:
        logger.warning("notice %s (%s) has no recipient", kind, dedup_key)
        return None
    try:
        with transaction.atomic():
            notice = Notice.objects.create(
                kind=kind,
                audience=audience,
                recipient=",".join(recipients),
                subject=subject[:200],
                body=body,
                dedup_key=dedup_key[:300],
            )
    except IntegrityError:
        return None
    enqueue_on_commit(SEND_NOTICE, notice.pk)
    return notice


def staff_recipients() -> list[str]:
    return list(settings.BILLING_STAFF_EMAILS or settings.STAFF_EMAILS)


def notice_to_staff(*, kind: str, subject: str, body: str, dedup_key: str) -> Notice | None:
    return notice_queue(
        kind=kind,
        audience=NoticeAudience.STAFF,
        recipients=staff_recipients(),
        subject=f"[hub billing] {subject}",
        body=body,
        dedup_key=f"staff:{dedup_key}",
    )


def notice_to_customer(*, kind: str, email: str, subject: str, body: str, dedup_key: str) -> Notice | None:
    return notice_queue(
        kind=kind,
        audience=NoticeAudience.CUSTOMER,
        recipients=[email],
        subject=subject,
        body=body,
        dedup_key=f"customer:{dedup_key}",
    )


def notice_send(*, notice_id: int) -> bool:
    """Send one notice unless it was sent; the row is locked while sending so two
    deliveries of the task do not both send it."""
    with transaction.atomic():
        notice = Notice.objects.select_for_update(skip_locked=True).filter(pk=notice_id).first()
        if notice is None or not notice.can_send():
            return False
        try:
            send_mail(
                notice.subject,
                notice.body,
                settings.DEFAULT_FROM_EMAIL,
                notice.recipient.split(","),
                fail_silently=False,
            )
        except Exception as exc:  # noqa: BLE001 - any mail failure is recorded and retried
            notice.record_failed(f"{type(exc).__name__}: {exc}")
            logger.warning("notice %s failed: %s", notice.pk, notice.error)
            return False
        notice.record_sent()
        return True
