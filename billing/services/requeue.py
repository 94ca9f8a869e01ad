"""The billing sweep that re-rings the doorbells the broker lost: inbox events,
notices and meter reports still waiting after a while."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import MeterReport, MeterReportStatus, Notice, NoticeStatus
from billing.services.events import stripe_events_requeue

MAX_SEND_ATTEMPTS = 10


@dataclass
class RequeueReport:
    events: list[int] = field(default_factory=list)
    notices: list[int] = field(default_factory=list)
    meter_reports: list[int] = field(default_factory=list)


def billing_requeue() -> RequeueReport:
    from billing.tasks import send_meter_report, send_notice

    report = RequeueReport(events=stripe_events_requeue())
    before = timezone.now() - timedelta(seconds=settings.BILLING_EVENT_LOST_AFTER)
    report.notices = list(
        Notice.objects.filter(
            status__in=[NoticeStatus.PENDING, NoticeStatus.FAILED],
            created_at__lt=before,
            attempts__lt=MAX_SEND_ATTEMPTS,
        ).values_list("id", flat=True)[:500]
    )
    report.meter_reports = list(
        MeterReport.objects.filter(
            status__in=[MeterReportStatus.PENDING, MeterReportStatus.FAILED],
            created_at__lt=before,
            attempts__lt=MAX_SEND_ATTEMPTS,
        ).values_list("id", flat=True)[:500]
    )
    for notice_id in report.notices:
        transaction.on_commit(partial(send_notice.delay, notice_id))
    for meter_report_id in report.meter_reports:
        transaction.on_commit(partial(send_meter_report.delay, meter_report_id))
    return report
