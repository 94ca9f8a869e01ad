"""Commands for many tenants at once: what `services.command_queue` does for one tenant
(validate, insert, audit, flag the tenant in Redis after commit), in a constant number
of queries whatever the number of tenants. Used by fleet-wide work such as rollouts."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub.errors import DomainError
from hub.models import AuditEvent
from tenants import redis_store
from tenants.commands import command_payload_errors
from tenants.models import TENANT_LIVE_STATUSES, Command, CommandStatus, Tenant

logger = logging.getLogger(__name__)


def _flag_commands_due(tenant_ids: list[int]) -> None:
    try:
        redis_store.commands_due_flag(tenant_ids=tenant_ids)
    except redis.RedisError:
        logger.warning("could not flag commands due for %d tenants; the sweep will", len(tenant_ids), exc_info=True)


@transaction.atomic
def commands_queue_bulk(
    *,
    tenant_ids: Sequence[int],
    type: str,
    payloads: Sequence[dict[str, Any]],
    actor: str,
    ttl_seconds: int | None = None,
) -> list[Command]:
    """One command per tenant (payloads[i] for tenant_ids[i]), in the given order.
    Refuses the whole batch if any tenant takes no commands or any payload is invalid."""
    if len(tenant_ids) != len(payloads):
        raise ValueError("one payload per tenant")
    if not tenant_ids:
        return []
    for encoded in {json.dumps(p, sort_keys=True) for p in payloads}:
        errors = command_payload_errors(type=type, payload=json.loads(encoded))
        if errors:
            raise DomainError("; ".join(errors), code="invalid_command")
    not_live = list(
        Tenant.objects.filter(pk__in=tenant_ids)
        .exclude(status__in=TENANT_LIVE_STATUSES)
        .values_list("pk", flat=True)[:10]
    )
    if not_live:
        raise DomainError(f"tenants {not_live} take no commands", code="tenant_not_live")
    now = timezone.now()
    ttl = ttl_seconds if ttl_seconds is not None else settings.COMMAND_TTL
    expires_at = now + timedelta(seconds=ttl)
    commands = Command.objects.bulk_create(
        [
            Command(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                type=type,
                payload=payload,
                created_by=actor,
                expires_at=expires_at,
            )
            for tenant_id, payload in zip(tenant_ids, payloads, strict=True)
        ]
    )
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor=actor,
                action="command.queue",
                object_type="command",
                object_id=str(command.pk),
                new={"tenant": command.tenant_id, "type": type, "payload": command.payload, "status": command.status},
            )
            for command in commands
        ]
    )
    flagged = list(dict.fromkeys(tenant_ids))
    transaction.on_commit(lambda: _flag_commands_due(flagged))
    return commands


@transaction.atomic
def commands_withdraw_bulk(*, command_ids: Sequence[uuid.UUID], actor: str, reason: str) -> list[uuid.UUID]:
    """Take back the commands no agent has been handed yet (PENDING); they end EXPIRED
    with a note. Delivered ones are left alone: the agent may be running them. Returns
    the ids withdrawn."""
    if not command_ids:
        return []
    withdrawn = list(
        Command.objects.select_for_update()
        .filter(pk__in=command_ids, status=CommandStatus.PENDING)
        .values_list("pk", flat=True)
    )
    if not withdrawn:
        return []
    now = timezone.now()
    Command.objects.filter(pk__in=withdrawn).update(
        status=CommandStatus.EXPIRED,
        finished_at=now,
        result={"status": "withdrawn", "output": f"withdrawn before delivery: {reason}"[:2000]},
    )
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor=actor,
                action="command.withdraw",
                object_type="command",
                object_id=str(pk),
                old={"status": CommandStatus.PENDING},
                new={"status": CommandStatus.EXPIRED},
                reason=reason[:2000],
            )
            for pk in withdrawn
        ]
    )
    return withdrawn
