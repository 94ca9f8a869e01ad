"""Fixtures for the tenants app: tenants, registered agents and their keys, a clean
slate in Redis (only the tenants keys) and in each process's key cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants import keycache, redis_store
from tenants.models import Command, Tenant, TenantStatus
from tenants.services import agent_register, command_queue, registration_token_issue, tenant_create

HEARTBEAT: dict[str, Any] = {
    "disk_percent": 41.5,
    "memory_percent": 63.0,
    "load": 0.42,
    "uptime_seconds": 86400,
    "containers": [
        {"name": "nextcloud", "state": "running", "health": "healthy"},
        {"name": "ghost", "state": "running", "health": None},
    ],
    "versions": {"agent": "1.0.0", "nextcloud": "29.0.1"},
    "tls_expires_at": "2027-01-15T00:00:00Z",
}


@dataclass
class Agent:
    tenant: Tenant
    api_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.api_key}"}


@pytest.fixture(autouse=True)
def clean_fast_path() -> Iterator[None]:
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
def staff_api() -> APIClient:
    user = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def make_tenant() -> Callable[..., Tenant]:
    counter = iter(range(1, 1_000_000))

    def make(**kwargs: Any) -> Tenant:
        kwargs.setdefault("domain", f"tenant{next(counter)}.example.test")
        kwargs.setdefault("status", TenantStatus.ACTIVE)
        return tenant_create(**kwargs)

    return make


@pytest.fixture
def make_agent(make_tenant: Callable[..., Tenant]) -> Callable[..., Agent]:
    def make(**kwargs: Any) -> Agent:
        tenant = make_tenant(**kwargs)
        _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")
        tenant, api_key = agent_register(token=token, hostname=f"host-{tenant.pk}", agent_version="1.0.0")
        return Agent(tenant=tenant, api_key=api_key)

    return make


@pytest.fixture
def agent(make_agent: Callable[..., Agent]) -> Agent:
    return make_agent()


@pytest.fixture
def queue_command(django_capture_on_commit_callbacks: Any) -> Callable[..., Command]:
    """Queue a command as staff would, running its after-commit flagging."""

    def queue(tenant: Tenant, type: str = "restart", payload: dict[str, Any] | None = None, **kwargs: Any) -> Command:
        with django_capture_on_commit_callbacks(execute=True):
            return command_queue(tenant_id=tenant.pk, type=type, payload=payload or {}, actor="staff", **kwargs)

    return queue
