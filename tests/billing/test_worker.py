"""The real path: Stripe's delivery -> the Hub's webhook -> the inbox row -> a real
Celery worker on the `billing` queue (real Redis, real Postgres) handles it once.

The worker is the `billing_worker` fixture (the shared worker class on the billing
queue only): a checkout creates a real order whose provisioning job must not run
against real providers from these tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Customer, EventStatus, Notice, StripeEvent, Subscription
from hub.outbox import OutboxStatus
from sandbox import stripe_events as se
from tests.billing.conftest import assert_order_refused
from tests.conftest import WorkerProcess, wait_for
from tests.factories import OrderFactory, TenantFactory

STAFF = "billing-staff@example.com"

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FINISHED = (EventStatus.SUCCEEDED, EventStatus.FAILED, EventStatus.IGNORED)


def wait_handled(event_id: str, *, timeout: float = 20.0) -> StripeEvent:
    def handled() -> StripeEvent | None:
        row = StripeEvent.objects.filter(stripe_event_id=event_id).first()
        return row if row is not None and row.status in FINISHED else None

    return wait_for(handled, timeout=timeout, interval=0.1, message=f"event {event_id} to be handled")


def test_checkout_sent_three_times_has_the_effect_of_one(
    billing_worker: WorkerProcess, deliver: Callable[..., Any]
) -> None:
    event = se.checkout_session_completed(
        plan="build", region="eu", domain="worker-shop.example.com", tools="nextcloud,ghost", email="w@example.com"
    )
    session = event["data"]["object"]

    answers = [deliver(event).status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    row = wait_handled(event["id"])
    assert StripeEvent.objects.count() == 1
    assert row.attempts >= 1
    customer = Customer.objects.get()
    assert (customer.stripe_customer_id, customer.email) == (session["customer"], "w@example.com")
    subscription = Subscription.objects.get()
    assert (subscription.stripe_subscription_id, subscription.status, subscription.plan) == (
        session["subscription"],
        "active",
        "build",
    )

    # The order and its provisioning belong to the provisioning app.
    pytest.importorskip("provisioning.services.orders")
    from provisioning.models import Order, OrderStatus

    assert row.status == EventStatus.SUCCEEDED, f"{row.error}\n{billing_worker.log()[-3000:]}"
    order = Order.objects.get()
    assert order.source_event_id == event["id"]
    assert (order.plan, order.region, order.domain, order.tools) == (
        "build",
        "eu",
        "worker-shop.example.com",
        ["nextcloud", "ghost"],
    )
    assert (order.stripe_customer_id, order.stripe_subscription_id) == (session["customer"], session["subscription"])
    assert order.status != OrderStatus.FAILED, order.failure_reason
    assert order.job_id is not None


def _domain_of_a_live_tenant(domain: str) -> None:

    TenantFactory.create(domain=domain)


def _domain_of_an_order_in_flight(domain: str) -> None:
    from provisioning.models import OrderStatus

    OrderFactory.create(domain=domain, status=OrderStatus.AWAITING_SERVER, region="eu", plan="build")


@pytest.mark.parametrize(
    ("metadata", "already_there", "fragments"),
    [
        pytest.param(
            {"plan": "mega", "region": "mars", "domain": "Bad Domain", "tools": "photoshop"},
            None,
            ["unknown plan", "unknown region", "not a valid domain", "unknown tools"],
            id="unknown-plan-region-tools-and-malformed-domain",
        ),
        pytest.param(
            {"domain": "Taken-By-Tenant.example.com."},
            _domain_of_a_live_tenant,
            ["domain taken-by-tenant.example.com is already taken"],
            id="domain-of-an-existing-tenant",
        ),
        pytest.param(
            {"domain": "in-flight.example.com"},
            _domain_of_an_order_in_flight,
            ["domain in-flight.example.com is already taken"],
            id="domain-of-an-order-in-flight",
        ),
    ],
)
def test_invalid_checkout_metadata_fails_the_order_alerts_staff_and_starts_nothing(
    billing_worker: WorkerProcess,
    deliver: Callable[..., Any],
    metadata: dict[str, Any],
    already_there: Callable[[str], None] | None,
    fragments: list[str],
) -> None:
    """Tools too big for the tier are the same path with the catalog shrunk, which only
    this process can do: tests/billing/test_checkout.py handles that one in-process."""
    pytest.importorskip("provisioning.services.orders")
    from provisioning.models import Order

    if already_there is not None:
        already_there(metadata["domain"].lower().rstrip("."))
    event = se.checkout_session_completed(**metadata)

    assert deliver(event).status_code == 200
    row = wait_handled(event["id"])

    assert_order_refused(row, fragments)
    assert Order.objects.filter(source_event_id=event["id"]).count() == 1


def test_a_failed_payment_notifies_customer_and_staff_from_the_worker(
    billing_worker: WorkerProcess, deliver: Callable[..., Any]
) -> None:
    ids: dict[str, Any] = {"subscription_id": "sub_worker_notice", "customer_id": "cus_worker_notice"}
    checkout = se.checkout_session_completed(domain="notice.example.com", email="late@example.com", **ids)
    failed = se.invoice_payment_failed(created=checkout["created"] + 1, **ids)

    deliver(checkout)
    wait_handled(checkout["id"])
    deliver(failed)
    assert wait_handled(failed["id"]).status == EventStatus.SUCCEEDED

    def sent() -> list[tuple[str, str]]:
        rows = Notice.objects.filter(kind="payment_failed", status=OutboxStatus.SENT)
        return sorted(rows.values_list("audience", "recipient")) if rows.count() == 2 else []

    assert wait_for(sent, timeout=20, message="the payment_failed notices to be sent") == [
        ("customer", "late@example.com"),
        ("staff", STAFF),
    ]
    assert Subscription.objects.get().status == "past_due"


def test_from_checkout_to_a_handled_payment_end_to_end(
    billing_worker: WorkerProcess, client: Any, live_server: Any, stripe_sandbox: Any, settings: Any
) -> None:
    """The demo path: the Hub creates the Checkout Session in the emulator, the
    customer pays there, the emulator delivers the signed event to the Hub over HTTP."""
    answer = client.post(
        "/api/v1/orders/checkout/",
        {"plan": "build", "region": "eu", "domain": "e2e.example.com", "tools": ["ghost"], "email": "e2e@example.com"},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    session_id = answer.json()["id"]

    paid = stripe_sandbox.control(
        "POST",
        f"checkout/sessions/{session_id}/complete",
        {
            "webhook_url": f"{live_server.url}/api/v1/billing/stripe/webhook",
            "webhook_secret": settings.STRIPE_WEBHOOK_SECRET,
        },
    )

    assert paid["delivery_status"] == 200
    row = wait_handled(paid["event"]["id"])
    assert row.type == "checkout.session.completed"
    subscription = Subscription.objects.get()
    assert subscription.stripe_subscription_id == paid["subscription"]["id"]
    assert (subscription.domain, subscription.plan, subscription.status) == ("e2e.example.com", "build", "active")
    assert Customer.objects.get().email == "e2e@example.com"


def test_overage_is_metered_to_stripe_by_the_worker(
    billing_worker: WorkerProcess, stripe_sandbox: Any, settings: Any
) -> None:
    import uuid

    from billing.models import MeterReport
    from billing.services.usage import usage_evaluate
    from tenants.models import UsageReport

    settings.PLAN_TOKEN_POOLS = {**settings.PLAN_TOKEN_POOLS, "lite": 1000}
    tenant = TenantFactory.create(domain="metered.example.com", plan="lite")
    Subscription.objects.create(
        stripe_subscription_id="sub_metered", stripe_customer_id="cus_metered", plan="lite", tenant_id=tenant.pk
    )
    UsageReport.objects.create(tenant=tenant, report_id=uuid.uuid4(), period="2026-11", tokens=1234)

    usage_evaluate(tenant_id=tenant.pk, period="2026-11")

    wait_for(
        lambda: MeterReport.objects.filter(status=OutboxStatus.SENT).exists(),
        timeout=20,
        message="the meter report to be sent by the worker",
    )
    assert [(e["payload"]["stripe_customer_id"], e["payload"]["value"]) for e in stripe_sandbox.meter_events()] == [
        ("cus_metered", "234")
    ]
