"""The Cloudflare DNS seam (REST through `requests`): A records created idempotently
(an identical record is reused), deleted by id or by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from hub.integrations.http import provider_session
from hub.integrations.ratelimit import provider_bucket
from hub.pipeline.spec import PermanentStepError

TIMEOUT = (5.0, 20.0)


class DnsProviderError(Exception):
    """Retryable: 5xx, timeouts, rate limit past patience."""


@dataclass(frozen=True)
class DnsRecord:
    id: str
    type: str
    name: str
    content: str


_session: requests.Session | None = None


def _http() -> requests.Session:
    global _session
    if _session is None:
        _session = provider_session(provider_bucket("cloudflare"))
    return _session


def _call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    url = f"{settings.CLOUDFLARE_API_BASE.rstrip('/')}/zones/{settings.CLOUDFLARE_ZONE_ID}{path}"
    headers = {"Authorization": f"Bearer {settings.CLOUDFLARE_API_TOKEN}"}
    try:
        response = _http().request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise DnsProviderError(f"cloudflare: {type(exc).__name__}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.ok and body.get("success", False):
        return body
    errors = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in body.get("errors", [])) or response.reason
    message = f"cloudflare {response.status_code}: {errors}"
    if response.status_code >= 500 or response.status_code == 429:
        raise DnsProviderError(message)
    raise PermanentStepError(message)


def records(*, name: str | None = None, type_: str | None = None) -> list[DnsRecord]:
    found: list[DnsRecord] = []
    page = 1
    while True:
        params: dict[str, Any] = {"page": page, "per_page": 100}
        if name:
            params["name"] = name
        if type_:
            params["type"] = type_
        body = _call("GET", "/dns_records", params=params)
        found += [DnsRecord(r["id"], r["type"], r["name"], r["content"]) for r in body["result"]]
        info = body.get("result_info") or {}
        if page >= int(info.get("total_pages") or 1):
            return found
        page += 1


def a_record_ensure(*, name: str, ipv4: str) -> DnsRecord:
    """One A record name -> ipv4: an identical one is reused, a stale one (other
    address) is corrected, none is created."""
    existing = records(name=name, type_="A")
    for record in existing:
        if record.content == ipv4:
            return record
    payload = {"type": "A", "name": name, "content": ipv4, "ttl": 300, "proxied": False}
    if existing:
        body = _call("PUT", f"/dns_records/{existing[0].id}", json=payload)
    else:
        body = _call("POST", "/dns_records", json=payload)
    r = body["result"]
    return DnsRecord(r["id"], r["type"], r["name"], r["content"])


def records_delete(*, names: list[str]) -> int:
    """Delete every record with these names; records already gone are fine."""
    deleted = 0
    for name in names:
        for record in records(name=name):
            try:
                _call("DELETE", f"/dns_records/{record.id}")
                deleted += 1
            except PermanentStepError as exc:
                if "404" not in str(exc):
                    raise
    return deleted
