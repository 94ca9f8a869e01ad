"""The cast of the security tests: two tenants with registered agents (A has a queued
command), an order with its provisioning job, a release with a DRAFT rollout, and the
people who may or may not call the API: staff and non-staff users with DRF tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from provisioning.models import Order
from provisioning.services.orders import order_create
from rollouts.models import Release, Rollout
from rollouts.services import release_create, rollout_create
from tenants import keycache, redis_store
from tenants.models import Command, Tenant, TenantStatus
from tenants.services import agent_register, command_queue, registration_token_issue, tenant_create

PASSWORD = "correct horse battery staple"


@dataclass
class World:
    tenant_a: Tenant
    key_a: str
    tenant_b: Tenant
    key_b: str
    command_a: Command
    order: Order
    release: Release
    rollout: Rollout
    staff: User
    staff_token: str
    user: User
    user_token: str

    def object_id(self, kind: str) -> int | str:
        assert self.order.job_id is not None  # the world's order has its job (asserted when made)
        ids: dict[str, int | str] = {
            "tenant": self.tenant_a.pk,
            "command": str(self.command_a.pk),
            "order": self.order.pk,
            "job": self.order.job_id,
            "release": self.release.pk,
            "rollout": self.rollout.pk,
        }
        return ids[kind]


@pytest.fixture(autouse=True)
def clean_fast_path() -> Iterator[None]:
    """The agent API's Redis keys and each process's key cache start empty."""

    def clear() -> None:
        client = redis_store.client()
        keys = list(client.scan_iter(match=redis_store.PREFIX + "*", count=1000))
        if keys:
            client.delete(*keys)
        keycache.reset()

    clear()
    yield
    clear()


@pytest.fixture
def no_throttles(settings: Any) -> None:
    settings.AGENT_THROTTLE_RATE = "100000/minute"
    settings.AGENT_REGISTER_THROTTLE_RATE = "100000/minute"
    settings.BILLING_CHECKOUT_RATE = "100000/minute"


def registered_agent(domain: str) -> tuple[Tenant, str]:
    tenant = tenant_create(domain=domain, status=TenantStatus.ACTIVE)
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")
    return agent_register(token=token, hostname=f"host-{tenant.pk}", agent_version="1.0.0")


@pytest.fixture
def world(db: None, no_throttles: None) -> World:
    tenant_a, key_a = registered_agent("alpha-secret-tenant.example.test")
    tenant_b, key_b = registered_agent("bravo.example.test")
    command_a = command_queue(tenant_id=tenant_a.pk, type="restart", payload={}, actor="staff")
    order = order_create(plan="build", region="eu", domain="order-a.example.test", tools=[], actor="test")
    assert order.job_id is not None, order.failure_reason
    release = release_create(
        component="openclaw",
        version="1.1.0",
        image="registry.example.test/openclaw:1.1.0@sha256:" + "b" * 64,
        actor="t",
    )
    rollout = rollout_create(release_id=release.pk, actor="test")
    users = get_user_model().objects
    staff = users.create_user("sec-staff", password=PASSWORD, is_staff=True)
    user = users.create_user("sec-user", password=PASSWORD)
    return World(
        tenant_a=tenant_a,
        key_a=key_a,
        tenant_b=tenant_b,
        key_b=key_b,
        command_a=command_a,
        order=order,
        release=release,
        rollout=rollout,
        staff=staff,
        staff_token=Token.objects.create(user=staff).key,
        user=user,
        user_token=Token.objects.create(user=user).key,
    )
