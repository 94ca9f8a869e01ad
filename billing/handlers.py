"""One handler per Stripe event type: read what the event's object says, hand it to
the services. A type without a handler is stored and marked IGNORED."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from billing import ports
from billing.models import SUBSCRIPTION_TERMINAL_STATUSES, EventStatus, StripeEvent, SubscriptionStatus
from billing.services.notices import notice_to_staff
from billing.services.subscriptions import (
    SubscriptionState,
    customer_upsert,
    subscription_apply_state,
    subscription_record_checkout,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandlerResult:
    """What a handler made of an event. A handler that raises has its writes rolled
    back; one that returns `failed` keeps what it did (it is idempotent) and is retried
    for the rest."""

    status: str = EventStatus.SUCCEEDED
    # Why it failed or was ignored; for a success, what it did.
    detail: str = ""

    @classmethod
    def ignored(cls, why: str) -> HandlerResult:
        return cls(EventStatus.IGNORED, why)

    @classmethod
    def failed(cls, why: str) -> HandlerResult:
        return cls(EventStatus.FAILED, why)

    @classmethod
    def succeeded(cls, what: str = "") -> HandlerResult:
        return cls(EventStatus.SUCCEEDED, what)


Handler = Callable[[StripeEvent], HandlerResult]


def _id(value: Any) -> str:
    """Stripe expands some references into objects: the id either way."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if isinstance(value, int | float) and value > 0 else None


def _object(row: StripeEvent) -> dict[str, Any]:
    obj = (row.payload.get("data") or {}).get("object")
    return obj if isinstance(obj, dict) else {}


def _plan_of_subscription(obj: dict[str, Any]) -> str:
    """The tier: the metadata the Hub's checkout puts on the subscription, else the
    price of its first item (by the configured price ids, or a tier lookup key)."""
    plans = set(settings.STRIPE_PRICE_IDS)
    plan = (obj.get("metadata") or {}).get("plan")
    if plan in plans:
        return str(plan)
    by_price = {price: tier for tier, price in settings.STRIPE_PRICE_IDS.items()}
    for item in (obj.get("items") or {}).get("data") or []:
        price = item.get("price") or {}
        if price.get("id") in by_price:
            return by_price[price["id"]]
        if price.get("lookup_key") in plans:
            return str(price["lookup_key"])
    return ""


