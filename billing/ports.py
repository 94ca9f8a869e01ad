"""What billing uses of the floors below it, in one list: billing decides *that* a
tenant is suspended, resumed or deprovisioned, and that a paid checkout becomes an
order; the tenants and provisioning apps own *how*. Billing's code calls these names
(and its tests replace them here) instead of reaching into the other apps."""

from __future__ import annotations

from datetime import datetime

from provisioning import catalog
from provisioning.models import Order
from provisioning.selectors import tenant_for_subscription as _tenant_for_subscription
from provisioning.services import deprovision, orders
from tenants.selectors import final_backup_confirmed
from tenants.services import lifecycle

ACTOR = "billing"


def tenant_for_subscription(*, stripe_subscription_id: str, domain: str) -> int | None:
    return _tenant_for_subscription(stripe_subscription_id=stripe_subscription_id, domain=domain)


def tenant_suspend(*, tenant_id: int, reason: str) -> None:
    """Suspend the tenant: its status and the agent's `suspend` command."""
    lifecycle.tenant_suspend(tenant_id=tenant_id, actor=ACTOR, reason=reason)


def tenant_resume(*, tenant_id: int, reason: str) -> None:
    """Resume a suspended tenant: its status and the agent's `resume` command."""
    lifecycle.tenant_resume(tenant_id=tenant_id, actor=ACTOR, reason=reason)


def tenant_final_backup_confirmed(*, tenant_id: int, since: datetime) -> bool:
    return final_backup_confirmed(tenant_id=tenant_id, since=since)


def tenant_deprovision_start(*, tenant_id: int, reason: str) -> None:
    """Start the deprovisioning job (DNS removed, server wiped and returned to the pool
    or deleted at Hetzner); idempotent per tenant on the provisioning side."""
    deprovision.tenant_deprovision_start(tenant_id=tenant_id, reason=reason, actor=ACTOR)


def order_create_from_checkout(
    *,
    plan: str,
    region: str,
    domain: str,
    tools: list[str],
    customer_email: str,
    stripe_customer_id: str,
    stripe_subscription_id: str,
    source_event_id: str,
) -> Order:
    """Provisioning's entry point for a paid checkout: validates, creates the order
    (PAYMENT_CONFIRMED and provisioning started, or FAILED with the reason and staff
    alerted); idempotent per source event."""
    return orders.order_create_from_checkout(
        plan=plan,
        region=region,
        domain=domain,
        tools=tools,
        customer_email=customer_email,
        stripe_customer_id=stripe_customer_id,
        stripe_subscription_id=stripe_subscription_id,
        source_event_id=source_event_id,
    )


def order_request_errors(*, plan: str, region: str, domain: str, tools: list[str]) -> list[str]:
    """Why an order could not be provisioned (empty when it can): the catalog's checks
    and whether the domain is already taken."""
    errors = catalog.validate_order_request(plan, region, domain, tools)
    if not errors and orders.domain_taken(domain):
        errors.append(f"domain {domain} is already taken")
    return errors


def plan_token_pool(*, plan: str) -> int:
    return catalog.token_pool(plan)
