"""The rows most tests start from, made with factory_boy: a tenant, a server, an order,
each valid with no arguments and unique per call, and a whole fleet in one statement."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import factory
from django.utils import timezone

from provisioning.models import Order, Server, ServerProvider, ServerStatus
from tenants.models import Tenant, TenantContainers, TenantStatus


class ServerFactory(factory.django.DjangoModelFactory[Server]):
    class Meta:
        model = Server

    provider = ServerProvider.NETCUP
    region = "eu"
    tier = "build"
    status = ServerStatus.AVAILABLE
    # Loopback addresses nothing listens on: a test that needs a real host takes a sandbox one.
    ipv4 = factory.Sequence(lambda n: f"127.0.{50 + n // 250 % 50}.{n % 250 + 1}")
    ssh_port = 22


class TenantFactory(factory.django.DjangoModelFactory[Tenant]):
    class Meta:
        model = Tenant

    domain = factory.Sequence(lambda n: f"tenant-{n}.example.test")
    status = TenantStatus.ACTIVE


class OrderFactory(factory.django.DjangoModelFactory[Order]):
    class Meta:
        model = Order

    domain = factory.Sequence(lambda n: f"order-{n}.example.test")
    region = "eu"
    plan = "build"


def healthy_fleet(count: int, **fields: Any) -> list[Tenant]:
    """`count` ACTIVE tenants with registered agents, all well, written in bulk."""
    now = timezone.now()
    containers = fields.pop("containers", [{"name": "nextcloud", "state": "running", "health": "healthy"}])
    healthy: dict[str, Any] = {
        "registered_at": now - timedelta(days=3),
        "heartbeat_interval": 60,
        "last_heartbeat_at": now,
        "disk_percent": 40.0,
        "memory_percent": 50.0,
        "tls_expires_at": now + timedelta(days=60),
    }
    tenants = Tenant.objects.bulk_create(TenantFactory.build_batch(count, **{**healthy, **fields}), batch_size=2000)
    TenantContainers.objects.bulk_create([TenantContainers(tenant=t, containers=containers) for t in tenants])
    return tenants


def containers_report(tenants: Iterable[Tenant | int], containers: list[Any]) -> None:
    """The containers these tenants' agents reported last, as the heartbeat flush leaves them."""
    for tenant in tenants:
        TenantContainers.objects.update_or_create(
            tenant_id=tenant if isinstance(tenant, int) else tenant.pk, defaults={"containers": containers}
        )


def ago(**delta: float) -> Any:
    return timezone.now() - timedelta(**delta)
