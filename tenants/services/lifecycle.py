"""The tenant's state machine: every move of a tenant's status is made here, checked
against TENANT_TRANSITIONS and audited (hub.audit.status_move). Provisioning and
billing ask for a move; they never write the status themselves.

    PROVISIONING -> ACTIVE <-> SUSPENDED
         |            \\          /
         +-------> DEPROVISIONING -> DEPROVISIONED
         (a tenant that never went live is closed straight to DEPROVISIONED)
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record, status_move
from hub.errors import DomainError
from tenants.models import TENANT_TRANSITIONS, Command, CommandType, RegistrationToken, Tenant, TenantStatus
from tenants.services.agents import agent_key_revoke
from tenants.services.commands import command_queue


@transaction.atomic
def tenant_create(
    *,
    domain: str,
    plan: str = "build",
    region: str = "eu",
    server_id: int | None = None,
    is_internal: bool = False,
    status: str = TenantStatus.PROVISIONING,
    versions: dict[str, str] | None = None,
    actor: str = "system",
) -> Tenant:
    """`versions` (component -> version): what provisioning installs, so rollouts
    select the tenant correctly before its agent has reported anything."""
    tenant = Tenant.objects.create(
        domain=domain.lower(),
        versions=dict(versions or {}),
        plan=plan,
        region=region,
        server_id=server_id,
        is_internal=is_internal,
        status=status,
        heartbeat_interval=settings.AGENT_HEARTBEAT_INTERVAL,
    )
    audit_record(
        actor=actor,
        action="tenant.create",
        object_type="tenant",
        object_id=tenant.pk,
        new={"domain": tenant.domain, "status": status, **({"versions": tenant.versions} if versions else {})},
    )
    return tenant


def _move(tenant: Tenant, new: str, *, actor: str, reason: str = "") -> bool:
    return status_move(tenant, new, actor=actor, reason=reason, transitions=TENANT_TRANSITIONS)


def _locked(tenant_id: int) -> Tenant | None:
    return Tenant.objects.select_for_update().filter(pk=tenant_id).first()


@transaction.atomic
def tenant_activate(*, tenant_id: int, actor: str) -> Tenant:
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    if tenant.status == TenantStatus.ACTIVE:
        return tenant
    if not tenant.can_activate():
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; only a provisioning tenant can be activated")
    _move(tenant, TenantStatus.ACTIVE, actor=actor)
    return tenant


@transaction.atomic
def tenant_suspend(*, tenant_id: int, actor: str, reason: str) -> Tenant | None:
    """SUSPENDED plus the agent's `suspend` command. A tenant still provisioning keeps
    its status and gets the command (its agent runs it once registered); a tenant
    already suspended or gone is left alone, so a second call does nothing."""
    tenant = _locked(tenant_id)
    if tenant is None or not (tenant.can_suspend() or tenant.status == TenantStatus.PROVISIONING):
        return tenant
    command_queue(tenant_id=tenant.pk, type=CommandType.SUSPEND, payload={"reason": reason}, actor=actor)
    if tenant.can_suspend():
        _move(tenant, TenantStatus.SUSPENDED, actor=actor, reason=reason)
    return tenant


@transaction.atomic
def tenant_resume(*, tenant_id: int, actor: str, reason: str) -> Tenant | None:
    """ACTIVE again plus the agent's `resume` command; like suspend, a provisioning
    tenant gets only the command, and a tenant not suspended is left alone."""
    tenant = _locked(tenant_id)
    if tenant is None or not (tenant.can_resume() or tenant.status == TenantStatus.PROVISIONING):
        return tenant
    command_queue(tenant_id=tenant.pk, type=CommandType.RESUME, payload={"reason": reason}, actor=actor)
    if tenant.can_resume():
        _move(tenant, TenantStatus.ACTIVE, actor=actor, reason=reason)
    return tenant


def tenant_deprovision_begin(*, tenant: Tenant, actor: str, reason: str) -> None:
    """With the tenant locked: DEPROVISIONING, unless it is on its way out already."""
    if tenant.can_deprovision():
        _move(tenant, TenantStatus.DEPROVISIONING, actor=actor, reason=reason)


@transaction.atomic
def tenant_deprovision_finish(*, tenant_id: int, actor: str, reason: str) -> Tenant:
    """The agent's keys revoked and the tenant DEPROVISIONED (a second call only
    revokes again, which finds nothing)."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    agent_key_revoke(tenant_id=tenant.pk, actor=actor, reason="deprovisioned")
    if tenant.status != TenantStatus.DEPROVISIONED:
        _move(tenant, TenantStatus.DEPROVISIONED, actor=actor, reason=reason)
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
        _move(tenant, TenantStatus.DEPROVISIONED, actor=actor, reason=reason)


@transaction.atomic
def tenant_maintenance_enter(*, tenant_id: int, actor: str, reason: str, tag: str) -> str:
    """MAINTENANCE plus the agent's `maintenance` command (its tools stop writing; their
    databases keep answering for the final backup). Returns the command's id; a second
    call with the same `tag` finds the command the first one queued."""
    return _maintenance(tenant_id=tenant_id, actor=actor, reason=reason, tag=tag, enter=True)


@transaction.atomic
def tenant_maintenance_leave(*, tenant_id: int, actor: str, reason: str, tag: str, tell_agent: bool = True) -> str:
    """ACTIVE again plus the command that starts the tools again (same `tag` rule).
    Without `tell_agent` (the tenant now serves from another server, whose agent
    stopped nothing) only the status moves; returns ''."""
    return _maintenance(tenant_id=tenant_id, actor=actor, reason=reason, tag=tag, enter=False, tell_agent=tell_agent)


def _maintenance(*, tenant_id: int, actor: str, reason: str, tag: str, enter: bool, tell_agent: bool = True) -> str:
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    wanted, other = (
        (TenantStatus.MAINTENANCE, TenantStatus.ACTIVE) if enter else (TenantStatus.ACTIVE, TenantStatus.MAINTENANCE)
    )
    if tenant.status not in (wanted, other):
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; maintenance is for an active tenant")
    payload = {"enter": enter, "tag": tag}
    existing = Command.objects.filter(tenant=tenant, type=CommandType.MAINTENANCE, payload=payload).first()
    if tenant.status == other:
        _move(tenant, wanted, actor=actor, reason=reason)
    if not tell_agent:
        return ""
    if existing is not None:
        return str(existing.pk)
    command = command_queue(tenant_id=tenant.pk, type=CommandType.MAINTENANCE, payload=payload, actor=actor)
    return str(command.pk)


@transaction.atomic
def tenant_server_switch(*, tenant_id: int, server_id: int, actor: str, reason: str) -> Tenant:
    """The tenant now lives on another server (after a recovery or a migration)."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    if tenant.server_id == server_id:
        return tenant
    audit_record(
        actor=actor,
        action="tenant.server",
        object_type="tenant",
        object_id=tenant.pk,
        old=tenant.server_id,
        new=server_id,
        reason=reason,
    )
    tenant.server_id = server_id
    tenant.save(update_fields=["server"])
    return tenant
