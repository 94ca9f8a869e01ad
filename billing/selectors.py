"""Billing reads."""

from __future__ import annotations

from django.db.models import QuerySet

from billing.models import StripeEvent, Subscription


def subscription_get(*, stripe_subscription_id: str) -> Subscription | None:
    return Subscription.objects.select_related("customer").filter(stripe_subscription_id=stripe_subscription_id).first()


def subscription_for_tenant(*, tenant_id: int) -> Subscription | None:
    return Subscription.objects.select_related("customer").filter(tenant_id=tenant_id).order_by("-id").first()


def stripe_events_for_subscription(*, stripe_subscription_id: str) -> QuerySet[StripeEvent]:
    return StripeEvent.objects.filter(subscription_ref=stripe_subscription_id).order_by("created", "stripe_event_id")
