"""Tenant health reaches the customer as FACTS.md says: a MEDIUM problem after three
failed checks in a row, a HARD one at once, each once per episode."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hub.models import CustomerNotice
from monitoring.models import HubPresence
from monitoring.services.customer_notices import health_notices_send
from monitoring.services.health import check_disk, check_heartbeats
from provisioning.models import Order
from tenants.models import Tenant
from tests.factories import healthy_fleet

pytestmark = pytest.mark.django_db


def notices_of(tenant: Tenant) -> list[str]:
    return list(
        CustomerNotice.objects.filter(subject_type="tenant", subject_id=str(tenant.pk))
        .order_by("id")
        .values_list("kind", flat=True)
    )


def with_customer(tenant: Tenant) -> Tenant:
    Order.objects.create(domain=tenant.domain, tenant=tenant, customer_email=f"owner@{tenant.domain}")
    return tenant


def test_a_medium_problem_reaches_the_customer_after_three_failures_once_per_episode() -> None:
    full, fine = (with_customer(t) for t in healthy_fleet(2))
    Tenant.objects.filter(pk=full.pk).update(disk_percent=97.0)

    seen = []
    for _ in range(4):
        check_disk()
        health_notices_send()
        seen.append(notices_of(full))

    assert seen == [[], [], ["health_disk_high"], ["health_disk_high"]]
    assert notices_of(fine) == []
    notice = CustomerNotice.objects.get(subject_id=str(full.pk))
    assert notice.recipient == f"owner@{full.domain}" and "disk" in notice.subject

    # the disk is cleaned (the episode ends), then fills again: a new episode, told again
    Tenant.objects.filter(pk=full.pk).update(disk_percent=40.0)
    check_disk()
    Tenant.objects.filter(pk=full.pk).update(disk_percent=97.0)
    for _ in range(2):
        check_disk()
        health_notices_send()
    assert notices_of(full) == ["health_disk_high"]
    check_disk()
    health_notices_send()
    assert notices_of(full) == ["health_disk_high", "health_disk_high"]


def test_a_hard_problem_reaches_the_customer_at_once_and_once() -> None:
    (silent,) = (with_customer(t) for t in healthy_fleet(1))
    healthy_fleet(3)  # the rest of the fleet heartbeats
    check_heartbeats()  # the Hub's first look starts the grace clock
    Tenant.objects.filter(pk=silent.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=2))
    HubPresence.objects.filter(pk=1).update(resumed_at=timezone.now() - timedelta(days=1))
    check_heartbeats()
    health_notices_send()
    health_notices_send()

    assert notices_of(silent) == ["health_heartbeat_stale"]
    assert CustomerNotice.objects.get(subject_id=str(silent.pk)).subject.startswith("Urgent: ")
