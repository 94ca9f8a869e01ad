"""The periodic dunning check: tenants unpaid past the grace period are suspended;
cancelled tenants past the retention period are deprovisioned once their final backup
is confirmed. Candidates are found with one query each; each is then acted on under
its own row lock, so two overlapping runs do each thing once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from billing.models import SUBSCRIPTION_DUNNING_STATUSES, SUBSCRIPTION_TERMINAL_STATUSES, Subscription
from billing.services.subscriptions import (
    subscription_deprovision,
    subscription_suspend_for_nonpayment,
    subscription_suspension_catch_up,
)

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass
class DunningReport:
    suspended: list[int] = field(default_factory=list)
    deprovisioned: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)


def _attempt(report: DunningReport, subscription_id: int, action: Callable[..., bool]) -> bool:
    """One subscription's failure (another app unavailable, a refused move) must not
    stop the check for the rest; it is logged and tried again on the next run."""
    try:
        return action(subscription_id=subscription_id)
    except Exception as exc:
        logger.exception("dunning: %s failed for subscription %s", action.__name__, subscription_id)
        report.errors[subscription_id] = f"{type(exc).__name__}: {exc}"
        return False


def dunning_enforce() -> DunningReport:
    report = DunningReport()
    now = timezone.now()
    grace_cutoff = now - timedelta(days=settings.BILLING_GRACE_PERIOD_DAYS)
    unpaid = Subscription.objects.filter(
        status__in=SUBSCRIPTION_DUNNING_STATUSES, suspended_at=None, past_due_since__lte=grace_cutoff
    ).values_list("id", flat=True)
    for subscription_id in list(unpaid[:BATCH]):
        if _attempt(report, subscription_id, subscription_suspend_for_nonpayment):
            report.suspended.append(subscription_id)

    expired = Subscription.objects.filter(
        status__in=SUBSCRIPTION_TERMINAL_STATUSES, deprovision_due_at__lte=now, deprovision_started_at=None
    ).values_list("id", flat=True)
    for subscription_id in list(expired[:BATCH]):
        if _attempt(report, subscription_id, subscription_deprovision):
            report.deprovisioned.append(subscription_id)
        elif subscription_id not in report.errors:
            report.waiting.append(subscription_id)
    # Suspended before the tenant existed: suspend it once provisioning made it.
    orphaned = Subscription.objects.filter(
        suspended_at__isnull=False, tenant_id=None, deprovision_started_at=None
    ).values_list("id", flat=True)
    for subscription_id in list(orphaned[:BATCH]):
        if _attempt(report, subscription_id, subscription_suspension_catch_up):
            report.suspended.append(subscription_id)
    if report.suspended or report.deprovisioned or report.errors:
        logger.info(
            "dunning: suspended %s, deprovisioning %s, failed %s",
            report.suspended,
            report.deprovisioned,
            sorted(report.errors),
        )
    return report
