"""The last success of every periodic job, and whether one has gone silent.

Beat's messages carry the PeriodicTask's name (django-celery-beat adds the
`periodic_task_name` header), so the worker that ran one records its success under
that name (hub.celery's task_success receiver). A job is silent when it has not
succeeded within PERIODIC_JOB_SILENT_PERIODS times its period (the period read from
the beat schedule: an interval, or the longest gap between two runs of a crontab),
and never sooner than PERIODIC_JOB_SILENT_MIN_SECONDS; a job that never succeeded
counts from when it was first watched."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from hub.selfwatch.models import PeriodicJobSuccess

logger = logging.getLogger(__name__)

_INTERVAL_SECONDS = {
    IntervalSchedule.DAYS: 86400.0,
    IntervalSchedule.HOURS: 3600.0,
    IntervalSchedule.MINUTES: 60.0,
    IntervalSchedule.SECONDS: 1.0,
    IntervalSchedule.MICROSECONDS: 1e-6,
}
_WEEK_MINUTES = 7 * 24 * 60


def periodic_job_succeeded(*, name: str, task: str, at: datetime | None = None) -> None:
    """One statement (INSERT ... ON CONFLICT DO UPDATE), from the worker that ran it."""
    at = at or timezone.now()
    PeriodicJobSuccess.objects.bulk_create(
        [PeriodicJobSuccess(name=name[:200], task=task[:200], last_success_at=at)],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["task", "last_success_at"],
    )


def task_success_receiver(sender: Any = None, **kwargs: Any) -> None:
    """Celery's task_success: record it when beat sent the message."""
    request = getattr(sender, "request", None)
    name = getattr(request, "periodic_task_name", None)
    if not name or getattr(request, "is_eager", False):
        return
    try:
        periodic_job_succeeded(name=str(name), task=getattr(sender, "name", "") or "")
    except Exception:
        # The job did succeed; failing it now for its bookkeeping would be worse.
        logger.exception("could not record the success of periodic job %s", name)


def crontab_period_seconds(crontab: CrontabSchedule) -> float:
    """The longest gap between two consecutive runs over a week (minute, hour and day
    of week); a crontab restricted to some days of the month or months counts a month
    or a year, which is the gap it can have."""
    schedule = crontab.schedule
    if len(schedule.month_of_year) < 12:
        return 366 * 86400.0
    if len(schedule.day_of_month) < 31:
        return 31 * 86400.0
    runs = sorted(
        day * 1440 + hour * 60 + minute
        for day in schedule.day_of_week
        for hour in schedule.hour
        for minute in schedule.minute
    )
    if not runs:
        return 366 * 86400.0
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    gaps.append(runs[0] + _WEEK_MINUTES - runs[-1])
    return max(gaps) * 60.0


def period_seconds(task: PeriodicTask) -> float | None:
    if task.interval is not None:
        return task.interval.every * _INTERVAL_SECONDS.get(task.interval.period, 1.0)
    if task.crontab is not None:
        return crontab_period_seconds(task.crontab)
    return None  # solar and clocked schedules have no period


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    task: str
    period_seconds: float
    last_success_at: datetime | None
    watched_since: datetime

    @property
    def silent_after(self) -> timedelta:
        periods = self.period_seconds * settings.PERIODIC_JOB_SILENT_PERIODS
        return timedelta(seconds=max(periods, settings.PERIODIC_JOB_SILENT_MIN_SECONDS))

    def silent(self, now: datetime) -> bool:
        return now - (self.last_success_at or self.watched_since) > self.silent_after


def periodic_jobs(*, watch: bool = False) -> list[PeriodicJob]:
    """Every enabled, recurring beat job with its period and last success. With
    `watch`, jobs seen for the first time get their row (their silence clock starts)."""
    tasks = [
        task
        for task in PeriodicTask.objects.filter(enabled=True, one_off=False)
        .select_related("interval", "crontab")
        .order_by("name")
        if period_seconds(task) is not None
    ]
    if watch:
        PeriodicJobSuccess.objects.bulk_create(
            [PeriodicJobSuccess(name=task.name, task=task.task) for task in tasks], ignore_conflicts=True
        )
    rows = {row.name: row for row in PeriodicJobSuccess.objects.filter(name__in=[task.name for task in tasks])}
    now = timezone.now()
    jobs = []
    for task in tasks:
        row = rows.get(task.name)
        jobs.append(
            PeriodicJob(
                name=task.name,
                task=task.task,
                period_seconds=period_seconds(task) or 0.0,
                last_success_at=row.last_success_at if row else None,
                watched_since=row.watched_since if row else now,
            )
        )
    return jobs
