"""The alerts that follow from the self-watch: a periodic job gone silent, a
provider's rate-limit bucket above RATE_LIMIT_ALERT_RATIO of its quota. Run by the
monitoring check `hub_selfwatch` (beat, every minute); each is set-based
(alerts_sync), so an alert opens once, is counted while it holds and resolves when
it clears."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from hub.alerts.services import Failing, alerts_sync
from hub.integrations.ratelimit import RateLimiterUnavailable, provider_bucket
from hub.models import AlertSeverity
from hub.selfwatch.periodic import periodic_jobs

PERIODIC_JOB_SILENT = "periodic_job_silent"
PROVIDER_QUOTA_HIGH = "provider_quota_high"


def _duration(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def periodic_jobs_check() -> dict[str, Any]:
    now = timezone.now()
    failing: dict[str, Failing] = {}
    for job in periodic_jobs(watch=True):
        if not job.silent(now):
            continue
        since = job.last_success_at or job.watched_since
        last = (
            f"last succeeded {_duration((now - since).total_seconds())} ago"
            if job.last_success_at
            else (f"never succeeded in the {_duration((now - since).total_seconds())} it has been watched")
        )
        failing[job.name[:64]] = Failing(
            severity=AlertSeverity.MEDIUM,
            message=f"periodic job {job.name!r} ({job.task}, every {_duration(job.period_seconds)}) {last}: "
            "is beat running, and a worker on its queue?",
        )
    return alerts_sync(kind=PERIODIC_JOB_SILENT, subject_type="periodic_job", failing=failing).summary()


def provider_quota_check() -> dict[str, Any]:
    ratio = settings.RATE_LIMIT_ALERT_RATIO
    failing: dict[str, Failing] = {}
    unknown = 0
    for provider, (limit, period, _) in settings.PROVIDER_RATE_LIMITS.items():
        try:
            used = provider_bucket(provider).quota_used()
        except RateLimiterUnavailable:
            unknown += 1
            continue
        if used > ratio:
            failing[provider] = Failing(
                severity=AlertSeverity.MEDIUM,
                message=f"{provider}: {used:.0%} of its quota ({limit} requests per {_duration(period)}) "
                f"used over the last period (alert above {ratio:.0%})",
            )
    if unknown:
        # Without the buckets' Redis nothing can be said: leave the open alerts as they are.
        return {"unknown": unknown}
    return alerts_sync(kind=PROVIDER_QUOTA_HIGH, subject_type="provider", failing=failing).summary()


def selfwatch_check() -> dict[str, Any]:
    return {"periodic_jobs": periodic_jobs_check(), "provider_quota": provider_quota_check()}
