"""The Cloudflare seam (REST through `requests`): the zones of the operator's account
and the DNS records in them.

A customer's domain is written only in its own zone: the account's zone whose name
is the longest suffix of the domain (`GET /zones?name=` for each candidate, longest
first, never the bare TLD, cached for CLOUDFLARE_ZONE_CACHE_SECONDS in the Redis every
Hub process shares). Cloudflare reads a record name outside its zone as relative to
the zone, so every record call names its zone explicitly. The Hub's own names live in
CLOUDFLARE_ZONE_ID.

Every call counts against the account's 1,200 requests per 5 minutes, which every
order, DNS-01 challenge and move shares: a tenant's A records are read in one call
and written in one batch, and a DNS-01 value is removed by the id its put got."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
import requests
from django.conf import settings

from hub.integrations.http import provider_session
from hub.integrations.ratelimit import provider_bucket, provider_redis
from hub.pipeline.spec import PermanentStepError

logger = logging.getLogger(__name__)

TIMEOUT = (5.0, 20.0)
# A caller that holds a web request open (the DNS-01 endpoint) waits this long at most
# for the rate limit, instead of the workers' five minutes.
SHORT_RATE_LIMIT_WAIT = 10.0

CODE_ZONE_EXISTS = 1061
CODE_IDENTICAL_RECORD = 81058
CODE_RECORD_NOT_FOUND = 81044
CODE_NO_ROUTE = 7003

ZONE_ACTIVE = "active"
ZONE_CACHE_PREFIX = "cloudflare:zone:"
TXT_ID_PREFIX = "cloudflare:txt:"
# A DNS-01 value lives for one certbot run; its id is remembered a day at most.
TXT_ID_SECONDS = 86400


class DnsProviderError(Exception):
    """Retryable: 5xx, timeouts, rate limit past patience."""


class CloudflareRefused(PermanentStepError):
    """A 4xx: Cloudflare will answer the same again, so it is not retried."""

    def __init__(self, message: str, *, status: int, codes: tuple[int, ...]) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes

    @property
    def gone(self) -> bool:
        """The zone or record does not exist (any more)."""
        return self.status == 404 or CODE_NO_ROUTE in self.codes or CODE_RECORD_NOT_FOUND in self.codes


@dataclass(frozen=True)
class Zone:
    id: str
    name: str
    status: str
    name_servers: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.status == ZONE_ACTIVE


@dataclass(frozen=True)
class DnsRecord:
    id: str
    type: str
    name: str
    content: str


_sessions: dict[bool, requests.Session] = {}
_short_waits: contextvars.ContextVar[bool] = contextvars.ContextVar("cloudflare_short_waits", default=False)


def _http() -> requests.Session:
    short = _short_waits.get()
    session = _sessions.get(short)
    if session is None:
        options = {"max_rate_limit_wait": SHORT_RATE_LIMIT_WAIT} if short else {}
        session = _sessions[short] = provider_session(provider_bucket("cloudflare"), **options)
    return session


@contextlib.contextmanager
def short_waits() -> Iterator[None]:
    """Calls made inside wait for the shared rate limit only briefly (a web request)."""
    token = _short_waits.set(True)
    try:
        yield
    finally:
        _short_waits.reset(token)


def _call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    url = f"{settings.CLOUDFLARE_API_BASE.rstrip('/')}{path}"
    headers = {"Authorization": f"Bearer {settings.CLOUDFLARE_API_TOKEN}"}
    try:
        response = _http().request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise DnsProviderError(f"cloudflare: {type(exc).__name__}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.ok and body.get("success", False):
        return body
    errors = body.get("errors") or []
    described = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    message = f"cloudflare {response.status_code}: {described or response.reason}"
    if response.status_code >= 500 or response.status_code == 429:
        raise DnsProviderError(message)
    codes = tuple(int(e["code"]) for e in errors if isinstance(e, dict) and str(e.get("code", "")).isdigit())
    raise CloudflareRefused(message, status=response.status_code, codes=codes)


def _paged(path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    page = 1
    while True:
        body = _call("GET", path, params={**params, "page": page})
        yield from body["result"]
        info = body.get("result_info") or {}
        if page >= int(info.get("total_pages") or 1):
            return
        page += 1


# --- zones --------------------------------------------------------------------------


def hub_zone_id() -> str:
    """The zone of the Hub's own names (never a customer's)."""
    return str(settings.CLOUDFLARE_ZONE_ID)


def _zone(payload: dict[str, Any]) -> Zone:
    return Zone(
        id=payload["id"],
        name=payload["name"],
        status=payload.get("status", ""),
        name_servers=tuple(payload.get("name_servers") or ()),
    )


def _zone_payload(zone: Zone | None) -> str:
    if zone is None:
        return "null"
    return json.dumps({"id": zone.id, "name": zone.name, "status": zone.status, "name_servers": zone.name_servers})


def _cache_get(key: str) -> bytes | None:
    try:
        return provider_redis().get(key)  # type: ignore[return-value]
    except redis.RedisError as exc:
        logger.warning("cloudflare: cache unavailable, asking Cloudflare: %s", exc)
        return None


def _cache_set(key: str, value: str, seconds: float) -> None:
    with contextlib.suppress(redis.RedisError):
        provider_redis().set(key, value, px=max(1, int(seconds * 1000)))


def _cache_forget(*keys: str) -> None:
    with contextlib.suppress(redis.RedisError):
        provider_redis().delete(*keys)


def zone_cache_clear() -> None:
    """Forget every zone looked up (by any Hub process)."""
    with contextlib.suppress(redis.RedisError):
        client = provider_redis()
        keys = list(client.scan_iter(match=f"{ZONE_CACHE_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)


def _account() -> str:
    """Which Cloudflare account (API, account id, token) a cached entry belongs to: a
    zone id of one account means nothing to another (nor to a sandbox started anew)."""
    owner = f"{settings.CLOUDFLARE_API_BASE}\0{settings.CLOUDFLARE_ACCOUNT_ID}\0{settings.CLOUDFLARE_API_TOKEN}"
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


def _zone_key(name: str) -> str:
    return f"{ZONE_CACHE_PREFIX}{_account()}:{name}"


def _zone_forget(name: str) -> None:
    _cache_forget(_zone_key(name))


def zone_named(name: str, *, fresh: bool = False) -> Zone | None:
    """The account's zone with exactly this name, or None."""
    name = name.lower().rstrip(".")
    key = _zone_key(name)
    if not fresh:
        cached = _cache_get(key)
        if cached is not None:
            payload = json.loads(cached)
            return _zone(payload) if payload else None
    params: dict[str, Any] = {"name": name, "per_page": 5}
    if settings.CLOUDFLARE_ACCOUNT_ID:
        params["account.id"] = settings.CLOUDFLARE_ACCOUNT_ID
    found = next((_zone(z) for z in _call("GET", "/zones", params=params)["result"] if z["name"] == name), None)
    _cache_set(key, _zone_payload(found), settings.CLOUDFLARE_ZONE_CACHE_SECONDS)
    return found


