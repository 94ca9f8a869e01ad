"""The customer-notice outbox on the real worker: a paid order that rolls back tells
its customer once and opens one staff alert, however often its end is seen."""

from __future__ import annotations

import pytest
from django.db import transaction

from hub.models import Alert, AlertStatus, CustomerNotice
from hub.outbox import OutboxStatus
from hub.pipeline.models import Job, JobStatus
from provisioning.models import Order, OrderStatus
from provisioning.services.orders import order_create, order_job_finished
from tests.conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_rolled_back_order_tells_its_customer_and_staff_once(celery_worker: WorkerProcess) -> None:
    # given a paid order that cannot be set up (no release of anything it installs:
    # its first step fails for good and the job rolls back)
    order = order_create(
        domain="rollback-notice.example.com",
        plan="build",
        region="eu",
        tools=["nextcloud"],
        customer_email="owner@rollback-notice.example.com",
    )

    # when the worker has run it to its end
    wait_for(
        lambda: Order.objects.get(pk=order.pk).status == OrderStatus.ROLLED_BACK, timeout=60, message="rolled back"
    )
    wait_for(
        lambda: CustomerNotice.objects.filter(status=OutboxStatus.SENT).exists(),
        timeout=30,
        message="the notice sent",
    )
    # and the end of the job is seen again (a redelivered message, a second look)
    assert order.job_id is not None
    with transaction.atomic():
        order_job_finished(Job.objects.select_for_update().get(pk=order.job_id))

    # then the customer has one notice, sent, and staff one open alert
    assert Job.objects.get(pk=order.job_id).status == JobStatus.ROLLED_BACK
    notices = list(CustomerNotice.objects.filter(subject_type="order", subject_id=str(order.pk)))
    assert [(n.kind, n.recipient, n.status, n.attempts) for n in notices] == [
        ("order_rolled_back", "owner@rollback-notice.example.com", OutboxStatus.SENT, 1)
    ]
    assert "rollback-notice.example.com" in notices[0].subject
    alerts = Alert.objects.filter(subject_type="order", subject_id=str(order.pk), kind="order_rolled_back")
    assert [(a.status, a.severity) for a in alerts] == [(AlertStatus.OPEN, "MEDIUM")]
