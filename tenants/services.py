"""Every write of the tenants app: tenants, agent registration and keys, heartbeats,
commands, and the backup and usage reports."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from hub.audit import audit_record
from hub.db.locks import try_xact_lock
from hub.errors import DomainError
from hub.models import AuditEvent
from tenants import keycache, redis_store
from tenants.commands import command_payload_errors
from tenants.keycache import AgentIdentity
from tenants.models import (
    COMMAND_ANSWERED_STATUSES,
    AgentCredential,
    BackupOutcome,
    BackupReport,
    BackupRepository,
    Command,
    CommandStatus,
    CommandType,
    HeartbeatSample,
    RegistrationToken,
    Tenant,
    TenantStatus,
    UsageReport,
)
from tenants.secrets import api_key_generate, registration_token_generate, secret_digest
from tenants.selectors import agent_credentials_fingerprint, commands_deliverable, commands_expired

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AgentAuthError(Exception):
    """The API key is missing, malformed, unknown, expired or revoked."""


class RegistrationRefused(Exception):
    """The registration token is unknown, used or expired (deliberately not which)."""


class CommandNotFound(Exception):
    """No such command for this tenant (another tenant's command included)."""


class HeartbeatThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"throttled, retry after {retry_after}s")
        self.retry_after = retry_after


class HeartbeatUnavailable(Exception):
    """The fast path cannot take the heartbeat now (Redis down or churning)."""


def _actor_for(tenant_id: int) -> str:
    return f"agent:{tenant_id}"


