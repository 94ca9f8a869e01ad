"""An outbox row (hub/outbox.py) records each attempt to send it: a failure keeps the
error for staff and leaves the row to the requeue, a success is final. Shown on a
customer notice sent through Django's real SMTP backend, first to a closed port."""

from __future__ import annotations

import socket

import pytest
from django.core import mail
from django.test import override_settings

from hub.notices.models import CustomerNotice
from hub.notices.services import customer_notice_send
from hub.outbox import ERROR_MAX_CHARS, OutboxStatus

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _notice(*, order_id: int) -> CustomerNotice:
    return CustomerNotice.objects.create(
        kind="welcome",
        subject_type="order",
        subject_id=str(order_id),
        recipient="owner@outbox.example.com",
        subject="Your server is ready",
        body="Hello",
        dedup_key=f"order:{order_id}:welcome",
    )


def test_a_failed_send_is_recorded_then_the_retry_sends_once_and_never_again() -> None:
    # given a notice, and a mail server that refuses connections
    notice = _notice(order_id=7)
    refusing = override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=_closed_port(),
        EMAIL_TIMEOUT=2,
    )

    # when it is sent
    with refusing:
        assert customer_notice_send(notice_id=notice.pk) is False

    # then the attempt and its error are on the row, for the requeue and for staff
    notice.refresh_from_db()
    assert (notice.status, notice.attempts, notice.sent_at) == (OutboxStatus.FAILED, 1, None)
    assert notice.error.startswith("ConnectionRefusedError") and len(notice.error) <= ERROR_MAX_CHARS
    assert notice.can_send()

    # when the mail server is back and the requeue sends it again
    assert customer_notice_send(notice_id=notice.pk) is True

    # then it went out once, and the row says so
    notice.refresh_from_db()
    assert (notice.status, notice.attempts, notice.error) == (OutboxStatus.SENT, 2, "")
    assert notice.sent_at is not None and not notice.can_send()
    assert [m.to for m in mail.outbox] == [["owner@outbox.example.com"]]

    # and a late duplicate of the task sends nothing more
    assert customer_notice_send(notice_id=notice.pk) is False
    notice.refresh_from_db()
    assert notice.attempts == 2 and len(mail.outbox) == 1


def test_an_error_longer_than_the_row_keeps_is_cut() -> None:
    notice = _notice(order_id=8)
    notice.record_failed("x" * (ERROR_MAX_CHARS + 500))
    notice.refresh_from_db()
    assert (notice.status, notice.attempts, len(notice.error)) == (OutboxStatus.FAILED, 1, ERROR_MAX_CHARS)
