"""Dunning on the clock (time moved with time-machine): unpaid past the grace period
-> suspended; paid -> resumed; cancelled -> suspended at once and deprovisioned after
the retention period, once a final backup is confirmed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from billing import ports
from billing.models import Notice, StripeEvent, Subscription, SuspensionReason
from billing.services.dunning import dunning_enforce
from sandbox import stripe_events as se
from tests.billing.conftest import FakeTenancy
from tests.factories import OrderFactory, ServerFactory, TenantFactory

STAFF = "billing-staff@example.com"

pytestmark = pytest.mark.django_db

IDS: dict[str, Any] = {"subscription_id": "sub_dunning", "customer_id": "cus_dunning"}
TENANT = 4242


@pytest.fixture
def paying_subscription(
    deliver_and_process: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> Callable[..., StripeEvent]:
    fake_tenancy.tenants = {IDS["subscription_id"]: TENANT}
    deliver_and_process(se.checkout_session_completed(domain="dunning.example.com", email="pay@example.com", **IDS))
    return deliver_and_process


def notices(kind: str) -> list[tuple[str, str]]:
    return sorted(Notice.objects.filter(kind=kind).values_list("audience", "recipient"))


def test_unpaid_past_the_grace_period_suspends_and_paying_resumes(
    paying_subscription: Callable[..., StripeEvent], fake_tenancy: FakeTenancy, settings: Any
) -> None:
    settings.BILLING_GRACE_PERIOD_DAYS = 7
    start = timezone.now()

    paying_subscription(se.invoice_payment_failed(**IDS))
    paying_subscription(se.invoice_payment_failed(attempt_count=2, created=int(start.timestamp()) + 60, **IDS))

    subscription = Subscription.objects.get()
    assert subscription.status == "past_due"
    assert subscription.past_due_since is not None
    # Customer and staff are told once, for the first failure.
    assert notices("payment_failed") == [("customer", "pay@example.com"), ("staff", STAFF)]
    assert dunning_enforce().suspended == []

    with time_machine.travel(start + timedelta(days=6, hours=23), tick=False):
        assert dunning_enforce().suspended == []
    assert fake_tenancy.of("suspend") == []

    with time_machine.travel(start + timedelta(days=7, minutes=1), tick=False):
        assert dunning_enforce().suspended == [subscription.pk]
        assert dunning_enforce().suspended == []
        subscription.refresh_from_db()
        assert subscription.suspension_reason == SuspensionReason.UNPAID
        assert fake_tenancy.of("suspend") == [TENANT]
        assert len(notices("suspended")) == 2

        row = paying_subscription(se.invoice_paid(**IDS))

    assert row.status == "SUCCEEDED"
    subscription.refresh_from_db()
    assert (subscription.status, subscription.suspended_at, subscription.past_due_since) == ("active", None, None)
    assert fake_tenancy.of("resume") == [TENANT]
    assert notices("resumed") == [("customer", "pay@example.com")]


def test_paid_within_the_grace_period_never_suspends(
    paying_subscription: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    start = timezone.now()
    paying_subscription(se.invoice_payment_failed(**IDS))
    with time_machine.travel(start + timedelta(days=3), tick=False):
        paying_subscription(se.invoice_paid(**IDS))
    with time_machine.travel(start + timedelta(days=8), tick=False):
        assert dunning_enforce().suspended == []
    assert fake_tenancy.of("suspend") == [] and fake_tenancy.of("resume") == []


def test_cancelled_suspends_at_once_and_deprovisions_after_retention(
    paying_subscription: Callable[..., StripeEvent], fake_tenancy: FakeTenancy, settings: Any
) -> None:
    settings.BILLING_RETENTION_DAYS = 30
    start = timezone.now()

    paying_subscription(se.subscription_deleted(plan="build", **IDS))

    subscription = Subscription.objects.get()
    assert subscription.status == "canceled"
    assert subscription.suspension_reason == SuspensionReason.CANCELED
    assert fake_tenancy.of("suspend") == [TENANT]
    assert subscription.deprovision_due_at is not None
    assert abs(subscription.deprovision_due_at - (start + timedelta(days=30))) < timedelta(seconds=5)

    with time_machine.travel(start + timedelta(days=29), tick=False):
        assert dunning_enforce().deprovisioned == []
    assert fake_tenancy.of("deprovision") == []

    with time_machine.travel(start + timedelta(days=30, minutes=1), tick=False):
        # No backup since the suspension is on record: staff are told, nothing is wiped.
        fake_tenancy.backup_confirmed = False
        report = dunning_enforce()
        assert (report.deprovisioned, report.waiting) == ([], [subscription.pk])
        dunning_enforce()
        assert notices("final_backup_missing") == [("staff", STAFF)]
        assert fake_tenancy.of("deprovision") == []

        fake_tenancy.backup_confirmed = True
        assert dunning_enforce().deprovisioned == [subscription.pk]
        assert dunning_enforce().deprovisioned == []

    assert fake_tenancy.of("backup_check")[-1] == TENANT
    assert fake_tenancy.of("deprovision") == [TENANT]
    subscription.refresh_from_db()
    assert subscription.deprovision_started_at is not None
    # Paying an old invoice late does not bring a cancelled tenant back.
    paying_subscription(se.invoice_paid(**IDS))
    assert fake_tenancy.of("resume") == []


def test_the_deprovisioning_job_is_started_through_provisioning_once() -> None:
    from hub.pipeline.models import Job
    from provisioning.models import ServerProvider, ServerStatus
    from tenants.models import TenantStatus

    server = ServerFactory.create(
        provider=ServerProvider.NETCUP, region="eu", tier="build", ipv4="127.0.90.1", status=ServerStatus.ALLOCATED
    )
    tenant = TenantFactory.create(domain="leaving.example.com", status=TenantStatus.SUSPENDED, server=server)

    ports.tenant_deprovision_start(tenant_id=tenant.pk, reason="retention over")
    ports.tenant_deprovision_start(tenant_id=tenant.pk, reason="retention over")

    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.DEPROVISIONING
    (job,) = Job.objects.filter(pipeline="deprovision_tenant", subject_type="tenant", subject_id=str(tenant.pk))
    assert [s.name for s in job.steps.order_by("position")] == ["remove_dns", "wipe_server", "release_server", "finish"]
    assert job.context["reason"] == "retention over"


def test_suspend_and_resume_reach_the_tenant_and_its_agent() -> None:
    pytest.importorskip("tenants.services")
    from tenants.models import TenantStatus

    tenant = TenantFactory.create(domain="suspend-me.example.com")

    ports.tenant_suspend(tenant_id=tenant.pk, reason="unpaid")
    ports.tenant_suspend(tenant_id=tenant.pk, reason="unpaid")
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.SUSPENDED
    assert tenant.commands.filter(type="suspend").count() == 1

    ports.tenant_resume(tenant_id=tenant.pk, reason="paid")
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.ACTIVE
    assert tenant.commands.filter(type="resume").count() == 1


def test_the_tenant_of_a_subscription_is_found_by_its_domain() -> None:

    tenant = TenantFactory.create(domain="found.example.com")
    TenantFactory.create(domain="other.example.com")

    found = ports.tenant_for_subscription(stripe_subscription_id="sub_unknown", domain="found.example.com")

    assert found == tenant.pk


def test_a_tenant_another_subscription_ordered_is_never_found_by_its_domain() -> None:
    from provisioning.models import OrderStatus

    tenant = TenantFactory.create(domain="ordered.example.com")
    OrderFactory.create(
        domain="ordered.example.com", stripe_subscription_id="sub_owner", tenant=tenant, status=OrderStatus.FULFILLED
    )

    found = ports.tenant_for_subscription(stripe_subscription_id="sub_no_order", domain="ordered.example.com")

    assert found is None


def test_a_tenant_found_after_the_suspension_is_suspended_by_the_next_check(
    paying_subscription: Callable[..., StripeEvent], fake_tenancy: FakeTenancy
) -> None:
    fake_tenancy.tenants = {}
    paying_subscription(se.subscription_deleted(plan="build", **IDS))
    assert fake_tenancy.of("suspend") == []

    fake_tenancy.tenants = {IDS["subscription_id"]: TENANT}
    dunning_enforce()
    dunning_enforce()

    assert fake_tenancy.of("suspend") == [TENANT]
    assert Subscription.objects.get().tenant_id == TENANT


def test_one_failing_subscription_does_not_stop_the_check_for_the_others(
    paying_subscription: Callable[..., StripeEvent], fake_tenancy: FakeTenancy, monkeypatch: pytest.MonkeyPatch
) -> None:
    other: dict[str, Any] = {"subscription_id": "sub_other", "customer_id": "cus_other"}
    fake_tenancy.tenants[other["subscription_id"]] = TENANT + 1
    paying_subscription(se.subscription_deleted(plan="build", **IDS))
    paying_subscription(se.subscription_deleted(plan="build", **other))

    def deprovision(*, tenant_id: int, reason: str) -> None:
        if tenant_id == TENANT:
            raise ConnectionError("provisioning.services.deprovision is not available")
        fake_tenancy.calls.append(("deprovision", tenant_id, reason))

    monkeypatch.setattr(ports, "tenant_deprovision_start", deprovision)
    with time_machine.travel(timezone.now() + timedelta(days=31), tick=False):
        report = dunning_enforce()

    first = Subscription.objects.get(stripe_subscription_id=IDS["subscription_id"])
    assert list(report.errors) == [first.pk]
    assert fake_tenancy.of("deprovision") == [TENANT + 1]
    first.refresh_from_db()
    assert first.deprovision_started_at is None


@pytest.mark.parametrize("owner_ordered", [True, False], ids=["owner-has-an-order", "owner-predates-orders"])
def test_a_refused_order_for_a_taken_domain_never_suspends_the_tenant_that_has_it(
    deliver_and_process: Callable[..., StripeEvent], owner_ordered: bool
) -> None:
    """Someone pays for a domain another customer's tenant has: the order is refused.
    When that subscription is then cancelled, the other customer's tenant must not be
    taken for its tenant (found by the domain) and suspended, then wiped."""
    pytest.importorskip("provisioning.services.orders")
    from provisioning.models import Order, OrderStatus
    from tenants.models import TenantStatus

    owner = TenantFactory.create(domain="owned.example.com")
    if owner_ordered:
        OrderFactory.create(
            domain="owned.example.com", stripe_subscription_id="sub_owner", tenant=owner, status=OrderStatus.FULFILLED
        )
    ids: dict[str, Any] = {"subscription_id": "sub_intruder", "customer_id": "cus_intruder"}
    checkout = deliver_and_process(se.checkout_session_completed(domain="owned.example.com", **ids))
    assert Order.objects.get(source_event_id=checkout.stripe_event_id).status == OrderStatus.FAILED

    deliver_and_process(se.subscription_deleted(created=checkout.created + 60, plan="build", **ids))
    with time_machine.travel(timezone.now() + timedelta(days=31), tick=False):
        dunning_enforce()

    owner.refresh_from_db()
    assert owner.status == TenantStatus.ACTIVE
    assert not owner.commands.exists()
    subscription = Subscription.objects.get(stripe_subscription_id="sub_intruder")
    assert subscription.tenant_id is None and subscription.is_suspended


UPLOADED = {"status": "success", "uploaded_mb": 230}


def backup(tenant: Any, *, last_run: Any, outcome: str, remote_sync: dict[str, Any] | None = UPLOADED) -> None:
    import uuid

    from tenants.models import BackupReport

    BackupReport.objects.create(
        tenant=tenant,
        report_id=uuid.uuid4(),
        last_run=last_run,
        duration_seconds=60,
        outcome=outcome,
        remote_sync=remote_sync,
    )


def test_the_final_backup_counts_only_a_successful_uploaded_one_since_the_suspension() -> None:
    from tenants.models import BackupOutcome, TenantStatus

    tenant = TenantFactory.create(domain="backed-up.example.com", status=TenantStatus.SUSPENDED)
    other = TenantFactory.create(domain="neighbour.example.com")
    since = timezone.now() - timedelta(days=10)

    def confirmed() -> bool:
        return ports.tenant_final_backup_confirmed(tenant_id=tenant.pk, since=since)

    assert confirmed() is False  # no backup at all
    backup(tenant, last_run=since - timedelta(minutes=1), outcome=BackupOutcome.SUCCESS)
    assert confirmed() is False  # before the suspension
    backup(tenant, last_run=since + timedelta(days=1), outcome=BackupOutcome.PARTIAL)
    backup(tenant, last_run=since + timedelta(days=2), outcome=BackupOutcome.FAILED)
    backup(other, last_run=since + timedelta(days=3), outcome=BackupOutcome.SUCCESS)
    assert confirmed() is False  # since then: failed databases, or another tenant's
    backup(tenant, last_run=since + timedelta(days=3), outcome=BackupOutcome.SUCCESS, remote_sync=None)
    backup(
        tenant,
        last_run=since + timedelta(days=3),
        outcome=BackupOutcome.SUCCESS,
        remote_sync={"status": "failed", "error": "connection refused"},
    )
    assert confirmed() is False  # only on the server that is about to be wiped
    backup(tenant, last_run=since + timedelta(days=4), outcome=BackupOutcome.SUCCESS)
    assert confirmed() is True


def test_deprovisioning_after_retention_waits_for_a_real_final_backup(
    deliver_and_process: Callable[..., StripeEvent], settings: Any
) -> None:
    """The real tenancy seam end to end: the cancelled tenant is suspended, and after the
    retention period its server is wiped only once a successful backup taken after the
    suspension is on record."""
    from hub.pipeline.models import Job
    from provisioning.models import OrderStatus, ServerProvider, ServerStatus
    from tenants.models import BackupOutcome, TenantStatus

    settings.BILLING_RETENTION_DAYS = 30
    server = ServerFactory.create(
        provider=ServerProvider.NETCUP, region="eu", tier="build", ipv4="127.0.90.2", status=ServerStatus.ALLOCATED
    )
    tenant = TenantFactory.create(domain="retained.example.com", server=server)
    ids: dict[str, Any] = {"subscription_id": "sub_retained", "customer_id": "cus_retained"}
    OrderFactory.create(
        domain=tenant.domain, stripe_subscription_id=ids["subscription_id"], tenant=tenant, status=OrderStatus.FULFILLED
    )
    deliver_and_process(se.subscription_created(plan="build", **ids))
    deliver_and_process(se.subscription_deleted(plan="build", **ids))
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.SUSPENDED
    subscription = Subscription.objects.get()
    suspended_at = subscription.suspended_at
    assert suspended_at is not None and subscription.tenant_id == tenant.pk

    def deprovisioning_jobs() -> int:
        return Job.objects.filter(pipeline="deprovision_tenant", subject_id=str(tenant.pk)).count()

    with time_machine.travel(suspended_at + timedelta(days=30, hours=1), tick=False):
        backup(tenant, last_run=suspended_at - timedelta(hours=2), outcome=BackupOutcome.SUCCESS)
        backup(tenant, last_run=suspended_at + timedelta(days=1), outcome=BackupOutcome.PARTIAL)
        report = dunning_enforce()
        assert (report.deprovisioned, report.waiting) == ([], [subscription.pk])
        assert deprovisioning_jobs() == 0
        assert notices("final_backup_missing") == [("staff", STAFF)]

        backup(tenant, last_run=suspended_at + timedelta(days=2), outcome=BackupOutcome.SUCCESS)
        assert dunning_enforce().deprovisioned == [subscription.pk]

    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.DEPROVISIONING
    assert deprovisioning_jobs() == 1
