"""Commands for one agent: queued, handed out in the heartbeat's answer, their results
recorded once; expired, re-flagged, swept."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from hub.audit import audit_record
from hub.errors import DomainError
from hub.models import AuditEvent
from tenants import redis_store
from tenants.command_payloads import command_payload_errors
from tenants.models import (
    COMMAND_ANSWERED_STATUSES,
    Command,
    CommandStatus,
    CommandType,
    Tenant,
)
from tenants.selectors import commands_deliverable, commands_expired
from tenants.services.agents import agent_actor, agent_key_caches_repair

logger = logging.getLogger(__name__)


class CommandNotFound(Exception):
    """No such command for this tenant (another tenant's command included)."""


def flag_commands_due(tenant_ids: list[int]) -> None:
    try:
        redis_store.commands_due_flag(tenant_ids=tenant_ids)
    except redis.RedisError:
        logger.warning("could not flag commands due for %s; the sweep will", tenant_ids[:10], exc_info=True)


@transaction.atomic
def command_queue(
    *, tenant_id: int, type: str, payload: dict[str, Any], actor: str, ttl_seconds: int | None = None
) -> Command:
    """Queue a command for the tenant's agent: it goes out with the next heartbeat."""
    tenant = Tenant.objects.get(pk=tenant_id)
    if not tenant.can_receive_commands():
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; it takes no commands", code="tenant_not_live")
    errors = command_payload_errors(type=type, payload=payload)
    if errors:
        raise DomainError("; ".join(errors), code="invalid_command")
    ttl = ttl_seconds if ttl_seconds is not None else settings.COMMAND_TTL
    command = Command.objects.create(
        tenant=tenant,
        type=type,
        payload=payload,
        created_by=actor,
        expires_at=timezone.now() + timedelta(seconds=ttl),
    )
    audit_record(
        actor=actor,
        action="command.queue",
        object_type="command",
        object_id=command.pk,
        new={"tenant": tenant.pk, "type": type, "payload": payload, "status": command.status},
    )
    transaction.on_commit(lambda: flag_commands_due([tenant.pk]))
    return command


def commands_deliver(*, tenant_id: int) -> list[Command]:
    """Hand out the tenant's due commands (marking them delivered). Clearing the flag
    before reading means a command queued meanwhile re-flags the tenant after us. When
    Postgres cannot be read, the heartbeat (already buffered in Redis) still succeeds,
    with no commands, and the flag is put back for the next one."""
    redis_store.commands_due_clear(tenant_id=tenant_id)
    try:
        commands, more = _commands_hand_out(tenant_id=tenant_id)
    except DatabaseError:
        logger.warning("could not read the commands of tenant %s; they go out with a later heartbeat", tenant_id)
        flag_commands_due([tenant_id])
        return []
    if more:
        redis_store.commands_due_flag(tenant_ids=[tenant_id])
    return commands


def _commands_hand_out(*, tenant_id: int) -> tuple[list[Command], bool]:
    """Up to COMMANDS_PER_HEARTBEAT due commands, marked delivered; and whether more
    are due."""
    limit = settings.COMMANDS_PER_HEARTBEAT
    now = timezone.now()
    with transaction.atomic():
        due = list(
            commands_deliverable(tenant_id=tenant_id, now=now, redelivery_timeout=settings.COMMAND_REDELIVERY_TIMEOUT)
            .select_for_update(skip_locked=True)
            .order_by("created_at")[: limit + 1]
        )
        commands = due[:limit]
        if commands:
            Command.objects.filter(pk__in=[c.pk for c in commands]).update(
                status=CommandStatus.DELIVERED, delivered_at=now, delivery_count=F("delivery_count") + 1
            )
            for command in commands:
                command.status = CommandStatus.DELIVERED
                command.delivered_at = now
                command.delivery_count += 1
    return commands, len(due) > limit


@transaction.atomic
def command_record_result(
    *,
    tenant_id: int,
    command_id: uuid.UUID,
    status: str,
    output: str,
    version: str | None = None,
    rolled_back: bool | None = None,
    details: dict[str, Any] | None = None,
) -> tuple[Command, bool]:
    """Record the agent's answer. An answer sent again changes nothing (returns False).
    A successful update sets the tenant's version of its component."""
    command = Command.objects.select_for_update().filter(pk=command_id, tenant_id=tenant_id).first()
    if command is None:
        raise CommandNotFound
    if command.status in COMMAND_ANSWERED_STATUSES:
        return command, False
    if not command.can_record_result():
        raise DomainError(f"command {command.pk} is {command.status}", code="command_closed")
    now = timezone.now()
    old_status = command.status
    command.status = CommandStatus.SUCCEEDED if status == "succeeded" else CommandStatus.FAILED
    command.finished_at = now
    result: dict[str, Any] = {"status": status, "output": output}
    if version is not None:
        result["version"] = version
    if rolled_back is not None:
        result["rolled_back"] = rolled_back
    if details is not None:
        result["details"] = details
    command.result = result
    command.save(update_fields=["status", "finished_at", "result"])
    audit_record(
        actor=agent_actor(tenant_id),
        action="command.result",
        object_type="command",
        object_id=command.pk,
        old={"status": old_status},
        new={"status": command.status, "rolled_back": rolled_back, "version": version},
    )
    if command.type == CommandType.UPDATE and command.status == CommandStatus.SUCCEEDED:
        component = command.payload.get("component")
        new_version = version or command.payload.get("version")
        if isinstance(component, str) and isinstance(new_version, str):
            _tenant_version_set(tenant_id=tenant_id, component=component, version=new_version, at=now)
    return command, True


def _tenant_version_set(*, tenant_id: int, component: str, version: str, at: datetime) -> None:
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    old = tenant.versions.get(component)
    tenant.versions = {**tenant.versions, component: version}
    tenant.versions_updated_at = at
    tenant.save(update_fields=["versions", "versions_updated_at"])
    audit_record(
        actor=agent_actor(tenant_id),
        action="tenant.version",
        object_type="tenant",
        object_id=tenant_id,
        old={component: old},
        new={component: version},
    )


@transaction.atomic
def commands_expire() -> int:
    """Expire every open command past its TTL, in one UPDATE (and one audit INSERT)."""
    now = timezone.now()
    rows = list(commands_expired(now=now).select_for_update(skip_locked=True).values_list("id", "status"))
    if not rows:
        return 0
    Command.objects.filter(pk__in=[pk for pk, _ in rows]).update(status=CommandStatus.EXPIRED, finished_at=now)
    AuditEvent.objects.bulk_create(
        AuditEvent(
            actor="system",
            action="command.expire",
            object_type="command",
            object_id=str(pk),
            old={"status": old},
            new={"status": CommandStatus.EXPIRED},
            reason="TTL passed without an answer",
        )
        for pk, old in rows
    )
    return len(rows)


def commands_reflag() -> int:
    """Flag every tenant with commands due (new, or delivered and unanswered past the
    redelivery timeout): how redelivery happens, and how flags lost with Redis return."""
    tenant_ids = list(
        commands_deliverable(now=timezone.now(), redelivery_timeout=settings.COMMAND_REDELIVERY_TIMEOUT)
        .values_list("tenant_id", flat=True)
        .distinct()
        .order_by()
    )
    redis_store.commands_due_flag(tenant_ids=tenant_ids)
    return len(tenant_ids)


@dataclass(frozen=True)
class SweepResult:
    expired: int
    flagged: int
    key_caches_invalidated: bool


def agents_sweep() -> SweepResult:
    """The periodic upkeep of the agent fast path (a few seconds apart)."""
    expired = commands_expire()
    flagged = commands_reflag()
    return SweepResult(expired=expired, flagged=flagged, key_caches_invalidated=agent_key_caches_repair())
