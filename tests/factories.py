"""The rows most tests start from, made with factory_boy: a tenant, a server, an order,
each valid with no arguments and unique per call, and a whole fleet in one statement."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from django.utils import timezone

from provisioning.models import Order, Server, ServerProvider, ServerStatus
from tenants.models import Tenant, TenantStatus


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
    """`count` ACTIVE tenants with registered agents, all well, in one statement."""
    now = timezone.now()
    healthy: dict[str, Any] = {
        "registered_at": now - timedelta(days=3),
        "heartbeat_interval": 60,
        "last_heartbeat_at": now,
        "disk_percent": 40.0,
        "memory_percent": 50.0,
        "containers": [{"name": "nextcloud", "state": "running", "health": "healthy"}],
        "tls_expires_at": now + timedelta(days=60),
    }
    tenants = TenantFactory.build_batch(count, **{**healthy, **fields})
    return Tenant.objects.bulk_create(tenants, batch_size=2000)


def ago(**delta: float) -> Any:
    return timezone.now() - timedelta(**delta)
