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
from tenants.selectors import agent_credentials_usable, agent_credentials_usable_in_bucket


@dataclass(frozen=True)
class AgentIdentity:
    """Who an authenticated agent request is from. Carries the key's digest (never the
    key) so a request can be re-checked after the cache was reset under it."""

    tenant_id: int
    credential_id: int
    key_prefix: str
    key_digest: str
    heartbeat_interval: int


Credentials = tuple[tuple[int, int, str, datetime | None, int], ...]

# Keys are cached by bucket, the first characters of their prefix (hex): a miss loads
# every usable key of its bucket in one query, so a process warms up with one query per
# bucket (256) rather than one per agent, and a fleet of any size stays warm with few.
BUCKET_CHARS = 2


@dataclass(frozen=True)
class _Bucket:
    loaded_at: float
    # prefix -> its usable credentials; a prefix loaded on its own may be empty.
    credentials: dict[str, Credentials]


_lock = threading.Lock()
_entries: dict[str, _Bucket] = {}
_cached_keys = 0
_generation: str | None = None


def _match(credentials: Credentials, *, prefix: str, digest: str, now: datetime) -> AgentIdentity | None:
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


def _store(bucket_key: str, bucket: _Bucket, added: int) -> None:
    global _cached_keys
    with _lock:
        if _cached_keys + added > settings.AGENT_KEY_CACHE_MAX_ENTRIES:
            _entries.clear()
            _cached_keys = 0
        _entries[bucket_key] = bucket
        _cached_keys += added


def identity_lookup_cached(*, prefix: str, digest: str, now: datetime) -> AgentIdentity | None:
    """From the process cache, loading the prefix's bucket from Postgres on a miss. The
    caller must confirm `generation()` against Redis before trusting the answer."""
    global _generation
    if _generation is None:
        # Read the generation before any load, so a revocation after this point is seen.
        _generation = redis_store.key_generation()
    bucket_key = prefix[:BUCKET_CHARS]
    bucket = _entries.get(bucket_key)
    if bucket is None or time.monotonic() - bucket.loaded_at > settings.AGENT_KEY_CACHE_SECONDS:
        loaded: dict[str, list[tuple[int, int, str, datetime | None, int]]] = {}
        for key_prefix, *credential in agent_credentials_usable_in_bucket(bucket=bucket_key, now=now):
            loaded.setdefault(key_prefix, []).append(tuple(credential))  # type: ignore[arg-type]
        bucket = _Bucket(loaded_at=time.monotonic(), credentials={p: tuple(c) for p, c in loaded.items()})
        _store(bucket_key, bucket, len(bucket.credentials))
    credentials = bucket.credentials.get(prefix)
    if credentials is None:
        # Not in the bucket when it was loaded (a key registered since, or no key at
        # all): ask Postgres for this prefix alone, and remember the answer.
        credentials = tuple(agent_credentials_usable(key_prefix=prefix, now=now))
        with _lock:
            bucket.credentials[prefix] = credentials
    return _match(credentials, prefix=prefix, digest=digest, now=now)


def generation() -> str:
    return _generation or ""


def reset(*, generation: str | None = None) -> None:
    """Forget every entry; the next lookups reload from Postgres under `generation`."""
    global _generation, _cached_keys
    with _lock:
        _entries.clear()
        _cached_keys = 0
        _generation = generation
