"""Stripe delivers events late, twice and out of order. Handling uses each event's
object state and `created` time, so any order of the same events ends in the same
state, and a late old event never undoes a newer one."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db.models import Q

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


STAFF = "billing-staff@example.com"
# Subscriptions whose story the order of handling rightly changes (checked by
# `check_order_dependent`): a payment failure handled only after the newer payment
# (kind 1) tells nobody; a checkout handled after the cancellation (kind 2) orders
# nothing and tells staff instead.
RECOVERED = [f"sub_order{i:02d}" for i in range(10) if i % 3 == 1]
CANCELLED = [f"sub_order{i:02d}" for i in range(10) if i % 3 == 2]


def notices_of(subscription_id: str, kind: str) -> list[tuple[str, str]]:
    rows = Notice.objects.filter(kind=kind).filter(
        Q(dedup_key__contains=f":{subscription_id}:") | Q(body__contains=subscription_id)
    )
    return sorted(rows.values_list("audience", "recipient"))


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
        # Every notice and every order, duplicates included, but those of the stories
        # above: an old event that still notifies, or a checkout ordering twice, shows.
        "notices": sorted(
            Notice.objects.exclude(kind="checkout_after_cancel")
            .exclude(kind="payment_failed", dedup_key__regex=rf":({'|'.join(RECOVERED)}):")
            .values_list("kind", "audience", "recipient")
        ),
        "orders": sorted(
            (o["stripe_subscription_id"], o["source_event_id"], o["plan"], o["region"], o["domain"], tuple(o["tools"]))
            for o in fake.orders
            if o["stripe_subscription_id"] not in CANCELLED
        ),
    }


def check_order_dependent(
    fake: FakeTenancy,
    stories: dict[str, list[dict[str, Any]]],
    handled: list[dict[str, Any]],
    expected_orders: list[dict[str, Any]],
) -> None:
    """What the order of handling decides, decided right."""
    position = {event["id"]: n for n, event in enumerate(handled)}
    for subscription_id in RECOVERED:
        _, _, failed, past_due, paid = stories[subscription_id]
        told = min(position[failed["id"]], position[past_due["id"]]) < position[paid["id"]]
        notices = notices_of(subscription_id, "payment_failed")
        assert [n for n in notices if n[0] == "staff"] == ([("staff", STAFF)] if told else []), subscription_id
        # The customer is told too, unless the payment came before their address did.
        assert len([n for n in notices if n[0] == "customer"]) <= int(told), subscription_id
    for subscription_id in CANCELLED:
        orders = [o for o in fake.orders if o["stripe_subscription_id"] == subscription_id]
        refused = notices_of(subscription_id, "checkout_after_cancel")
        assert len(orders) + len(refused) == 1, subscription_id
        if orders:
            assert [o for o in expected_orders if o["stripe_subscription_id"] == subscription_id] == orders


def reset(fake: FakeTenancy) -> None:
    for model in (StaffTask, Notice, Subscription, Customer, StripeEvent):
        model.objects.all().delete()
    fake.calls.clear()
    fake.orders.clear()


def test_fifty_events_in_any_order_end_in_the_same_state(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    base = int(time.time()) - 20_000
    stories = {f"sub_order{i:02d}": history(i, base) for i in range(10)}
    events = [event for story in stories.values() for event in story]
    assert len(events) == 50
    fake_tenancy.tenants = {f"sub_order{i:02d}": 100 + i for i in range(10)}

    for event in events:
        deliver_and_process(event)
    expected = snapshot(fake_tenancy)
    expected_orders = list(fake_tenancy.orders)
    check_order_dependent(fake_tenancy, stories, events, expected_orders)

    # The state in order is the story the events tell.
    subs = expected["subscriptions"]
    assert subs["sub_order00"][:3] == ("past_due", "scale", "build")
    assert subs["sub_order01"][0] == "active" and subs["sub_order01"][8] is None
    assert subs["sub_order02"][0] == "canceled" and subs["sub_order02"][9] == "canceled"
    assert expected["staff_tasks"] == [f"tier_change:sub_order{i:02d}:build->scale" for i in (0, 3, 6, 9)]
    assert expected["suspended_tenants"] == [102, 105, 108]
    customers_told = [(kind, to) for kind, audience, to in expected["notices"] if audience == "customer"]
    assert customers_told == [("payment_failed", f"c{i}@example.com") for i in (0, 3, 6, 9)] + [
        ("subscription_canceled", f"c{i}@example.com") for i in (2, 5, 8)
    ]
    assert [o[0] for o in expected["orders"]] == [f"sub_order{i:02d}" for i in range(10) if i % 3 != 2]

    for seed in (1, 2, 3):
        reset(fake_tenancy)
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        for event in shuffled:
            deliver_and_process(event)
        assert snapshot(fake_tenancy) == expected, f"order with seed {seed} ended elsewhere"
        check_order_dependent(fake_tenancy, stories, shuffled, expected_orders)


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


def test_an_older_failure_handled_after_the_past_due_update_is_told_once(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    t = int(time.time()) - 1000
    ids: dict[str, Any] = {"subscription_id": "sub_twice", "customer_id": "cus_twice"}
    deliver_and_process(se.checkout_session_completed(created=t, email="twice@example.com", **ids))
    deliver_and_process(se.subscription_updated(created=t + 201, status="past_due", plan="build", **ids))

    deliver_and_process(se.invoice_payment_failed(created=t + 200, **ids))

    assert Subscription.objects.get().past_due_since == datetime.fromtimestamp(t + 200, tz=UTC)
    assert sorted(Notice.objects.filter(kind="payment_failed").values_list("audience", "recipient")) == [
        ("customer", "twice@example.com"),
        ("staff", STAFF),
    ]


@pytest.mark.parametrize("cancelled", [False, True], ids=["still-past-due", "cancelled-since"])
def test_notices_due_before_the_checkout_named_the_customer_reach_them_once_it_does(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy, cancelled: bool
) -> None:
    t = int(time.time()) - 1000
    ids: dict[str, Any] = {"subscription_id": "sub_unnamed", "customer_id": "cus_unnamed"}
    deliver_and_process(se.invoice_payment_failed(created=t + 200, **ids))
    if cancelled:
        deliver_and_process(se.subscription_deleted(created=t + 400, plan="build", **ids))
    told_staff = sorted(Notice.objects.values_list("kind", "audience", "recipient"))
    assert {audience for _, audience, _ in told_staff} == {"staff"}

    deliver_and_process(se.checkout_session_completed(created=t, email="late@example.com", **ids))
    deliver_and_process(se.invoice_payment_failed(created=t + 250, **ids))  # the same episode

    # Told what is still the case: a payment failure that a cancellation overtook is not.
    told_customer = Notice.objects.filter(audience="customer").values_list("kind", "recipient")
    kind = "subscription_canceled" if cancelled else "payment_failed"
    assert list(told_customer) == [(kind, "late@example.com")]
    assert Notice.objects.filter(audience="staff").count() == len(told_staff) + int(cancelled)  # checkout_after_cancel
