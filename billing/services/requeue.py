"""The billing sweep that re-rings the doorbells the broker lost: inbox events,
notices and meter reports still waiting after a while."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from billing.models import MeterReport, Notice
from billing.services.events import stripe_events_requeue
from billing.services.notices import SEND_NOTICE
from billing.services.usage import SEND_METER_REPORT
from hub.outbox import OutboxStatus
from hub.queue import enqueue_on_commit

MAX_SEND_ATTEMPTS = 10


@dataclass
class RequeueReport:
    events: list[int] = field(default_factory=list)
    notices: list[int] = field(default_factory=list)
    meter_reports: list[int] = field(default_factory=list)


def billing_requeue() -> RequeueReport:
    report = RequeueReport(events=stripe_events_requeue())
    before = timezone.now() - timedelta(seconds=settings.BILLING_EVENT_LOST_AFTER)
    report.notices = list(
        Notice.objects.filter(
            status__in=[OutboxStatus.PENDING, OutboxStatus.FAILED],
            created_at__lt=before,
            attempts__lt=MAX_SEND_ATTEMPTS,
        ).values_list("id", flat=True)[:500]
    )
    report.meter_reports = list(
        MeterReport.objects.filter(
            status__in=[OutboxStatus.PENDING, OutboxStatus.FAILED],
            created_at__lt=before,
            attempts__lt=MAX_SEND_ATTEMPTS,
        ).values_list("id", flat=True)[:500]
    )
    for notice_id in report.notices:
        enqueue_on_commit(SEND_NOTICE, notice_id)
    for meter_report_id in report.meter_reports:
        enqueue_on_commit(SEND_METER_REPORT, meter_report_id)
    return report
