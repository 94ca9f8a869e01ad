"""The per-process cache of agent API keys that keeps Postgres off the heartbeat path.

An entry lives AGENT_KEY_CACHE_SECONDS (longer than a heartbeat interval, or it would
never be hit). Revocation must still work within seconds on every process, so the
cache is tagged with the credential generation kept in Redis: every heartbeat's single
Redis round trip compares it, and a process whose generation is out of date forgets
everything and reloads from Postgres. Services bump the generation after every commit
that revokes or expires a key, and the command sweep re-bumps it when Postgres shows a
change Redis missed (a Redis restart)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from tenants import redis_store
from tenants.secrets import digests_equal
from tenants.selectors import agent_credentials_usable


@dataclass(frozen=True)
class AgentIdentity:
    """Who an authenticated agent request is from. Carries the key's digest (never the
    key) so a request can be re-checked after the cache was reset under it."""

    tenant_id: int
    credential_id: int
    key_prefix: str
    key_digest: str
    heartbeat_interval: int


@dataclass(frozen=True)
class _Entry:
    loaded_at: float
    credentials: tuple[tuple[int, int, str, datetime | None, int], ...]


_lock = threading.Lock()
_entries: dict[str, _Entry] = {}
_generation: str | None = None


def _match(
    credentials: tuple[tuple[int, int, str, datetime | None, int], ...], *, prefix: str, digest: str, now: datetime
) -> AgentIdentity | None:
    found = None
    for credential_id, tenant_id, key_hash, expires_at, interval in credentials:
        # Compare every candidate, in constant time each.
        if digests_equal(key_hash, digest) and (expires_at is None or expires_at > now):
            found = AgentIdentity(
                tenant_id=tenant_id,
                credential_id=credential_id,
                key_prefix=prefix,
                key_digest=digest,
                heartbeat_interval=interval,
            )
    return found


def identity_lookup(*, prefix: str, digest: str, now: datetime) -> AgentIdentity | None:
    """Straight from Postgres: for the low-volume agent endpoints."""
    return _match(tuple(agent_credentials_usable(key_prefix=prefix, now=now)), prefix=prefix, digest=digest, now=now)


def identity_lookup_cached(*, prefix: str, digest: str, now: datetime) -> AgentIdentity | None:
    """From the process cache, loading the prefix from Postgres on a miss. The caller
    must confirm `generation()` against Redis before trusting the answer."""
    global _generation
    if _generation is None:
        # Read the generation before any load, so a revocation after this point is seen.
        _generation = redis_store.key_generation()
    entry = _entries.get(prefix)
    if entry is None or time.monotonic() - entry.loaded_at > settings.AGENT_KEY_CACHE_SECONDS:
        entry = _Entry(
            loaded_at=time.monotonic(), credentials=tuple(agent_credentials_usable(key_prefix=prefix, now=now))
        )
        with _lock:
            if len(_entries) >= settings.AGENT_KEY_CACHE_MAX_ENTRIES:
                _entries.clear()
            _entries[prefix] = entry
    return _match(entry.credentials, prefix=prefix, digest=digest, now=now)


def generation() -> str:
    return _generation or ""


def reset(*, generation: str | None = None) -> None:
    """Forget every entry; the next lookups reload from Postgres under `generation`."""
    global _generation
    with _lock:
        _entries.clear()
        _generation = generation
