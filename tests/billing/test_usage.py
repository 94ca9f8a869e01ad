"""AI token usage: the agents' reports summed per tenant and period; 80/90/100% of the
plan's pool announced once each; the overage handed to the Stripe emulator as meter
events, each counted once however often it is sent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from billing.models import Customer, MeterReport, Notice, Subscription, UsagePeriod
from billing.services.usage import meter_report_send, usage_evaluate, usage_sweep
from hub.outbox import OutboxStatus
from tests.billing.conftest import StripeSandbox

pytestmark = pytest.mark.django_db

PERIOD = "2026-11"
POOL = 1000


@pytest.fixture
def tenant(settings: Any) -> Any:
    from tenants.models import Tenant, TenantStatus

    settings.PLAN_TOKEN_POOLS = {**settings.PLAN_TOKEN_POOLS, "lite": POOL}
    tenant = Tenant.objects.create(domain="usage.example.com", status=TenantStatus.ACTIVE, plan="lite")
    customer = Customer.objects.create(stripe_customer_id="cus_usage", email="usage@example.com")
    Subscription.objects.create(
        stripe_subscription_id="sub_usage",
        stripe_customer_id="cus_usage",
        customer=customer,
        status="active",
        plan="lite",
        domain="usage.example.com",
        tenant_id=tenant.pk,
    )
    return tenant


def report(tenant: Any, tokens: int, period: str = PERIOD) -> None:
    from tenants.models import UsageReport

    UsageReport.objects.create(tenant=tenant, report_id=uuid.uuid4(), period=period, tokens=tokens)


def usage_notices() -> list[tuple[str, str]]:
    return sorted(Notice.objects.filter(kind__startswith="usage_").values_list("kind", "audience"))


def send_pending() -> None:
    for pk in MeterReport.objects.filter(status=OutboxStatus.PENDING).values_list("id", flat=True):
        meter_report_send(meter_report_id=pk)


def test_each_threshold_is_announced_once(tenant: Any) -> None:
    steps = [(700, []), (150, [80]), (0, [80]), (60, [80, 90]), (90, [80, 90, 100]), (500, [80, 90, 100])]
    for tokens, announced in steps:
        if tokens:
            report(tenant, tokens)
        usage = usage_evaluate(tenant_id=tenant.pk, period=PERIOD)
        expected = sorted((f"usage_{t}", audience) for t in announced for audience in ("customer", "staff"))
        assert usage_notices() == expected, f"after {usage.tokens_used} tokens"

    assert UsagePeriod.objects.get().tokens_used == 1500
    assert Notice.objects.get(kind="usage_100", audience="customer").recipient == "usage@example.com"


def test_crossing_several_thresholds_at_once_announces_each(tenant: Any) -> None:
    report(tenant, 950)

    usage_evaluate(tenant_id=tenant.pk, period=PERIOD)
    usage_evaluate(tenant_id=tenant.pk, period=PERIOD)

    assert [kind for kind, audience in usage_notices() if audience == "customer"] == ["usage_80", "usage_90"]


def test_overage_reaches_stripe_as_meter_events_once(tenant: Any, stripe_sandbox: StripeSandbox, settings: Any) -> None:
    settings.STRIPE_METER_EVENT_NAME = "ai_tokens_overage"
    report(tenant, 900)
    usage_evaluate(tenant_id=tenant.pk, period=PERIOD)
    send_pending()
    assert stripe_sandbox.meter_events() == []

    report(tenant, 300)  # 200 beyond the pool
    usage_evaluate(tenant_id=tenant.pk, period=PERIOD)
    usage_evaluate(tenant_id=tenant.pk, period=PERIOD)
    send_pending()
    report(tenant, 50)  # 250 beyond
    usage_evaluate(tenant_id=tenant.pk, period=PERIOD)
    send_pending()

    events = stripe_sandbox.meter_events()
    assert [(e["event_name"], e["payload"]["stripe_customer_id"], e["payload"]["value"]) for e in events] == [
        ("ai_tokens_overage", "cus_usage", "200"),
        ("ai_tokens_overage", "cus_usage", "50"),
    ]
    assert sum(int(e["payload"]["value"]) for e in events) == UsagePeriod.objects.get().overage == 250

    # A resend (a duplicate task, a crash before the row was marked) bills nothing twice.
    first = MeterReport.objects.order_by("id").first()
    assert first is not None
    MeterReport.objects.filter(pk=first.pk).update(status=OutboxStatus.PENDING)
    send_pending()
    assert len(stripe_sandbox.meter_events()) == 2
    assert set(MeterReport.objects.values_list("status", flat=True)) == {OutboxStatus.SENT}


def test_a_failed_meter_event_is_kept_for_a_retry(tenant: Any, stripe_sandbox: StripeSandbox) -> None:
    report(tenant, 1100)
    usage_evaluate(tenant_id=tenant.pk, period=PERIOD)
    stripe_sandbox.control("POST", "faults", {"path": "/v1/billing/meter_events", "status": 500, "times": 1})

    send_pending()
    meter = MeterReport.objects.get()
    assert meter.status == OutboxStatus.FAILED
    assert meter.error.startswith("APIError")
    meter_report_send(meter_report_id=meter.pk)

    meter.refresh_from_db()
    assert meter.status == OutboxStatus.SENT
    assert [e["payload"]["value"] for e in stripe_sandbox.meter_events()] == ["100"]


def test_the_sweep_evaluates_only_tenants_whose_usage_changed(tenant: Any) -> None:
    report(tenant, 100)
    assert usage_sweep(period=PERIOD) == [tenant.pk]
    assert usage_sweep(period=PERIOD) == []
    report(tenant, 1)
    assert usage_sweep(period=PERIOD) == [tenant.pk]
    assert UsagePeriod.objects.get().tokens_used == 101


def test_the_periodic_sweep_also_takes_late_reports_for_last_month(tenant: Any) -> None:
    import time_machine

    report(tenant, 10, period="2026-10")
    report(tenant, 20, period="2026-11")

    with time_machine.travel("2026-11-03 12:00:00+00:00", tick=False):
        assert usage_sweep() == [tenant.pk, tenant.pk]

    assert dict(UsagePeriod.objects.values_list("period", "tokens_used")) == {"2026-10": 10, "2026-11": 20}