def _period_of_subscription(obj: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    # Newer API versions keep the period on the items, older ones on the subscription.
    items = (obj.get("items") or {}).get("data") or []
    start = obj.get("current_period_start") or (items[0].get("current_period_start") if items else None)
    end = obj.get("current_period_end") or (items[0].get("current_period_end") if items else None)
    return _time(start), _time(end)


def _subscription_state(row: StripeEvent, obj: dict[str, Any]) -> SubscriptionState:
    status = obj.get("status")
    start, end = _period_of_subscription(obj)
    return SubscriptionState(
        version=row.version,
        status=status if status in SubscriptionStatus.values else None,
        plan=_plan_of_subscription(obj) or None,
        current_period_start=start,
        current_period_end=end,
        cancel_at_period_end=bool(obj.get("cancel_at_period_end", False)),
        canceled_at=_time(obj.get("canceled_at")) or _time(obj.get("ended_at")),
        carries_details=True,
    )


def handle_subscription_changed(row: StripeEvent) -> HandlerResult:
    """customer.subscription.created / updated / deleted: the object is the whole
    subscription as it was when the event happened."""
    obj = _object(row)
    subscription_id = _id(obj.get("id"))
    if not subscription_id:
        return HandlerResult.ignored("the event carries no subscription id")
    applied = subscription_apply_state(
        stripe_subscription_id=subscription_id,
        stripe_customer_id=_id(obj.get("customer")),
        state=_subscription_state(row, obj),
    )
    if not (applied.status_applied or applied.details_applied):
        return HandlerResult.succeeded("older than the recorded state: nothing changed")
    return HandlerResult.succeeded()


def _invoice_subscription(obj: dict[str, Any]) -> str:
    ref = _id(obj.get("subscription"))
    if not ref:
        parent = obj.get("parent") or {}
        ref = _id((parent.get("subscription_details") or {}).get("subscription"))
    return ref


def _invoice_status(row: StripeEvent, obj: dict[str, Any], status: str) -> HandlerResult:
    subscription_id = _invoice_subscription(obj)
    if not subscription_id:
        return HandlerResult.ignored("not a subscription invoice")
    applied = subscription_apply_state(
        stripe_subscription_id=subscription_id,
        stripe_customer_id=_id(obj.get("customer")),
        state=SubscriptionState(version=row.version, status=status),
    )
    if not applied.status_applied:
        return HandlerResult.succeeded(f"subscription already {applied.subscription.status}: nothing changed")
    return HandlerResult.succeeded()


def handle_invoice_paid(row: StripeEvent) -> HandlerResult:
    return _invoice_status(row, _object(row), SubscriptionStatus.ACTIVE)


def handle_invoice_payment_failed(row: StripeEvent) -> HandlerResult:
    obj = _object(row)
    # The first invoice failing leaves a new subscription incomplete, not past due.
    status = (
        SubscriptionStatus.INCOMPLETE
        if obj.get("billing_reason") == "subscription_create"
        else SubscriptionStatus.PAST_DUE
    )
    return _invoice_status(row, obj, status)


def handle_checkout_completed(row: StripeEvent) -> HandlerResult:
    """The order: customer and subscription recorded, then provisioning's order
    (which validates the metadata and either starts provisioning or fails the order
    with the reason and alerts staff). A session paid later (a bank debit) completes
    unpaid and orders with its `checkout.session.async_payment_succeeded`."""
    session = _object(row)
    if session.get("mode") != "subscription":
        return HandlerResult.ignored(f"checkout in {session.get('mode')!r} mode")
    customer_id = _id(session.get("customer"))
    subscription_id = _id(session.get("subscription"))
    if not customer_id or not subscription_id:
        return HandlerResult.ignored("the session has no customer or subscription")
    email = (session.get("customer_details") or {}).get("email") or session.get("customer_email") or ""
    metadata = {k: str(v) for k, v in (session.get("metadata") or {}).items()}
    plan = metadata.get("plan", "")
    domain = metadata.get("domain", "").strip().lower().rstrip(".")
    tools = [t.strip() for t in metadata.get("tools", "").split(",") if t.strip()]
    known_plan = plan if plan in settings.STRIPE_PRICE_IDS else ""

    customer_upsert(stripe_customer_id=customer_id, email=str(email), version=row.version)
    subscription_record_checkout(
        stripe_subscription_id=subscription_id,
        stripe_customer_id=customer_id,
        plan=known_plan,
        domain=domain,
        checkout_event_id=row.stripe_event_id,
    )
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    subscription = subscription_apply_state(
        stripe_subscription_id=subscription_id,
        stripe_customer_id=customer_id,
        state=SubscriptionState(
            version=row.version, status=SubscriptionStatus.ACTIVE if paid else None, plan=known_plan or None
        ),
    ).subscription
    if not paid:
        # Bank debits and the like: the order waits for async_payment_succeeded.
        return HandlerResult.succeeded(f"payment {session.get('payment_status')!r}: no order until it is paid")
    if subscription.status in SUBSCRIPTION_TERMINAL_STATUSES:
        # Cancelled before its checkout was handled (events out of order): nothing to build.
        notice_to_staff(
            kind="checkout_after_cancel",
            subject=f"checkout for {domain or subscription_id} arrived after its cancellation",
            body=f"Subscription {subscription_id} is {subscription.status}; event {row.stripe_event_id} made no order.",
            dedup_key=f"checkout_after_cancel:{row.stripe_event_id}",
        )
        return HandlerResult.succeeded(f"subscription already {subscription.status}: no order")
    try:
        with transaction.atomic():
            order = ports.order_create_from_checkout(
                plan=plan,
                region=metadata.get("region", ""),
                domain=domain,
                tools=tools,
                customer_email=str(email),
                stripe_customer_id=customer_id,
                stripe_subscription_id=subscription_id,
                source_event_id=row.stripe_event_id,
            )
    except Exception as exc:
        # Customer and subscription stay recorded; the event is retried for the order.
        logger.exception("checkout %s: order not created", row.stripe_event_id)
        return HandlerResult.failed(f"order not created: {type(exc).__name__}: {exc}")
    status = getattr(order, "status", "")
    reason = getattr(order, "failure_reason", "")
    return HandlerResult.succeeded(f"order {getattr(order, 'pk', '?')} {status}" + (f": {reason}" if reason else ""))


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": handle_checkout_completed,
    "checkout.session.async_payment_succeeded": handle_checkout_completed,
    "invoice.paid": handle_invoice_paid,
    "invoice.payment_failed": handle_invoice_payment_failed,
    "customer.subscription.created": handle_subscription_changed,
    "customer.subscription.updated": handle_subscription_changed,
    "customer.subscription.deleted": handle_subscription_changed,
}


def handler_for(event_type: str) -> Handler | None:
    return HANDLERS.get(event_type)
