"""Stripe delivers events late, twice and out of order. Handling uses each event's
object state and `created` time, so any order of the same events ends in the same
state, and a late old event never undoes a newer one."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Customer, Notice, StaffTask, StripeEvent, Subscription
from sandbox import stripe_events as se
from tests.billing.conftest import FakeTenancy

pytestmark = pytest.mark.django_db


def history(i: int, base: int) -> list[dict[str, Any]]:
    """Five events in the life of subscription i, in the order Stripe created them."""
    t = base + i * 1000
    sub, cus = f"sub_order{i:02d}", f"cus_order{i:02d}"
    ids: dict[str, Any] = {"subscription_id": sub, "customer_id": cus}
    checkout = se.checkout_session_completed(
        plan="build", domain=f"tenant{i}.example.com", email=f"c{i}@example.com", created=t, **ids
    )
    kind = i % 3
    if kind == 0:  # upgraded, then a payment fails
        return [
            checkout,
            se.subscription_created(created=t, plan="build", period_start=t, **ids),
            se.invoice_paid(created=t + 1, **ids),
            se.subscription_updated(created=t + 100, plan="scale", period_start=t, **ids),
            se.invoice_payment_failed(created=t + 200, **ids),
        ]
    if kind == 1:  # a payment fails twice, then is paid
        return [
            checkout,
            se.invoice_paid(created=t + 1, **ids),
            se.invoice_payment_failed(created=t + 200, **ids),
            se.subscription_updated(created=t + 201, status="past_due", plan="build", period_start=t, **ids),
            se.invoice_paid(created=t + 300, **ids),
        ]
    return [  # cancelled at the period end, then deleted
        checkout,
        se.subscription_created(created=t, plan="build", period_start=t, **ids),
        se.invoice_paid(created=t + 1, **ids),
        se.subscription_updated(created=t + 100, cancel_at_period_end=True, plan="build", period_start=t, **ids),
        se.subscription_deleted(created=t + 400, canceled_at=t + 400, plan="build", period_start=t, **ids),
    ]


def snapshot(fake: FakeTenancy) -> dict[str, Any]:
    subscriptions = {
        s.stripe_subscription_id: (
            s.status,
            s.plan,
            s.provisioned_plan,
            s.domain,
            s.customer.email if s.customer else None,
            s.current_period_end,
            s.cancel_at_period_end,
            s.canceled_at,
            s.past_due_since,
            s.suspension_reason,
            s.deprovision_due_at,
        )
        for s in Subscription.objects.select_related("customer")
    }
    return {
        "subscriptions": subscriptions,
        "customers": sorted(Customer.objects.values_list("stripe_customer_id", "email")),
        "staff_tasks": sorted(StaffTask.objects.values_list("dedup_key", flat=True)),
        "suspended_tenants": sorted(t for t in fake.of("suspend") if t is not None),
        "resumed_tenants": sorted(t for t in fake.of("resume") if t is not None),
    }


def reset(fake: FakeTenancy) -> None:
    for model in (StaffTask, Notice, Subscription, Customer, StripeEvent):
        model.objects.all().delete()
    fake.calls.clear()
    fake.orders.clear()


def test_fifty_events_in_any_order_end_in_the_same_state(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    base = int(time.time()) - 20_000
    events = [event for i in range(10) for event in history(i, base)]
    assert len(events) == 50
    fake_tenancy.tenants = {f"sub_order{i:02d}": 100 + i for i in range(10)}

    for event in events:
        deliver_and_process(event)
    expected = snapshot(fake_tenancy)

    # The state in order is the story the events tell.
    subs = expected["subscriptions"]
    assert subs["sub_order00"][:3] == ("past_due", "scale", "build")
    assert subs["sub_order01"][0] == "active" and subs["sub_order01"][8] is None
    assert subs["sub_order02"][0] == "canceled" and subs["sub_order02"][9] == "canceled"
    assert expected["staff_tasks"] == [f"tier_change:sub_order{i:02d}:build->scale" for i in (0, 3, 6, 9)]
    assert expected["suspended_tenants"] == [102, 105, 108]

    for seed in (1, 2, 3):
        reset(fake_tenancy)
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        for event in shuffled:
            deliver_and_process(event)
        assert snapshot(fake_tenancy) == expected, f"order with seed {seed} ended elsewhere"


def test_a_late_old_event_does_not_undo_a_newer_one(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    t = int(time.time()) - 1000
    ids = {"subscription_id": "sub_late", "customer_id": "cus_late"}
    deliver_and_process(se.subscription_updated(created=t + 50, plan="scale", status="active", period_start=t, **ids))

    row = deliver_and_process(se.subscription_updated(created=t + 10, plan="lite", status="past_due", **ids))

    subscription = Subscription.objects.get()
    assert (subscription.status, subscription.plan) == ("active", "scale")
    assert row.status == "SUCCEEDED" and "older" in row.outcome
    assert not Notice.objects.filter(kind="payment_failed").exists()


def test_a_cancelled_subscription_stays_cancelled(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    t = int(time.time()) - 1000
    ids = {"subscription_id": "sub_gone", "customer_id": "cus_gone"}
    deliver_and_process(se.subscription_deleted(created=t, plan="build", **ids))

    deliver_and_process(se.invoice_paid(created=t + 5, **ids))

    assert Subscription.objects.get().status == "canceled"


def test_a_checkout_handled_after_the_cancellation_builds_nothing(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    t = int(time.time()) - 1000
    ids: dict[str, Any] = {"subscription_id": "sub_quick", "customer_id": "cus_quick"}
    deliver_and_process(se.subscription_deleted(created=t + 60, plan="build", **ids))

    row = deliver_and_process(se.checkout_session_completed(created=t, domain="quick.example.com", **ids))

    assert row.status == "SUCCEEDED" and "no order" in row.outcome
    assert fake_tenancy.orders == []
    assert Notice.objects.filter(kind="checkout_after_cancel").count() == 1
