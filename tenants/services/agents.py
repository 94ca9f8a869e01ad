"""Agent registration and API keys: one-time tokens, registration, rotation with an
overlap, revocation, and the web processes' key caches kept honest."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hub.audit import audit_record
from hub.errors import DomainError
from hub.pipeline.wakes import AGENT_REGISTERED, event_received
from tenants import redis_store
from tenants.models import (
    AgentCredential,
    RegistrationToken,
    Tenant,
)
from tenants.secrets import api_key_generate, registration_token_generate, secret_digest
from tenants.selectors import agent_credentials_fingerprint

logger = logging.getLogger(__name__)


class AgentAuthError(Exception):
    """The API key is missing, malformed, unknown, expired or revoked."""


class RegistrationRefused(Exception):
    """The registration token is unknown, used or expired (deliberately not which)."""


def agent_actor(tenant_id: int) -> str:
    return f"agent:{tenant_id}"


def _key_caches_invalidate() -> None:
    """After a commit that revoked or expired a key: every web process drops its key
    cache on its next heartbeat. If Redis is unreachable now, the sweep does it."""
    try:
        redis_store.key_generation_bump(generation=uuid.uuid4().hex)
    except redis.RedisError:
        logger.warning("could not bump the agent key generation; the sweep will", exc_info=True)


@transaction.atomic
def registration_token_issue(
    *, tenant_id: int, actor: str, ttl_seconds: int | None = None, keeps_other_keys: bool = False
) -> tuple[RegistrationToken, str]:
    """A one-time token for the tenant's agent. The plaintext is returned here, once.
    `keeps_other_keys`: for a second agent while the tenant moves (the first one keeps
    its keys until the move revokes them)."""
    tenant = Tenant.objects.get(pk=tenant_id)
    if not tenant.can_register_agent():
        raise DomainError(f"tenant {tenant.pk} is {tenant.status}; its agent cannot register", code="tenant_not_live")
    plaintext = registration_token_generate()
    ttl = ttl_seconds if ttl_seconds is not None else settings.AGENT_REGISTRATION_TOKEN_TTL
    token = RegistrationToken.objects.create(
        tenant=tenant,
        token_hash=secret_digest(plaintext),
        expires_at=timezone.now() + timedelta(seconds=ttl),
        keeps_other_keys=keeps_other_keys,
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
    earlier registration (a reinstalled agent) stop working, unless the token was
    issued for the server a moving tenant goes to (the move revokes them itself)."""
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
    revoked = 0
    if not record.keeps_other_keys:
        revoked = AgentCredential.objects.filter(tenant=tenant, revoked_at=None).update(revoked_at=now, updated_at=now)
    key = api_key_generate()
    AgentCredential.objects.create(tenant=tenant, key_prefix=key.prefix, key_hash=key.digest)
    old = {"agent_hostname": tenant.agent_hostname, "agent_version": tenant.agent_version}
    tenant.agent_hostname = hostname
    tenant.agent_version = agent_version
    tenant.registered_at = now
    tenant.save(update_fields=["agent_hostname", "agent_version", "registered_at"])
    audit_record(
        actor=agent_actor(tenant.pk),
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
    event_received(AGENT_REGISTERED, tenant.pk)
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
