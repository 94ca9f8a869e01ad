"""Commands for many tenants at once: what `services.command_queue` does for one tenant
(validate, insert, audit, flag the tenant in Redis after commit), in a constant number
of queries whatever the number of tenants. Used by fleet-wide work such as rollouts.

`commands_queue_select` takes a query and writes the commands with one INSERT ... SELECT
(no row passes through Python) and one audit row for the whole batch: the commands
carry their creator in `created_by`, and the caller's rows point at them.
`commands_withdraw_bulk` takes back the ones no agent has been handed yet."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from hub.audit import audit_record
from hub.db.bulksql import array_text
from hub.errors import DomainError
from hub.models import AuditEvent
from tenants import redis_store
from tenants.command_payloads import command_payload_errors
from tenants.models import Command, CommandStatus

logger = logging.getLogger(__name__)


def _flag_commands_due(tenant_ids: list[int]) -> None:
    try:
        redis_store.commands_due_flag(tenant_ids=tenant_ids)
    except redis.RedisError:
        logger.warning("could not flag commands due for %d tenants; the sweep will", len(tenant_ids), exc_info=True)


@transaction.atomic
def commands_queue_select(
    *,
    source: QuerySet[Any, Any],
    type: str,
    payload: dict[str, Any] | None,
    actor: str,
    ttl_seconds: int | None = None,
    subject_type: str,
    subject_id: object,
    subject: dict[str, Any] | None = None,
) -> int:
    """One command per row of `source`, a `values_list(command id, tenant id)` query
    whose tenants all take commands (the caller's filter guarantees it, e.g. ACTIVE),
    with the same payload; or, with `payload` None, each with its own, from a third
    column of `source` (a JSON object), every distinct one validated first. One audit
    row says who queued how many commands for what (`subject_type`/`subject_id`, plus
    `subject` details); the flagged tenants' next heartbeats hand the commands out.
    Returns how many were queued."""
    source_sql, source_params = source.query.sql_with_params()
    if payload is None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT s.payload FROM ({source_sql}) AS s(command_id, tenant_id, payload)",  # noqa: S608 - built by the ORM
                source_params,
            )
            payloads = [row[0] if isinstance(row[0], dict) else json.loads(row[0]) for row in cursor.fetchall()]
        columns, payload_sql, payload_params = "s(command_id, tenant_id, payload)", "s.payload::jsonb", []
    else:
        payloads = [payload]
        columns, payload_sql, payload_params = "s(command_id, tenant_id)", "%s::jsonb", [json.dumps(payload)]
    for each in payloads:
        errors = command_payload_errors(type=type, payload=each)
        if errors:
            raise DomainError("; ".join(errors), code="invalid_command")
    now = timezone.now()
    ttl = ttl_seconds if ttl_seconds is not None else settings.COMMAND_TTL
    table = Command._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} "  # noqa: S608 - table from model metadata, source built by the ORM, values bound
            "(id, tenant_id, type, payload, status, created_by, created_at, expires_at, delivery_count) "
            f"SELECT s.command_id, s.tenant_id, %s, {payload_sql}, %s, %s, %s, %s, 0 "
            f"FROM ({source_sql}) AS {columns} RETURNING tenant_id",
            [type, *payload_params, CommandStatus.PENDING, actor, now, now + timedelta(seconds=ttl), *source_params],
        )
        tenant_ids = [tenant_id for (tenant_id,) in cursor.fetchall()]
    if not tenant_ids:
        return 0
    described = {"payload": payload} if payload is not None else {"payloads": payloads}
    audit_record(
        actor=actor,
        action="command.queue_bulk",
        object_type=subject_type,
        object_id=subject_id,
        new={**(subject or {}), "type": type, **described, "commands": len(tenant_ids)},
    )
    flagged = list(dict.fromkeys(tenant_ids))
    transaction.on_commit(lambda: _flag_commands_due(flagged))
    return len(tenant_ids)


def commands_withdraw_bulk(*, command_ids: Sequence[uuid.UUID], actor: str, reason: str) -> list[uuid.UUID]:
    """Take back the commands no agent has been handed yet (PENDING); they end EXPIRED
    with a note, one audit row each. Delivered ones are left alone: the agent may be
    running them. Returns the ids withdrawn.

    One statement whatever their number. The ids come as one array constant, which
    Postgres hashes and counts: joined to the rows naming them instead, right after a
    dispatch of 100,000 (before autovacuum had analysed either table), Postgres
    estimated one row a side and scanned the open commands once per update, for over
    18 minutes under the rollout's lock."""
    if not command_ids:
        return []
    table = Command._meta.db_table
    audit = AuditEvent._meta.db_table
    result = {"status": "withdrawn", "output": f"withdrawn before delivery: {reason}"[:2000]}
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH withdrawn AS (
                UPDATE {table} SET status = %s, finished_at = %s, result = %s::jsonb
                WHERE id = ANY(%s::uuid[]) AND status = %s
                RETURNING id
            ), audited AS (
                INSERT INTO {audit} (actor, action, object_type, object_id, old, new, reason, created_at)
                SELECT %s, 'command.withdraw', 'command', withdrawn.id::text, %s::jsonb, %s::jsonb, %s, %s
                FROM withdrawn
            )
            SELECT id FROM withdrawn
            """,  # noqa: S608 - table names from model metadata, values bound
            [
                CommandStatus.EXPIRED,
                now,
                json.dumps(result),
                array_text(command_ids),
                CommandStatus.PENDING,
                actor,
                json.dumps({"status": CommandStatus.PENDING}),
                json.dumps({"status": CommandStatus.EXPIRED}),
                reason[:2000],
                now,
            ],
        )
        return [command_id for (command_id,) in cursor.fetchall()]
