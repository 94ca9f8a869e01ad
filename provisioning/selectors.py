"""Reads of orders and servers, shaped for their callers: each a constant number of
queries."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from hub.pipeline.selectors import steps_in_order
from provisioning.models import Order
from tenants.models import Tenant, TenantStatus


def orders_with_steps() -> QuerySet[Order]:
    """Orders with their job and its steps in order (the API and the admin timeline)."""
    steps = Prefetch("job__steps", queryset=steps_in_order())
    return Order.objects.select_related("job").prefetch_related(steps).order_by("-id")


def tenant_for_subscription(*, stripe_subscription_id: str, domain: str) -> int | None:
    """The live tenant a subscription pays for: through the order its checkout created
    (provisioning links the tenant to it). Only a subscription without any order (a
    tenant older than the checkout) is matched by its domain, and never to a tenant
    another subscription's order made: a refused order for a taken domain must not
    make its subscription's cancellation suspend and wipe the tenant that has it."""
    orders = Order.objects.filter(stripe_subscription_id=stripe_subscription_id)
    tenant_id = (
        orders.filter(tenant__isnull=False)
        .exclude(tenant__status=TenantStatus.DEPROVISIONED)
        .order_by("-id")
        .values_list("tenant_id", flat=True)
        .first()
    )
    if tenant_id is None and domain and not orders.exists():
        tenant_id = (
            Tenant.objects.filter(domain=domain)
            .exclude(status=TenantStatus.DEPROVISIONED)
            .exclude(orders__stripe_subscription_id__gt="")
            .values_list("id", flat=True)
            .first()
        )
    return tenant_id