def _to_epoch_us(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_epoch_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


# --- Tenants -------------------------------------------------------------------------


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


# --- Registration and API keys -------------------------------------------------------


def _key_caches_invalidate() -> None:
    """After a commit that revoked or expired a key: every web process drops its key
    cache on its next heartbeat. If Redis is unreachable now, the sweep does it."""
    try:
        redis_store.key_generation_bump(generation=uuid.uuid4().hex)
    except redis.RedisError:
        logger.warning("could not bump the agent key generation; the sweep will", exc_info=True)


@transaction.atomic
def registration_token_issue(
    *, tenant_id: int, actor: str, ttl_seconds: int | None = None
) -> tuple[RegistrationToken, str]:
    """A one-time token for the tenant's agent. The plaintext is returned here, once."""
    tenant = Tenant.objects.get(pk=tenant_id)
    if not tenant.can_register_agent():
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; its agent cannot register", code="tenant_not_live")
    plaintext = registration_token_generate()
    ttl = ttl_seconds if ttl_seconds is not None else settings.AGENT_REGISTRATION_TOKEN_TTL
    token = RegistrationToken.objects.create(
        tenant=tenant, token_hash=secret_digest(plaintext), expires_at=timezone.now() + timedelta(seconds=ttl)
    )
    audit_record(
        actor=actor,
        action="agent.registration_token.issue",
        object_type="tenant",
        object_id=tenant.pk,
        new={"token_id": token.pk, "expires_at": token.expires_at.isoformat()},
    )
    return token, plaintext


@transaction.atomic
def agent_register(*, token: str, hostname: str, agent_version: str) -> tuple[Tenant, str]:
    """Trade a registration token for an API key. The token works once; keys of an
    earlier registration (a reinstalled agent) stop working."""
    now = timezone.now()
    record = (
        RegistrationToken.objects.select_for_update()
        .select_related("tenant")
        .filter(token_hash=secret_digest(token))
        .first()
    )
    if record is None or not record.can_use(now=now) or not record.tenant.can_register_agent():
        raise RegistrationRefused
    record.used_at = now
    record.save(update_fields=["used_at"])
    tenant = record.tenant
    revoked = AgentCredential.objects.filter(tenant=tenant, revoked_at=None).update(revoked_at=now, updated_at=now)
    key = api_key_generate()
    AgentCredential.objects.create(tenant=tenant, key_prefix=key.prefix, key_hash=key.digest)
    old = {"agent_hostname": tenant.agent_hostname, "agent_version": tenant.agent_version}
    tenant.agent_hostname = hostname
    tenant.agent_version = agent_version
    tenant.registered_at = now
    tenant.save(update_fields=["agent_hostname", "agent_version", "registered_at"])
    audit_record(
        actor=_actor_for(tenant.pk),
        action="agent.register",
        object_type="tenant",
        object_id=tenant.pk,
        old=old,
        new={
            "agent_hostname": hostname,
            "agent_version": agent_version,
            "key_prefix": key.prefix,
            "keys_revoked": revoked,
        },
    )
    if revoked:
        transaction.on_commit(_key_caches_invalidate)
    return tenant, key.plaintext


@dataclass(frozen=True)
class KeyRotation:
    credential: AgentCredential
    api_key: str
    old_keys_expire_at: datetime


@transaction.atomic
def agent_key_rotate(*, tenant_id: int, actor: str, overlap_seconds: int | None = None) -> KeyRotation:
    """A new key for the tenant's agent; its current keys keep working for the overlap
    (so a reply lost on the way, or a request in flight, does not lock the agent out)."""
    now = timezone.now()
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    overlap = overlap_seconds if overlap_seconds is not None else settings.AGENT_KEY_ROTATION_OVERLAP
    until = now + timedelta(seconds=overlap)
    expiring = AgentCredential.objects.filter(tenant=tenant, revoked_at=None).filter(
        Q(expires_at=None) | Q(expires_at__gt=until)
    )
    expiring_prefixes = list(expiring.values_list("key_prefix", flat=True))
    expiring.update(expires_at=until, updated_at=now)
    key = api_key_generate()
    credential = AgentCredential.objects.create(tenant=tenant, key_prefix=key.prefix, key_hash=key.digest)
    audit_record(
        actor=actor,
        action="agent.key.rotate",
        object_type="tenant",
        object_id=tenant.pk,
        old={"key_prefixes": expiring_prefixes},
        new={"key_prefix": key.prefix, "old_keys_expire_at": until.isoformat()},
    )
    transaction.on_commit(_key_caches_invalidate)
    return KeyRotation(credential=credential, api_key=key.plaintext, old_keys_expire_at=until)


@transaction.atomic
def agent_key_revoke(*, tenant_id: int, actor: str, reason: str = "", credential_id: int | None = None) -> int:
    """End the tenant's keys (or one of them) now, on every web process within seconds."""
    now = timezone.now()
    credentials = AgentCredential.objects.filter(tenant_id=tenant_id, revoked_at=None)
    if credential_id is not None:
        credentials = credentials.filter(pk=credential_id)
    prefixes = list(credentials.values_list("key_prefix", flat=True))
    count = credentials.update(revoked_at=now, updated_at=now)
    if count:
        audit_record(
            actor=actor,
            action="agent.key.revoke",
            object_type="tenant",
            object_id=tenant_id,
            old={"key_prefixes": prefixes},
            new={"revoked": count},
            reason=reason,
        )
        transaction.on_commit(_key_caches_invalidate)
    return count


def agent_key_caches_repair() -> bool:
    """Bump the key generation when Postgres shows a key change Redis never heard of
    (a bump lost to a Redis restart). Returns whether it bumped."""
    if redis_store.key_fingerprint_swap(fingerprint=agent_credentials_fingerprint()):
        _key_caches_invalidate()
        return True
    return False


# --- Heartbeats ----------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatReply:
    heartbeat_interval: int
    commands: list[Command] = field(default_factory=list)


def heartbeat_ingest(*, identity: AgentIdentity, metrics: dict[str, Any], received_at: datetime) -> HeartbeatReply:
    """Buffer one heartbeat in Redis (one round trip, no SQL) and hand out the tenant's
    due commands. The identity came from the process key cache; the same round trip
    confirms the cache is current, and if it is not, the key is checked again. Without
    Redis, the heartbeat goes straight to Postgres (slower, but nothing is lost)."""
    tls_expires_at = metrics.get("tls_expires_at")
    sample = {
        "tenant": identity.tenant_id,
        "at": _to_epoch_us(received_at),
        "disk": metrics["disk_percent"],
        "mem": metrics["memory_percent"],
        "load": metrics["load"],
        "up": metrics["uptime_seconds"],
        "containers": metrics.get("containers", []),
        "versions": metrics.get("versions", {}),
        "tls": tls_expires_at.isoformat() if tls_expires_at else None,
    }
    encoded = json.dumps(sample, separators=(",", ":"))
    try:
        for _ in range(3):
            result = redis_store.heartbeat_push(
                tenant_id=identity.tenant_id,
                sample=encoded,
                generation=keycache.generation(),
                rate=settings.AGENT_THROTTLE_RATE,
            )
            if result.outcome == redis_store.PushOutcome.STALE_KEY_CACHE:
                keycache.reset(generation=result.generation)
                again = keycache.identity_lookup_cached(
                    prefix=identity.key_prefix, digest=identity.key_digest, now=received_at
                )
                if again is None:
                    raise AgentAuthError
                identity = again
                continue
            if result.outcome == redis_store.PushOutcome.THROTTLED:
                raise HeartbeatThrottled(result.retry_after)
            commands = commands_deliver(tenant_id=identity.tenant_id) if result.commands_due else []
            return HeartbeatReply(heartbeat_interval=identity.heartbeat_interval, commands=commands)
    except redis.RedisError:
        _log_redis_down()
        return _heartbeat_ingest_direct(identity=identity, sample=sample, received_at=received_at)
    raise HeartbeatUnavailable("agent key generation keeps changing")


_redis_down_logged_at = 0.0


def _log_redis_down() -> None:
    global _redis_down_logged_at
    if time.monotonic() - _redis_down_logged_at > 10:
        _redis_down_logged_at = time.monotonic()
        logger.warning("Redis unreachable: heartbeats go straight to Postgres", exc_info=True)


def _heartbeat_ingest_direct(
    *, identity: AgentIdentity, sample: dict[str, Any], received_at: datetime
) -> HeartbeatReply:
    """The heartbeat without Redis: the key checked in Postgres (the cache cannot be
    confirmed), the sample written at once, the commands read from Postgres."""
    checked = keycache.identity_lookup(prefix=identity.key_prefix, digest=identity.key_digest, now=received_at)
    if checked is None:
        raise AgentAuthError
    stored = {**sample, "at": received_at, "tls": datetime.fromisoformat(sample["tls"]) if sample["tls"] else None}
    with transaction.atomic(), connection.cursor() as cursor:
        _samples_write(cursor, [stored])
    return HeartbeatReply(
        heartbeat_interval=checked.heartbeat_interval,
        commands=_commands_hand_out(tenant_id=checked.tenant_id)[0],
    )


@dataclass(frozen=True)
class FlushResult:
    samples: int
    tenants: int


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _parse_samples(raw: Iterable[bytes]) -> list[dict[str, Any]]:
    samples = []
    for item in raw:
        try:
            sample = json.loads(item)
            sample["at"] = _from_epoch_us(int(sample["at"]))
            sample["tls"] = datetime.fromisoformat(sample["tls"]) if sample.get("tls") else None
        except (ValueError, KeyError, TypeError):
            logger.warning("dropping a malformed buffered heartbeat: %r", item[:200])
            continue
        samples.append(sample)
    return samples


def _latest_per_tenant(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for sample in samples:
        current = latest.get(sample["tenant"])
        if current is None or current["at"] < sample["at"]:
            latest[sample["tenant"]] = sample
    return list(latest.values())


def _samples_write(cursor: Any, samples: list[dict[str, Any]]) -> int:
    """Insert the samples into the history and move each tenant's state to its newest
    sample: one INSERT and one UPDATE per chunk. Idempotent: a sample already stored is
    skipped and an older sample never overwrites newer state. Returns tenants updated."""
    tenant_table = Tenant._meta.db_table
    sample_table = HeartbeatSample._meta.db_table
    chunk_size = settings.HEARTBEAT_FLUSH_CHUNK
    for chunk in _chunks(samples, chunk_size):
        cursor.execute(
            f"""
            INSERT INTO {sample_table}
                (tenant_id, received_at, disk_percent, memory_percent, load, uptime_seconds, containers,
                 tls_expires_at)
            SELECT v.tenant_id, v.received_at, v.disk, v.mem, v.load, v.up, v.containers, v.tls
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float8[],
                        %s::bigint[], %s::text[]::jsonb[], %s::timestamptz[])
                 AS v(tenant_id, received_at, disk, mem, load, up, containers, tls)
            JOIN {tenant_table} t ON t.id = v.tenant_id
            ON CONFLICT (tenant_id, received_at) DO NOTHING
            """,  # noqa: S608 - table names from model metadata, values bound
            [
                [s["tenant"] for s in chunk],
                [s["at"] for s in chunk],
                [s["disk"] for s in chunk],
                [s["mem"] for s in chunk],
                [s["load"] for s in chunk],
                [s["up"] for s in chunk],
                [json.dumps(s["containers"]) for s in chunk],
                [s["tls"] for s in chunk],
            ],
        )
    updated = 0
    for chunk in _chunks(_latest_per_tenant(samples), chunk_size):
        cursor.execute(
            f"""
            UPDATE {tenant_table} AS t SET
                last_heartbeat_at = v.received_at,
                disk_percent = v.disk,
                memory_percent = v.mem,
                load = v.load,
                uptime_seconds = v.up,
                containers = v.containers,
                tls_expires_at = v.tls,
                versions = CASE
                    WHEN t.versions_updated_at IS NULL OR t.versions_updated_at < v.received_at
                    THEN t.versions || v.versions ELSE t.versions END
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float8[],
                        %s::bigint[], %s::text[]::jsonb[], %s::timestamptz[], %s::text[]::jsonb[])
                 AS v(id, received_at, disk, mem, load, up, containers, tls, versions)
            WHERE t.id = v.id AND (t.last_heartbeat_at IS NULL OR t.last_heartbeat_at < v.received_at)
            """,  # noqa: S608 - table names from model metadata, values bound
            [
                [s["tenant"] for s in chunk],
                [s["at"] for s in chunk],
                [s["disk"] for s in chunk],
                [s["mem"] for s in chunk],
                [s["load"] for s in chunk],
                [s["up"] for s in chunk],
                [json.dumps(s["containers"]) for s in chunk],
                [s["tls"] for s in chunk],
                [json.dumps(s["versions"]) for s in chunk],
            ],
        )
        updated += cursor.rowcount
    return updated


def heartbeat_flush() -> FlushResult:
    """Write the buffered heartbeats to Postgres: the history in one INSERT and every
    tenant's latest state in one UPDATE per chunk, whatever the size of the fleet.
    Safe to run twice over the same buffer (see _samples_write)."""
    samples = _parse_samples(redis_store.heartbeats_take())
    if not samples:
        return FlushResult(samples=0, tenants=0)
    with transaction.atomic(), connection.cursor() as cursor:
        if not try_xact_lock("tenants.heartbeat_flush"):
            # Another flush is writing this very buffer; it will also clear it.
            return FlushResult(samples=0, tenants=0)
        updated = _samples_write(cursor, samples)
    redis_store.heartbeats_taken_done()
    return FlushResult(samples=len(samples), tenants=updated)


# --- Commands ------------------------------------------------------------------------


def _flag_commands_due(tenant_ids: list[int]) -> None:
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
    transaction.on_commit(lambda: _flag_commands_due([tenant.pk]))
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
        _flag_commands_due([tenant_id])
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
        actor=_actor_for(tenant_id),
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
        actor=_actor_for(tenant_id),
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


# --- Reports -------------------------------------------------------------------------


def _backup_outcome(databases: dict[str, dict[str, Any]]) -> str:
    statuses = [entry.get("status") for entry in databases.values()]
    failed = sum(1 for s in statuses if s == "failed")
    if statuses and failed == len(statuses):
        return BackupOutcome.FAILED
    return BackupOutcome.PARTIAL if failed else BackupOutcome.SUCCESS


def backup_report_ingest(
    *,
    tenant_id: int,
    report_id: uuid.UUID,
    last_run: datetime,
    duration_seconds: int,
    databases: dict[str, dict[str, Any]],
    remote_sync: dict[str, Any] | None,
) -> tuple[BackupReport, bool]:
    """Store the report once per report_id; a re-sent report returns the stored one."""
    return BackupReport.objects.get_or_create(
        tenant_id=tenant_id,
        report_id=report_id,
        defaults={
            "last_run": last_run,
            "duration_seconds": duration_seconds,
            "databases": databases,
            "remote_sync": remote_sync,
            "outcome": _backup_outcome(databases),
        },
    )


def usage_report_ingest(*, tenant_id: int, report_id: uuid.UUID, period: str, tokens: int) -> tuple[UsageReport, bool]:
    """Store the report once per report_id; a re-sent report returns the stored one."""
    return UsageReport.objects.get_or_create(
        tenant_id=tenant_id, report_id=report_id, defaults={"period": period, "tokens": tokens}
    )


# --- the off-site backup repository -----------------------------------------------------


def backup_account_name(tenant_id: int) -> str:
    """The tenant's account on the backup target (a Unix user name: at most 32 characters)."""
    return f"tenant-{tenant_id}"


def _ssh_key_pair() -> tuple[str, str]:
    """A new ed25519 key pair: (OpenSSH private key, `ssh-ed25519 AAAA...` public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


@transaction.atomic
def backup_repository_ensure(*, tenant_id: int, host: str, port: int, actor: str) -> BackupRepository:
    """The tenant's repository, made once: an account on the backup target, a repository
    password and an SSH key of its own (none of them ever shown or logged)."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    existing = BackupRepository.objects.filter(tenant=tenant).first()
    if existing is not None:
        return existing
    account = backup_account_name(tenant.pk)
    private, public = _ssh_key_pair()
    repository = BackupRepository.objects.create(
        tenant=tenant,
        url=f"sftp://{account}@{host}:{port}//repo",
        account=account,
        password=secrets.token_urlsafe(32),
        ssh_private_key=private,
        ssh_public_key=f"{public} {account}",
    )
    audit_record(
        actor=actor,
        action="backup_repository.create",
        object_type="tenant",
        object_id=tenant.pk,
        new={"url": repository.url, "account": account},
    )
    return repository


@transaction.atomic
def backup_repository_mark_authorized(*, repository_id: int) -> None:
    BackupRepository.objects.filter(pk=repository_id).update(authorized_at=timezone.now(), updated_at=timezone.now())
