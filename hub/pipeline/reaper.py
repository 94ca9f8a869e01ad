"""The reaper brings back what the broker lost: steps whose worker died (lease run
out), steps whose message vanished, retries whose time has come, jobs past deadline.
Single-flight: a Postgres advisory lock keeps a second reaper (two beats, a slow run
overlapping the next) from doing the same work."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hub.db.locks import single_flight
from hub.pipeline.models import Job, JobStatus, Step, StepStatus
from hub.pipeline.services import job_fail_past_deadline
from hub.pipeline.transitions import queue_step, requeue_lost_step

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass
class ReapReport:
    ran: bool = True
    lost_leases: list[int] = field(default_factory=list)
    lost_messages: list[int] = field(default_factory=list)
    due_retries: list[int] = field(default_factory=list)
    past_deadline: list[int] = field(default_factory=list)


def pipeline_reap() -> ReapReport:
    with single_flight("pipeline.reap") as mine:
        return _reap() if mine else ReapReport(ran=False)


def _reap() -> ReapReport:
    report = ReapReport()
    now = timezone.now()
    lost_after = timedelta(seconds=settings.PIPELINE_MESSAGE_LOST_AFTER)

    expired = Step.objects.filter(status=StepStatus.RUNNING, lease_expires_at__lt=now).values_list("id", flat=True)
    for step_id in list(expired[:BATCH]):
        if requeue_lost_step(step_id, now):
            report.lost_leases.append(step_id)

    # Queued long ago and never claimed: the message was lost (broker flushed or
    # restarted without persistence). Retries past due: their countdown was lost, or
    # they waited longer than the broker may hold a message.
    stale = Step.objects.filter(
        Q(status=StepStatus.QUEUED, enqueued_at__lt=now - lost_after)
        | Q(status=StepStatus.RETRY_WAIT, next_run_at__lte=now, enqueued_at__isnull=True)
        | Q(status=StepStatus.RETRY_WAIT, next_run_at__lt=now - lost_after)
    ).values_list("id", "status")
    for step_id, status in list(stale[:BATCH]):
        if _requeue(step_id, now):
            (report.lost_messages if status == StepStatus.QUEUED else report.due_retries).append(step_id)

    overdue = Job.objects.filter(status=JobStatus.RUNNING, deadline_at__lt=now, stop_requested_at__isnull=True)
    for job_id in list(overdue.values_list("id", flat=True)[:BATCH]):
        if job_fail_past_deadline(job_id=job_id):
            report.past_deadline.append(job_id)

    if report.lost_leases or report.lost_messages or report.due_retries or report.past_deadline:
        logger.warning(
            "reaper: %d lost leases, %d lost messages, %d due retries, %d jobs past deadline",
            len(report.lost_leases),
            len(report.lost_messages),
            len(report.due_retries),
            len(report.past_deadline),
        )
    return report


def _requeue(step_id: int, now: datetime) -> bool:
    job_id = Step.objects.filter(pk=step_id).values_list("job_id", flat=True).first()
    if job_id is None:
        return False
    with transaction.atomic():
        job = Job.objects.select_for_update(skip_locked=True).filter(pk=job_id).first()
        if job is None or job.is_terminal:
            return False
        step = Step.objects.select_for_update().get(pk=step_id)
        if step.status not in (StepStatus.QUEUED, StepStatus.RETRY_WAIT):
            return False
        queue_step(step, job, now)
        return True