def zone_candidates(domain: str) -> list[str]:
    """The names a zone of this domain could have, longest first, without the TLD."""
    labels = domain.lower().rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def zone_for_domain(domain: str, *, fresh: bool = False) -> Zone | None:
    """The account's zone whose name is the longest suffix of the domain."""
    for candidate in zone_candidates(domain):
        zone = zone_named(candidate, fresh=fresh)
        if zone is not None:
            return zone
    return None


def zone_create(*, name: str) -> Zone:
    """Add the domain to the account as a full zone; Cloudflare assigns it two
    nameservers and keeps it pending until the domain is delegated to them. A zone
    already there (an earlier attempt made it) is returned as it is."""
    if not settings.CLOUDFLARE_ACCOUNT_ID:
        raise PermanentStepError("CLOUDFLARE_ACCOUNT_ID is not set: the Hub cannot add a zone for a customer's domain")
    name = name.lower().rstrip(".")
    payload = {"name": name, "account": {"id": settings.CLOUDFLARE_ACCOUNT_ID}, "type": "full"}
    _zone_forget(name)
    try:
        return _zone(_call("POST", "/zones", json=payload)["result"])
    except CloudflareRefused as exc:
        if CODE_ZONE_EXISTS not in exc.codes:
            raise
    existing = zone_named(name, fresh=True)
    if existing is None:
        raise DnsProviderError(f"cloudflare says zone {name} exists, but it is not in the account")
    return existing


def zone_get(*, zone_id: str) -> Zone | None:
    """The zone as Cloudflare has it now (its status), or None when it is gone."""
    try:
        return _zone(_call("GET", f"/zones/{zone_id}")["result"])
    except CloudflareRefused as exc:
        if exc.gone:
            return None
        raise


def zone_delete(*, zone_id: str) -> bool:
    """Delete the zone and every record in it; False when it was already gone."""
    try:
        zone = _call("GET", f"/zones/{zone_id}")["result"]
        _call("DELETE", f"/zones/{zone_id}")
    except CloudflareRefused as exc:
        if exc.gone:
            return False
        raise
    _zone_forget(zone["name"])
    return True


# --- records in a zone --------------------------------------------------------------


def _record(payload: dict[str, Any]) -> DnsRecord:
    return DnsRecord(payload["id"], payload["type"], payload["name"], payload["content"])


