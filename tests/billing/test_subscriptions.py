"""Plan changes and the inbox's safety net."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from billing.models import EventStatus, Notice, StaffTask, StaffTaskStatus, StripeEvent, Subscription
from billing.services.events import stripe_events_requeue
from billing.services.subscriptions import staff_task_complete
from hub.errors import DomainError
from sandbox import stripe_events as se
from tests.billing.conftest import FakeTenancy
from tests.factories import OrderFactory, TenantFactory

pytestmark = pytest.mark.django_db

IDS: dict[str, Any] = {"subscription_id": "sub_tier", "customer_id": "cus_tier"}


def test_a_tier_change_is_recorded_and_opens_one_staff_task(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    t = int(time.time()) - 100
    deliver_and_process(se.checkout_session_completed(plan="build", domain="tier.example.com", created=t, **IDS))

    deliver_and_process(se.subscription_updated(created=t + 10, plan="scale", status="active", **IDS))
    deliver_and_process(se.subscription_updated(created=t + 20, plan="scale", status="active", **IDS))

    subscription = Subscription.objects.get()
    assert (subscription.plan, subscription.provisioned_plan, subscription.status) == ("scale", "build", "active")
    task = StaffTask.objects.get()
    assert (task.kind, task.status, task.details["from"], task.details["to"]) == (
        "tier_change",
        "OPEN",
        "build",
        "scale",
    )
    assert Notice.objects.filter(kind="tier_change", audience="staff").count() == 1
    # Nothing was moved automatically.
    assert fake_tenancy.calls == []

    staff_task_complete(task_id=task.pk, actor="ops")
    deliver_and_process(se.subscription_updated(created=t + 30, plan="scale", status="active", **IDS))

    subscription.refresh_from_db()
    assert subscription.provisioned_plan == "scale"
    assert StaffTask.objects.get().status == StaffTaskStatus.DONE
    with pytest.raises(DomainError):
        staff_task_complete(task_id=task.pk, actor="ops")


def test_the_period_and_cancellation_flag_come_from_the_subscription_object(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    start = int(time.time()) - 100

    deliver_and_process(
        se.subscription_updated(
            plan="lite", status="active", period_start=start, period_end=start + 3600, cancel_at_period_end=True, **IDS
        )
    )

    subscription = Subscription.objects.get()
    assert subscription.current_period_end is not None
    assert int(subscription.current_period_end.timestamp()) == start + 3600
    assert subscription.cancel_at_period_end is True
    assert subscription.plan == "lite"


def test_lost_and_stuck_events_are_rung_again(deliver: Callable[..., Any], settings: Any) -> None:
    settings.BILLING_EVENT_LOST_AFTER = 60
    settings.BILLING_EVENT_LEASE_SECONDS = 300
    waiting, stuck, done = (se.event("charge.refunded", {"id": f"ch_{i}"}) for i in range(3))
    for event in (waiting, stuck, done):
        assert deliver(event).status_code == 200
    StripeEvent.objects.filter(stripe_event_id=stuck["id"]).update(
        status=EventStatus.HANDLER_STARTED, handler_started_at=timezone.now()
    )
    StripeEvent.objects.filter(stripe_event_id=done["id"]).update(status=EventStatus.SUCCEEDED)

    assert stripe_events_requeue() == []
    with time_machine.travel(timezone.now() + timedelta(seconds=90), tick=False):
        requeued = stripe_events_requeue()
    assert requeued == [StripeEvent.objects.get(stripe_event_id=waiting["id"]).pk]
    with time_machine.travel(timezone.now() + timedelta(seconds=400), tick=False):
        requeued = stripe_events_requeue()
    rows = {row.stripe_event_id: row for row in StripeEvent.objects.all()}
    assert sorted(requeued) == sorted([rows[waiting["id"]].pk, rows[stuck["id"]].pk])
    assert rows[stuck["id"]].status == EventStatus.FAILED
    assert "stopped before it finished" in rows[stuck["id"]].error


def test_the_tenant_is_found_through_the_order_of_the_subscription() -> None:
    pytest.importorskip("provisioning.services.orders")
    from billing import ports

    tenant = TenantFactory.create(domain="by-order.example.com")
    OrderFactory.create(domain="by-order.example.com", stripe_subscription_id="sub_by_order", tenant=tenant)

    found = ports.tenant_for_subscription(stripe_subscription_id="sub_by_order", domain="")

    assert found == tenant.pk
