"""Billing's seam to the apps that own tenants and servers.

Billing decides *that* a tenant is suspended, resumed or deprovisioned; the tenants and
provisioning apps own *how*. Every call into them goes through this module, imported
lazily, so billing's own logic (and its tests) stand on their own and one place says
which functions of the other apps billing relies on."""

from __future__ import annotations

import importlib
import logging
from datetime import datetime
from typing import Any

from django.db import transaction

from hub.audit import audit_record

logger = logging.getLogger(__name__)

ACTOR = "billing"


class TenancyUnavailable(Exception):
    """The other app does not (yet) provide what billing needs; the caller retries."""


def tenant_for_subscription(*, stripe_subscription_id: str, domain: str) -> int | None:
    """The live tenant a subscription pays for: through the order its checkout created
    (provisioning links the tenant to it). Only a subscription without any order (a
    tenant older than the checkout) is matched by its domain, and never to a tenant
    another subscription's order made: a refused order for a taken domain must not
    make its subscription's cancellation suspend and wipe the tenant that has it."""
    try:
        from provisioning.models import Order
        from tenants.models import Tenant, TenantStatus
    except ImportError:
        return None
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


def _tenant_function(name: str) -> Any:
    """The tenants app's own function for a lifecycle move, where it offers one."""
    for module_name in ("tenants.lifecycle", "tenants.services"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        function = getattr(module, name, None)
        if function is not None:
            return function
    return None


def _tenant_move(*, tenant_id: int, command: str, from_status: str, to_status: str, reason: str) -> None:
    """Until the tenants app offers `tenant_suspend` / `tenant_resume`: the status move
    and the agent's command, with the tenants app's own command service, in one
    transaction. A tenant still provisioning keeps its status and gets the command
    (its agent runs it once it registers); one already in the target state or gone
    is left alone, so calling this twice does nothing more."""
    try:
        from tenants.models import Tenant, TenantStatus
        from tenants.services import command_queue
    except ImportError as exc:
        raise TenancyUnavailable("tenants.services.command_queue is not available") from exc
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().filter(pk=tenant_id).first()
        if tenant is None or tenant.status not in (from_status, TenantStatus.PROVISIONING):
            logger.info("tenant %s is %s: no %s", tenant_id, getattr(tenant, "status", "gone"), command)
            return
        command_queue(tenant_id=tenant_id, type=command, payload={"reason": reason}, actor=ACTOR)
        if tenant.status == from_status:
            tenant.status = to_status
            tenant.save(update_fields=["status"])
            audit_record(
                actor=ACTOR,
                action="tenant.status",
                object_type="tenant",
                object_id=tenant_id,
                old=from_status,
                new=to_status,
                reason=reason,
            )


def tenant_suspend(*, tenant_id: int, reason: str) -> None:
    """Suspend the tenant: its status and the agent's `suspend` command."""
    function = _tenant_function("tenant_suspend")
    if function is not None:
        function(tenant_id=tenant_id, actor=ACTOR, reason=reason)
        return
    from tenants.models import TenantStatus

    _tenant_move(
        tenant_id=tenant_id,
        command="suspend",
        from_status=TenantStatus.ACTIVE,
        to_status=TenantStatus.SUSPENDED,
        reason=reason,
    )


def tenant_resume(*, tenant_id: int, reason: str) -> None:
    """Resume a suspended tenant: its status and the agent's `resume` command."""
    function = _tenant_function("tenant_resume")
    if function is not None:
        function(tenant_id=tenant_id, actor=ACTOR, reason=reason)
        return
    from tenants.models import TenantStatus

    _tenant_move(
        tenant_id=tenant_id,
        command="resume",
        from_status=TenantStatus.SUSPENDED,
        to_status=TenantStatus.ACTIVE,
        reason=reason,
    )


def tenant_final_backup_confirmed(*, tenant_id: int, since: datetime) -> bool:
    """A backup that ran after the tenant was suspended succeeded for every database and
    its off-site copy was uploaded: the data the customer left is safe before the
    server is wiped (a copy that stayed on the server is wiped with it)."""
    try:
        from tenants.models import BackupOutcome, BackupReport
    except ImportError as exc:
        raise TenancyUnavailable("tenants.models.BackupReport is not available") from exc
    return BackupReport.objects.filter(
        tenant_id=tenant_id, last_run__gte=since, outcome=BackupOutcome.SUCCESS, remote_sync__status="success"
    ).exists()


def tenant_deprovision_start(*, tenant_id: int, reason: str) -> None:
    """Start the deprovisioning job (DNS removed, server wiped and returned to the pool
    or deleted at Hetzner); idempotent per tenant on the provisioning side."""
    try:
        from provisioning.services.deprovision import tenant_deprovision_start as start
    except ImportError as exc:
        raise TenancyUnavailable("provisioning.services.deprovision is not available") from exc
    start(tenant_id=tenant_id, reason=reason)


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
) -> Any:
    """Provisioning's entry point for a paid checkout: validates, creates the order
    (PAYMENT_CONFIRMED and provisioning started, or FAILED with the reason and staff
    alerted); idempotent per source event."""
    try:
        from provisioning.services.orders import order_create_from_checkout as create
    except ImportError as exc:
        raise TenancyUnavailable("provisioning.services.orders is not available") from exc
    return create(
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
    and, where provisioning offers it, whether the domain is already taken."""
    from provisioning import catalog

    errors = catalog.validate_order_request(plan, region, domain, tools)
    if errors:
        return errors
    try:
        from provisioning.services.orders import domain_taken
    except ImportError:
        return errors
    if domain_taken(domain):
        errors.append(f"domain {domain} is already taken")
    return errors


def plan_token_pool(*, plan: str) -> int:
    from provisioning import catalog

    return catalog.token_pool(plan)
