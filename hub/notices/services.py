"""Write a customer notice once (by its dedup key) and send it after commit."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

from hub.notices.models import CustomerNotice
from hub.queue import enqueue_on_commit

SEND_CUSTOMER_NOTICE = "hub.send_customer_notice"

logger = logging.getLogger(__name__)


def customer_notice_queue(
    *, kind: str, subject_type: str, subject_id: object, email: str, subject: str, body: str, dedup_key: str
) -> CustomerNotice | None:
    """The notice for this occasion, written and queued; None when it was written
    before (the occasion was already told) or there is no address to tell."""
    if not email:
        logger.warning("customer notice %s (%s): no address", kind, dedup_key)
        return None
    try:
        with transaction.atomic():
            notice = CustomerNotice.objects.create(
                kind=kind,
                subject_type=subject_type,
                subject_id=str(subject_id),
                recipient=email,
                subject=subject[:200],
                body=body,
                dedup_key=dedup_key[:300],
            )
    except IntegrityError:
        return None
    enqueue_on_commit(SEND_CUSTOMER_NOTICE, notice.pk)
    return notice


def customer_notice_send(*, notice_id: int) -> bool:
    """Send one notice unless it was sent; the row stays locked while sending, so two
    deliveries of the task do not both send it."""
    with transaction.atomic():
        notice = CustomerNotice.objects.select_for_update(skip_locked=True).filter(pk=notice_id).first()
        if notice is None or not notice.can_send():
            return False
        try:
            send_mail(notice.subject, notice.body, settings.DEFAULT_FROM_EMAIL, [notice.recipient])
        except Exception as exc:  # noqa: BLE001 - any mail failure is recorded and retried
            notice.record_failed(f"{type(exc).__name__}: {exc}")
            logger.warning("customer notice %s failed: %s", notice.pk, notice.error)
            return False
        notice.record_sent()
    return True
