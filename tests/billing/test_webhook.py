"""The webhook inbox: only correctly signed, fresh, unchanged deliveries are stored;
each Stripe event is stored once and handled once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from billing.models import Customer, EventStatus, StripeEvent, Subscription
from billing.services.events import stripe_event_process
from sandbox import stripe_events
from tests.billing.conftest import WEBHOOK_URL, FakeTenancy, post_delivery

pytestmark = pytest.mark.django_db


def checkout_event() -> dict[str, Any]:
    return stripe_events.checkout_session_completed(domain="shop.example.com", email="ada@example.com")


def test_a_signed_event_is_stored_and_answered_at_once(deliver: Callable[..., Any]) -> None:
    event = checkout_event()

    response = deliver(event)

    assert response.status_code == 200
    assert response.json() == {"received": True}
    row = StripeEvent.objects.get()
    assert (row.stripe_event_id, row.type, row.status) == (event["id"], "checkout.session.completed", "RECEIVED")
    assert row.subscription_ref == event["data"]["object"]["subscription"]


def test_a_wrong_secret_gets_400_and_stores_nothing(deliver: Callable[..., Any]) -> None:
    response = deliver(checkout_event(), secret="whsec_someone_else")

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature"}
    assert not StripeEvent.objects.exists()


def test_a_missing_signature_gets_400_and_stores_nothing(client: Client) -> None:
    body, _ = stripe_events.signed_delivery(checkout_event(), settings.STRIPE_WEBHOOK_SECRET)

    response = client.post(WEBHOOK_URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_stale_timestamp_gets_400_and_stores_nothing(deliver: Callable[..., Any]) -> None:
    # The library's default tolerance is 300 seconds.
    response = deliver(checkout_event(), timestamp=int(time.time()) - 301)

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_body_changed_after_signing_gets_400_and_stores_nothing(client: Client) -> None:
    event = checkout_event()
    body, headers = stripe_events.signed_delivery(event, settings.STRIPE_WEBHOOK_SECRET)
    tampered = body.replace(b"shop.example.com", b"evil.example.com")
    assert tampered != body

    response = post_delivery(client, tampered, headers)

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_signed_body_that_is_not_an_event_gets_400(client: Client) -> None:
    body = b'{"hello": "world"}'
    headers = {"Stripe-Signature": stripe_events.sign(body, settings.STRIPE_WEBHOOK_SECRET, int(time.time()))}

    response = post_delivery(client, body, headers)

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_an_oversized_delivery_is_refused(client: Client, settings: Any) -> None:
    settings.BILLING_WEBHOOK_MAX_BYTES = 1000
    event = checkout_event()
    event["data"]["object"]["metadata"]["padding"] = "x" * 2000
    body, headers = stripe_events.signed_delivery(event, settings.STRIPE_WEBHOOK_SECRET)

    response = post_delivery(client, body, headers)

    assert response.status_code == 413
    assert not StripeEvent.objects.exists()


def test_a_redelivered_event_is_stored_and_handled_once(deliver: Callable[..., Any], fake_tenancy: FakeTenancy) -> None:
    event = checkout_event()

    answers = [deliver(event).status_code for _ in range(3)]
    row = StripeEvent.objects.get()
    outcomes = [stripe_event_process(event_row_id=row.pk) for _ in range(3)]

    assert answers == [200, 200, 200]
    assert outcomes[0] is not None and outcomes[1:] == [None, None]
    row.refresh_from_db()
    assert (row.status, row.attempts) == (EventStatus.SUCCEEDED, 1)
    assert Customer.objects.count() == 1
    assert Subscription.objects.count() == 1
    assert len(fake_tenancy.orders) == 1
    # A delivery after handling still answers 200 and changes nothing.
    assert deliver(event).status_code == 200
    assert StripeEvent.objects.count() == 1


def test_checkout_completed_records_customer_and_subscription_and_asks_for_the_order(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    event = stripe_events.checkout_session_completed(
        plan="scale", region="us", domain="Shop.Example.com", tools="nextcloud,ghost", email="ada@example.com"
    )
    session = event["data"]["object"]

    row = deliver_and_process(event)

    assert row.status == EventStatus.SUCCEEDED
    customer = Customer.objects.get()
    assert (customer.stripe_customer_id, customer.email) == (session["customer"], "ada@example.com")
    subscription = Subscription.objects.get()
    assert subscription.stripe_subscription_id == session["subscription"]
    assert subscription.customer == customer
    assert (subscription.plan, subscription.status, subscription.domain) == ("scale", "active", "shop.example.com")
    assert fake_tenancy.orders == [
        {
            "plan": "scale",
            "region": "us",
            "domain": "shop.example.com",
            "tools": ["nextcloud", "ghost"],
            "customer_email": "ada@example.com",
            "stripe_customer_id": session["customer"],
            "stripe_subscription_id": session["subscription"],
            "source_event_id": event["id"],
        }
    ]


def test_an_unknown_event_type_is_stored_and_ignored(deliver_and_process: Callable[..., StripeEvent]) -> None:
    event = stripe_events.event("charge.refunded", {"id": "ch_1", "object": "charge"})

    row = deliver_and_process(event)

    assert row.status == EventStatus.IGNORED
    assert "no handler" in row.error


def test_a_failing_handler_is_recorded_with_its_error_and_retried(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billing import ports

    def unavailable(**kwargs: Any) -> None:
        raise ConnectionError("provisioning.services.orders is not available")

    monkeypatch.setattr(ports, "order_create_from_checkout", unavailable)
    event = checkout_event()

    row = deliver_and_process(event)

    # The customer and subscription stay recorded; the order is what is retried.
    assert row.status == EventStatus.FAILED
    assert "order not created" in row.error and "not available" in row.error
    assert row.next_attempt_at is not None
    assert Subscription.objects.count() == 1

    monkeypatch.setattr(ports, "order_create_from_checkout", lambda **kwargs: fake_tenancy.orders.append(kwargs))
    stripe_event_process(event_row_id=row.pk)
    row.refresh_from_db()
    assert (row.status, row.attempts, row.error) == (EventStatus.SUCCEEDED, 2, "")
    assert len(fake_tenancy.orders) == 1
    assert Subscription.objects.count() == 1


def test_staff_can_retry_an_event_that_ran_out_of_attempts(
    deliver_and_process: Callable[..., StripeEvent], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from billing import handlers
    from billing.services.events import stripe_event_retry
    from hub.errors import DomainError

    settings.BILLING_EVENT_MAX_ATTEMPTS = 1

    def broken(row: StripeEvent) -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setitem(handlers.HANDLERS, "invoice.paid", broken)
    event = stripe_events.invoice_paid(subscription_id="sub_retry", customer_id="cus_retry")

    row = deliver_and_process(event)
    assert (row.status, row.attempts, row.next_attempt_at) == (EventStatus.FAILED, 1, None)
    assert "RuntimeError: handler bug" in row.error
    assert stripe_event_process(event_row_id=row.pk) is None  # out of attempts

    monkeypatch.undo()
    settings.BILLING_EVENT_MAX_ATTEMPTS = 1
    stripe_event_retry(event_row_id=row.pk, actor="ops")
    stripe_event_process(event_row_id=row.pk)
    row.refresh_from_db()
    assert row.status == EventStatus.SUCCEEDED
    with pytest.raises(DomainError):
        stripe_event_retry(event_row_id=row.pk, actor="ops")


def test_a_checkout_paid_later_orders_when_the_payment_succeeds(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    completed = stripe_events.checkout_session_completed(domain="sepa.example.com", payment_status="unpaid")
    session = dict(completed["data"]["object"], payment_status="paid")
    succeeded = stripe_events.event("checkout.session.async_payment_succeeded", session)

    first = deliver_and_process(completed)
    assert first.status == EventStatus.SUCCEEDED and "no order" in first.outcome
    assert fake_tenancy.orders == []
    assert Subscription.objects.get().status == "incomplete"

    deliver_and_process(succeeded)

    assert [order["source_event_id"] for order in fake_tenancy.orders] == [succeeded["id"]]
    assert Subscription.objects.get().status == "active"