def records(
    *,
    zone_id: str,
    name: str | None = None,
    type_: str | None = None,
    content: str | None = None,
    under: str | None = None,
) -> list[DnsRecord]:
    """The zone's records with this name (or, `under`, at this name and every name
    below it), type and content."""
    params: dict[str, Any] = {"per_page": 100}
    if name:
        params["name"] = name
    if under:
        params["name.endswith"] = under
    if type_:
        params["type"] = type_
    if content is not None:
        params["content"] = content
    found = [_record(r) for r in _paged(f"/zones/{zone_id}/dns_records", params)]
    if under:
        # `endswith` is a string match: `xacme.example` ends with `acme.example` too.
        found = [r for r in found if r.name == under or r.name.endswith("." + under)]
    return found


def a_records_ensure(*, zone_id: str, domain: str, names: list[str], ipv4: str) -> list[DnsRecord]:
    """Each name (the domain and names under it) gets exactly one A record, to ipv4: an
    identical one is reused, a stale one (other address) is corrected, none is created,
    and any other A record at the name goes. One call reads them all, one batch writes
    every change, all or nothing."""
    existing: dict[str, list[DnsRecord]] = {name: [] for name in names}
    for record in records(zone_id=zone_id, under=domain, type_="A"):
        if record.name in existing:
            existing[record.name].append(record)
    kept: dict[str, DnsRecord] = {}
    deletes: list[dict[str, str]] = []
    puts: list[dict[str, Any]] = []
    posts: list[dict[str, Any]] = []
    for name, at_name in existing.items():
        payload = {"type": "A", "name": name, "content": ipv4, "ttl": 300, "proxied": False}
        keep = next((r for r in at_name if r.content == ipv4), None)
        if keep is not None:
            kept[name] = keep
        elif at_name:
            keep = at_name[0]
            puts.append({"id": keep.id, **payload})
        else:
            posts.append(payload)
        deletes += [{"id": r.id} for r in at_name if keep is None or r.id != keep.id]
    if deletes or puts or posts:
        body = {"deletes": deletes, "puts": puts, "posts": posts}
        result = _call("POST", f"/zones/{zone_id}/dns_records/batch", json=body)["result"]
        for written in [*(result.get("puts") or []), *(result.get("posts") or [])]:
            kept[written["name"]] = _record(written)
    return [kept[name] for name in names if name in kept]


def _txt_key(zone_id: str, name: str, content: str) -> str:
    digest = hashlib.sha256(f"{_account()}\0{zone_id}\0{name.lower()}\0{content}".encode()).hexdigest()
    return TXT_ID_PREFIX + digest


def txt_record_add(*, zone_id: str, name: str, content: str, ttl: int = 60) -> DnsRecord:
    """Add one TXT value at the name, beside any others there (DNS-01 for the root and
    the wildcard puts two values at one name); the same value twice is one record. Its
    id is remembered, so that removing it later is one call."""
    payload = {"type": "TXT", "name": name, "content": content, "ttl": ttl}
    try:
        record = _record(_call("POST", f"/zones/{zone_id}/dns_records", json=payload)["result"])
    except CloudflareRefused as exc:
        if CODE_IDENTICAL_RECORD not in exc.codes:
            raise
        found = records(zone_id=zone_id, name=name, type_="TXT", content=content)
        if not found:
            raise DnsProviderError(f"cloudflare says TXT {name} exists, but it cannot be read") from exc
        record = found[0]
    _cache_set(_txt_key(zone_id, name, content), record.id, TXT_ID_SECONDS)
    return record


def _delete(zone_id: str, record: DnsRecord) -> bool:
    try:
        _call("DELETE", f"/zones/{zone_id}/dns_records/{record.id}")
    except CloudflareRefused as exc:
        if exc.gone:
            return False
        raise
    return True


def txt_record_delete(*, zone_id: str, name: str, content: str) -> int:
    """Delete only this value at the name; the others stay. A value this Hub put is
    deleted by the id it got (Cloudflare keeps one record per value and name); any other
    is looked up first."""
    key = _txt_key(zone_id, name, content)
    remembered = _cache_get(key)
    if remembered is not None:
        deleted = _delete(zone_id, DnsRecord(remembered.decode(), "TXT", name, content))
        _cache_forget(key)
        return int(deleted)
    return sum(_delete(zone_id, r) for r in records(zone_id=zone_id, name=name, type_="TXT", content=content))


def records_delete(*, zone_id: str, names: list[str], type_: str = "A") -> int:
    """Delete the records of this type at these names; records (or a zone) already
    gone are fine."""
    deleted = 0
    for name in names:
        try:
            found = records(zone_id=zone_id, name=name, type_=type_)
        except CloudflareRefused as exc:
            if exc.gone:
                return deleted
            raise
        deleted += sum(_delete(zone_id, r) for r in found)
    return deleted
