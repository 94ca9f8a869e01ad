"""Tenant lifecycle moves driven by provisioning and billing: activate once the agent
registered, and cut an agent off when its order is rolled back."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record
from hub.errors import DomainError
from tenants.models import RegistrationToken, Tenant, TenantStatus
from tenants.services import agent_key_revoke


@transaction.atomic
def tenant_activate(*, tenant_id: int, actor: str) -> Tenant:
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    if tenant.status == TenantStatus.ACTIVE:
        return tenant
    if tenant.status != TenantStatus.PROVISIONING:
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; only a provisioning tenant can be activated")
    old = tenant.status
    tenant.status = TenantStatus.ACTIVE
    tenant.save(update_fields=["status"])
    audit_record(
        actor=actor, action="tenant.status", object_type="tenant", object_id=tenant.pk, old=old, new=tenant.status
    )
    return tenant


@transaction.atomic
def agent_access_revoke(*, tenant_id: int, actor: str, reason: str) -> None:
    """Unused registration tokens expire now, keys are revoked, and a tenant that never
    went live is closed (its domain becomes free for a new order)."""
    now = timezone.now()
    RegistrationToken.objects.filter(tenant_id=tenant_id, used_at=None, expires_at__gt=now).update(expires_at=now)
    agent_key_revoke(tenant_id=tenant_id, actor=actor, reason=reason)
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    if tenant.status == TenantStatus.PROVISIONING:
        tenant.status = TenantStatus.DEPROVISIONED
        tenant.save(update_fields=["status"])
        audit_record(
            actor=actor,
            action="tenant.status",
            object_type="tenant",
            object_id=tenant.pk,
            old=TenantStatus.PROVISIONING,
            new=TenantStatus.DEPROVISIONED,
            reason=reason,
        )
