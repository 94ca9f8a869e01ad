"""AI token usage: the agents' reports summed per tenant and billing period, notices
at 80/90/100% of the plan's pool (each once), and the tokens beyond the pool handed to
Stripe as meter events through an outbox, so a retry never bills the same tokens twice."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import ports
from billing.integrations import stripe as stripe_api
from billing.models import MeterReport, Subscription, UsagePeriod
from billing.services.notices import notice_to_customer, notice_to_staff
from hub.queue import enqueue_on_commit
from provisioning.models import Order
from tenants.models import Tenant, UsageReport

SEND_METER_REPORT = "billing.send_meter_report"

logger = logging.getLogger(__name__)


def current_period(now: datetime | None = None) -> str:
    """Billing periods are calendar months (YYYY-MM), as the agents report them."""
    return (now or timezone.now()).strftime("%Y-%m")


def _subscription_for_tenant(tenant_id: int) -> Subscription | None:
    subscription = Subscription.objects.filter(tenant_id=tenant_id).order_by("-id").first()
    if subscription is not None:
        return subscription
    ref = (
        Order.objects.filter(tenant_id=tenant_id)
        .exclude(stripe_subscription_id="")
        .order_by("-id")
        .values_list("stripe_subscription_id", flat=True)
        .first()
    )
    if not ref:
        return None
    updated = Subscription.objects.filter(stripe_subscription_id=ref, tenant_id=None).update(tenant_id=tenant_id)
    if updated:
        logger.info("subscription %s linked to tenant %s by its order", ref, tenant_id)
    return Subscription.objects.filter(stripe_subscription_id=ref).first()


def _tenant_plan(tenant_id: int) -> str:
    return Tenant.objects.filter(pk=tenant_id).values_list("plan", flat=True).first() or "build"


@transaction.atomic
def usage_evaluate(*, tenant_id: int, period: str) -> UsagePeriod:
    """Recount a tenant's usage for a period from the reports (so evaluating twice is
    harmless), announce the thresholds newly crossed, and meter new overage."""
    total = UsageReport.objects.filter(tenant_id=tenant_id, period=period).aggregate(total=Sum("tokens"))["total"] or 0
    subscription = _subscription_for_tenant(tenant_id)
    plan = (subscription.plan if subscription else "") or _tenant_plan(tenant_id)
    pool = ports.plan_token_pool(plan=plan)
    usage, _ = UsagePeriod.objects.get_or_create(
        tenant_id=tenant_id, period=period, defaults={"token_pool": pool, "subscription": subscription}
    )
    usage = UsagePeriod.objects.select_for_update().get(pk=usage.pk)
    usage.tokens_used = total
    usage.token_pool = pool
    usage.subscription = subscription
    fields = ["tokens_used", "token_pool", "subscription", "updated_at"]

    crossed = [t for t in settings.BILLING_USAGE_THRESHOLDS if pool > 0 and total * 100 >= pool * t]
    for threshold in crossed:
        if threshold > usage.highest_threshold_notified:
            _notify_threshold(usage, subscription, threshold)
    if crossed and crossed[-1] > usage.highest_threshold_notified:
        usage.highest_threshold_notified = crossed[-1]
        fields.append("highest_threshold_notified")

    customer_id = subscription.stripe_customer_id if subscription else ""
    delta = usage.overage - usage.overage_metered
    if delta > 0 and customer_id:
        report = MeterReport.objects.create(
            usage_period=usage,
            stripe_customer_id=customer_id,
            identifier=f"hub-usage-{tenant_id}-{period}-{usage.overage}",
            value=delta,
            timestamp=int(timezone.now().timestamp()),
        )
        usage.overage_metered = usage.overage
        fields.append("overage_metered")
        enqueue_on_commit(SEND_METER_REPORT, report.pk)
    usage.save(update_fields=fields)
    return usage


def _notify_threshold(usage: UsagePeriod, subscription: Subscription | None, threshold: int) -> None:
    key = f"usage:{usage.tenant_id}:{usage.period}:{threshold}"
    label = (subscription.domain if subscription else "") or f"tenant {usage.tenant_id}"
    figures = f"{usage.tokens_used:,} of {usage.token_pool:,} AI tokens ({usage.period})"
    beyond = " Tokens beyond the pool are billed as overage." if threshold >= 100 else ""
    email = ""
    if subscription is not None and subscription.customer_id is not None:
        email = subscription.customer.email  # type: ignore[union-attr]
    notice_to_customer(
        kind=f"usage_{threshold}",
        email=email,
        subject=f"{label}: {threshold}% of your AI token pool used",
        body=f"Your service {label} has used {figures}.{beyond}",
        dedup_key=key,
    )
    notice_to_staff(
        kind=f"usage_{threshold}",
        subject=f"{label} at {threshold}% of its token pool",
        body=f"{label} has used {figures}.",
        dedup_key=key,
    )


def previous_period(now: datetime | None = None) -> str:
    first_of_month = (now or timezone.now()).replace(day=1)
    return current_period(first_of_month - timedelta(days=1))


def usage_sweep(*, period: str | None = None) -> list[int]:
    """Evaluate every tenant whose reported total for the period (default: this month
    and, for late reports, the last) differs from the recorded one: one grouped query
    per period finds them, however large the fleet."""
    if period is None:
        return [*usage_sweep(period=previous_period()), *usage_sweep(period=current_period())]
    totals = dict(
        UsageReport.objects.filter(period=period).values_list("tenant_id").annotate(total=Sum("tokens")).order_by()
    )
    recorded = dict(UsagePeriod.objects.filter(period=period).values_list("tenant_id", "tokens_used"))
    changed = [tenant_id for tenant_id, total in totals.items() if recorded.get(tenant_id) != total]
    for tenant_id in changed:
        usage_evaluate(tenant_id=tenant_id, period=period)
    return changed


def meter_report_send(*, meter_report_id: int) -> bool:
    """Hand one overage report to Stripe. The identifier makes Stripe count it once,
    so a resend after a crash (or a duplicate task) bills nothing twice."""
    with transaction.atomic():
        report = MeterReport.objects.select_for_update(skip_locked=True).filter(pk=meter_report_id).first()
        if report is None or not report.can_send():
            return False
        try:
            stripe_api.meter_event_create(
                event_name=settings.STRIPE_METER_EVENT_NAME,
                stripe_customer_id=report.stripe_customer_id,
                value=report.value,
                identifier=report.identifier,
                timestamp=report.timestamp,
            )
        except stripe_api.StripeRejected as exc:
            report.record_failed(str(exc))
            notice_to_staff(
                kind="meter_rejected",
                subject=f"Stripe refused meter event {report.identifier}",
                body=f"{report.value} overage tokens for {report.stripe_customer_id} were not billed: {report.error}",
                dedup_key=f"meter_rejected:{report.identifier}",
            )
            return False
        except stripe_api.StripeUnavailable as exc:
            report.record_failed(str(exc))
            logger.warning("meter event %s not sent: %s", report.identifier, report.error)
            return False
        report.record_sent()
        return True
