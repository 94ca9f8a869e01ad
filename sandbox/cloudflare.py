"""A Cloudflare DNS emulator behind `CLOUDFLARE_API_BASE` (…/client/v4): zones and DNS
records in Cloudflare's `success`/`errors`/`messages`/`result`/`result_info` envelope,
with its error codes, Bearer tokens and its 1200-per-5-minutes rate limit.

Zones behave as Cloudflare's do: one added through the API (`POST /zones`) starts
`pending` with two nameservers Cloudflare assigned, and turns `active` once the
customer delegates their domain to them (the control endpoint
`POST /__sandbox/zones/<name>/delegate` plays the customer). `GET /__sandbox/resolve`
answers like a public DNS resolver (DNS-over-HTTPS JSON, no token): only delegated
zones answer, as on the Internet."""

from __future__ import annotations

import ipaddress
import random
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.faults import HttpFault, TokenBucket
from sandbox.httpbase import ApiError, EmulatorServer, Request, Response

API_PREFIX = "/client/v4"
RECORD_TYPES = {"A", "AAAA", "CNAME", "TXT", "MX", "NS", "CAA", "SRV"}
PROXIABLE = {"A", "AAAA", "CNAME"}
RATE_WINDOW_SECONDS = 300

CODE_RECORD_NOT_FOUND = 81044
CODE_CNAME_CONFLICT = 81053
CODE_HOST_HAS_CNAME = 81054
CODE_IDENTICAL_RECORD = 81058
CODE_INVALID_CONTENT = 9005
CODE_INVALID_TTL = 9021
CODE_INVALID_TYPE = 1004
CODE_INVALID_NAME = 9000
CODE_NO_ROUTE = 7003
CODE_AUTH = 10000
CODE_RATE_LIMITED = 971
CODE_ZONE_EXISTS = 1061
CODE_NOT_REGISTRABLE = 1099
CODE_SUBDOMAIN_ZONE = 1116
CODE_INVALID_REQUEST = 1001
CODE_UNAUTHORIZED = 9109
CODE_BATCH_TOO_LARGE = 81303
# How many operations one batch may hold (the Free plan's; Pro and up take 3,500).
BATCH_LIMIT = 200

ZONE_ACTIVE = "active"
ZONE_PENDING = "pending"
ZONE_TYPES = {"full", "partial", "secondary"}
# Cloudflare's nameservers are pairs of first names under ns.cloudflare.com.
NAMESERVER_NAMES = (
    "ada", "bob", "cruz", "dana", "elle", "fred", "gina", "hugo", "iris", "jack", "kate", "lars",
    "mira", "nash", "olga", "pete", "rita", "sam", "tess", "uma", "vera", "walt", "yara", "zod",
)  # fmt: skip
# Two-label public suffixes a registrable domain may sit under (a small stand-in for
# the Public Suffix List Cloudflare consults).
SECOND_LEVEL_SUFFIXES = {"co.uk", "org.uk", "ac.uk", "com.au", "net.au", "co.nz", "co.jp", "com.br", "co.za"}
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
DNS_TYPE_CODES = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "CAA": 257}


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def assigned_nameservers(zone_name: str) -> list[str]:
    """The two nameservers Cloudflare assigns a zone: the same two for the same name."""
    first, second = random.Random(zone_name).sample(NAMESERVER_NAMES, 2)
    return [f"{first}.ns.cloudflare.com", f"{second}.ns.cloudflare.com"]


def registrable(name: str) -> bool:
    """A name Cloudflare takes as a zone: a registered domain, not a subdomain of one."""
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(LABEL.match(label) for label in labels):
        return False
    return len(labels) == 2 or (len(labels) == 3 and ".".join(labels[1:]) in SECOND_LEVEL_SUFFIXES)


@dataclass
class Zone:
    id: str
    name: str
    created: float
    account_id: str
    status: str = ZONE_ACTIVE
    type: str = "full"
    name_servers: list[str] = field(default_factory=list)
    activated: float | None = None
    modified: float | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "paused": False,
            "type": self.type,
            "development_mode": 0,
            "name_servers": list(self.name_servers),
            "original_name_servers": [],
            "original_registrar": None,
            "original_dnshost": None,
            "created_on": _stamp(self.created),
            "modified_on": _stamp(self.modified or self.created),
            "activated_on": _stamp(self.activated) if self.activated else None,
            "account": {"id": self.account_id, "name": "Sandbox"},
            "owner": {"id": None, "type": "organization", "name": "Sandbox"},
            "meta": {"step": 4 if self.status == ZONE_PENDING else 2, "phishing_detected": False},
            "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read", "#zone:edit"],
            "plan": {"id": "free", "name": "Free Website", "price": 0, "currency": "USD"},
        }


class CloudflareEmulator(EmulatorServer):
    name = "cloudflare"

    def __init__(
        self,
        address: tuple[str, int],
        *,
        token: str,
        zone_id: str | None = None,
        zone_name: str = "hub-sandbox.test",
        account_id: str = "sandbox-account",
        rate_limit: int = 1200,
        burst: int | None = None,
    ) -> None:
        bucket = TokenBucket(capacity=burst or rate_limit, refill_per_second=rate_limit / RATE_WINDOW_SECONDS)
        super().__init__(address, token=token, bucket=bucket)
        self.rate_limit = rate_limit
        self.account_id = account_id
        self.lock = threading.RLock()
        self.zones: dict[str, Zone] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.default_zone = self.add_zone(zone_name, zone_id=zone_id)

    def add_zone(
        self, name: str, *, zone_id: str | None = None, status: str = ZONE_ACTIVE, zone_type: str = "full"
    ) -> Zone:
        name = name.lower().rstrip(".")
        now = time.time()
        zone = Zone(
            id=zone_id or secrets.token_hex(16),
            name=name,
            created=now,
            account_id=self.account_id,
            status=status,
            type=zone_type,
            name_servers=assigned_nameservers(name),
            activated=now if status == ZONE_ACTIVE else None,
        )
        with self.lock:
            self.zones[zone.id] = zone
            self.records[zone.id] = {}
        return zone

    def zone_named(self, name: str) -> Zone | None:
        name = name.lower().rstrip(".")
        with self.lock:
            return next((zone for zone in self.zones.values() if zone.name == name), None)

    def delegate(self, zone: Zone) -> Zone:
        """The customer pointed their domain at the assigned nameservers: active."""
        with self.lock:
            if zone.status != ZONE_ACTIVE:
                zone.status = ZONE_ACTIVE
                zone.activated = zone.modified = time.time()
        return zone

    # --- envelope -------------------------------------------------------------------

    def error_payload(self, status: int, code: str | int, message: str, details: Any) -> Any:
        return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}

    def rate_headers(self, remaining: int) -> dict[str, str]:
        reset = int(self.bucket.seconds_until(self.bucket.capacity) + 0.999)
        return {
            "Ratelimit": f'"default";r={remaining};t={reset}',
            "Ratelimit-Policy": f'"default";q={self.rate_limit};w={RATE_WINDOW_SECONDS}',
        }

    def rate_limited_error(self) -> ApiError:
        return ApiError(429, CODE_RATE_LIMITED, "Please wait and consider throttling your request speed")

    def fault_error(self, fault: HttpFault) -> ApiError:
        if fault.status == 429:
            return self.rate_limited_error()
        return ApiError(fault.status, fault.code or 10000 + fault.status, fault.message or "Internal Server Error")

    def authenticate(self, request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, CODE_AUTH, "Authentication error")

    @staticmethod
    def ok(result: Any, status: int = 200, result_info: dict[str, Any] | None = None) -> Response:
        payload: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
        if result_info is not None:
            payload["result_info"] = result_info
        return Response(status, payload)

    # --- routing --------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        if not request.path.startswith(API_PREFIX + "/"):
            raise ApiError(404, 7000, "No route for that URI")
        parts = [p for p in request.path[len(API_PREFIX) :].split("/") if p]
        method = request.method
        if parts == ["user", "tokens", "verify"] and method == "GET":
            return self.ok({"id": "sandbox-token", "status": "active"})
        if not parts or parts[0] != "zones":
            raise ApiError(404, 7000, "No route for that URI")
        if len(parts) == 1 and method == "GET":
            return self.list_zones(request)
        if len(parts) == 1 and method == "POST":
            return self.create_zone(request)
        zone = self._zone(parts[1], request.path)
        if len(parts) == 2 and method == "GET":
            return self.ok(zone.payload())
        if len(parts) == 2 and method == "DELETE":
            with self.lock:
                self.zones.pop(zone.id, None)
                self.records.pop(zone.id, None)
            return self.ok({"id": zone.id})
        if parts[2:] == ["dns_records", "batch"] and method == "POST":
            return self.batch_records(zone, request)
        if len(parts) >= 3 and parts[2] == "dns_records":
            if len(parts) == 3:
                if method == "GET":
                    return self.list_records(zone, request)
                if method == "POST":
                    return self.create_record(zone, request)
            if len(parts) == 4:
                record = self._record(zone, parts[3])
                if method == "GET":
                    return self.ok(record)
                if method in ("PUT", "PATCH"):
                    return self.update_record(zone, record, request, partial=method == "PATCH")
                if method == "DELETE":
                    with self.lock:
                        self.records[zone.id].pop(record["id"], None)
                    return self.ok({"id": record["id"]})
        raise ApiError(405 if len(parts) <= 4 else 404, 10405 if len(parts) <= 4 else 7000, "Method not allowed")

    def _zone(self, zone_id: str, path: str) -> Zone:
        with self.lock:
            zone = self.zones.get(zone_id)
        if zone is None:
            raise ApiError(404, CODE_NO_ROUTE, f"Could not route to {path}, perhaps your object identifier is invalid?")
        return zone

    def _record(self, zone: Zone, record_id: str) -> dict[str, Any]:
        with self.lock:
            record = self.records[zone.id].get(record_id)
        if record is None:
            raise ApiError(404, CODE_RECORD_NOT_FOUND, "Record does not exist.")
        return record

    def _page(self, request: Request, items: list[dict[str, Any]], *, default: int, maximum: int) -> Response:
        page = request.int_param("page", 1)
        per_page = request.int_param("per_page", default, minimum=1, maximum=maximum)
        total = len(items)
        chunk = items[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": total,
            "total_pages": max(1, -(-total // per_page)) if total else 0,
        }
        return self.ok(chunk, result_info=info)

    def list_zones(self, request: Request) -> Response:
        with self.lock:
            zones = sorted((z.payload() for z in self.zones.values()), key=lambda z: z["name"])
        name = request.param("name")
        if name:
            zones = [z for z in zones if z["name"] == name.lower().rstrip(".")]
        status = request.param("status")
        if status:
            zones = [z for z in zones if z["status"] == status]
        account = request.param("account.id")
        if account:
            zones = [z for z in zones if z["account"]["id"] == account]
        return self._page(request, zones, default=20, maximum=50)

    def create_zone(self, request: Request) -> Response:
        body = request.body
        if not isinstance(body, dict):
            raise ApiError(400, 9207, "Request body is invalid.")
        account = body.get("account")
        account_id = account.get("id") if isinstance(account, dict) else None
        if not isinstance(account_id, str) or not account_id:
            raise ApiError(400, CODE_INVALID_REQUEST, "Invalid request: account.id is required")
        if account_id != self.account_id:
            raise ApiError(403, CODE_UNAUTHORIZED, "Unauthorized to access requested resource")
        zone_type = body.get("type", "full")
        if zone_type not in ZONE_TYPES:
            raise ApiError(400, CODE_INVALID_REQUEST, f"Invalid request: unknown zone type {zone_type!r}")
        name = body.get("name")
        name = name.lower().rstrip(".") if isinstance(name, str) else ""
        with self.lock:
            if self.zone_named(name) is not None:
                raise ApiError(400, CODE_ZONE_EXISTS, f"{name} already exists")
            if any(name.endswith("." + zone.name) for zone in self.zones.values()):
                raise ApiError(
                    400,
                    CODE_SUBDOMAIN_ZONE,
                    "Please ensure you are providing the root domain and not any subdomains "
                    "(e.g., example.com, not subdomain.example.com)",
                )
            if not registrable(name):
                raise ApiError(
                    400,
                    CODE_NOT_REGISTRABLE,
                    f"We were unable to identify {name or body.get('name')!r} as a registered domain. Please ensure "
                    "you are providing the root domain and not any subdomains (e.g., example.com, not "
                    "subdomain.example.com)",
                )
            zone = self.add_zone(name, status=ZONE_PENDING, zone_type=zone_type)
        return self.ok(zone.payload())

    # --- records --------------------------------------------------------------------

    def list_records(self, zone: Zone, request: Request) -> Response:
        with self.lock:
            records = list(self.records[zone.id].values())
        checks = []
        for key, values in request.query.items():
            value = values[-1]
            field, _, op = key.partition(".")
            if field not in ("name", "content", "type", "comment", "proxied", "ttl") or op not in (
                "",
                "exact",
                "contains",
                "startswith",
                "endswith",
            ):
                continue
            if field == "name" and op in ("", "exact"):
                value = self._fqdn(zone, value)
            checks.append((field, op or "exact", value))

        def check(record: dict[str, Any], field: str, op: str, value: str) -> bool:
            actual = record.get(field)
            text = str(actual).lower() if isinstance(actual, bool) else str(actual if actual is not None else "")
            wanted = value.lower() if field in ("name", "type", "proxied") else value
            if field in ("name", "type"):
                text = text.lower()
            return {
                "exact": text == wanted,
                "contains": wanted in text,
                "startswith": text.startswith(wanted),
                "endswith": text.endswith(wanted),
            }[op]

        match_any = request.param("match") == "any"
        if checks:
            combine = any if match_any else all
            records = [r for r in records if combine(check(r, *c) for c in checks)]
        order = request.param("order")
        if order in ("type", "name", "content", "ttl", "proxied"):
            records.sort(key=lambda r: str(r.get(order)), reverse=request.param("direction") == "desc")
        else:
            records.sort(key=lambda r: r["created_on"])
        return self._page(request, records, default=100, maximum=5000)

    @staticmethod
    def _fqdn(zone: Zone, name: str) -> str:
        name = name.lower().rstrip(".")
        if name in ("@", "") or name == zone.name:
            return zone.name
        if name.endswith("." + zone.name):
            return name
        # Cloudflare reads a name outside the zone as relative to it.
        return f"{name}.{zone.name}"

    def _validated(self, zone: Zone, body: Any, existing: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, 9207, "Request body is invalid.")
        merged = {**(existing or {}), **body}
        record_type = str(merged.get("type") or "").upper()
        if record_type not in RECORD_TYPES:
            raise ApiError(400, CODE_INVALID_TYPE, "DNS Validation Error: invalid record type")
        name = merged.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, CODE_INVALID_NAME, "DNS name is invalid.")
        content = merged.get("content")
        if not isinstance(content, str) or not content:
            raise ApiError(400, CODE_INVALID_CONTENT, "Content is required.")
        if record_type == "A":
            try:
                ipaddress.IPv4Address(content)
            except ValueError as exc:
                raise ApiError(400, CODE_INVALID_CONTENT, "Content for A record must be a valid IPv4 address.") from exc
        if record_type == "AAAA":
            try:
                ipaddress.IPv6Address(content)
            except ValueError as exc:
                raise ApiError(
                    400, CODE_INVALID_CONTENT, "Content for AAAA record must be a valid IPv6 address."
                ) from exc
        ttl = merged.get("ttl", 1)
        if not isinstance(ttl, int) or not (ttl == 1 or 30 <= ttl <= 86400):
            raise ApiError(
                400, CODE_INVALID_TTL, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."
            )
        proxied = bool(merged.get("proxied", False))
        if proxied and record_type not in PROXIABLE:
            raise ApiError(400, 9004, f"{record_type} records cannot be proxied.")
        return {
            "type": record_type,
            "name": self._fqdn(zone, name),
            "content": content,
            "ttl": ttl,
            "proxied": proxied,
            "comment": merged.get("comment"),
            "tags": list(merged.get("tags") or []),
            "priority": merged.get("priority"),
        }

    def _check_conflicts(self, zone: Zone, fields: dict[str, Any], ignore_id: str | None) -> None:
        for other in self.records[zone.id].values():
            if other["id"] == ignore_id or other["name"] != fields["name"]:
                continue
            if other["type"] == fields["type"] and other["content"] == fields["content"]:
                raise ApiError(400, CODE_IDENTICAL_RECORD, "An identical record already exists.")
            if other["type"] == "CNAME" and fields["type"] != "CNAME":
                raise ApiError(400, CODE_HOST_HAS_CNAME, "A CNAME record with that host already exists.")
            if fields["type"] == "CNAME" and other["type"] in ("A", "AAAA", "CNAME"):
                raise ApiError(400, CODE_CNAME_CONFLICT, "An A, AAAA, or CNAME record with that host already exists.")

    def _new_record(self, zone: Zone, fields: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        record = {
            "id": secrets.token_hex(16),
            "zone_id": zone.id,
            "zone_name": zone.name,
            **fields,
            "proxiable": fields["type"] in PROXIABLE,
            "locked": False,
            "settings": {},
            "meta": {"auto_added": False, "managed_by_apps": False, "managed_by_argo_tunnel": False},
            "created_on": _stamp(now),
            "modified_on": _stamp(now),
        }
        if record["priority"] is None:
            record.pop("priority")
        return record

    def create_record(self, zone: Zone, request: Request) -> Response:
        fields = self._validated(zone, request.body, None)
        with self.lock:
            self._check_conflicts(zone, fields, None)
            record = self._new_record(zone, fields)
            self.records[zone.id][record["id"]] = record
        return self.ok(record)

    def batch_records(self, zone: Zone, request: Request) -> Response:
        """`POST /zones/:id/dns_records/batch`: deletes, patches, puts, then posts, in that
        order and in one transaction: the first operation refused refuses the batch and
        changes nothing. Each list's result is in the order it was given."""
        body = request.body
        if not isinstance(body, dict):
            raise ApiError(400, 9207, "Request body is invalid.")
        lists: dict[str, list[Any]] = {}
        for key in ("deletes", "patches", "puts", "posts"):
            value = body.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise ApiError(400, 9207, f"Request body is invalid: {key} must be a list of objects.")
            lists[key] = value
        if sum(len(items) for items in lists.values()) > BATCH_LIMIT:
            raise ApiError(400, CODE_BATCH_TOO_LARGE, f"Batch exceeds the limit of {BATCH_LIMIT} operations.")
        result: dict[str, list[dict[str, Any]]] = {key: [] for key in lists}
        with self.lock:
            live = self.records[zone.id]
            self.records[zone.id] = work = {rid: dict(record) for rid, record in live.items()}
            try:
                for item in lists["deletes"]:
                    record = self._record(zone, str(item.get("id", "")))
                    result["deletes"].append(work.pop(record["id"]))
                for key in ("patches", "puts"):
                    for item in lists[key]:
                        record = self._record(zone, str(item.get("id", "")))
                        changes = {k: v for k, v in item.items() if k != "id"}
                        fields = self._validated(zone, changes, record if key == "patches" else None)
                        self._check_conflicts(zone, fields, record["id"])
                        record.update(fields, proxiable=fields["type"] in PROXIABLE, modified_on=_stamp(time.time()))
                        if record.get("priority") is None:
                            record.pop("priority", None)
                        result[key].append(record)
                for item in lists["posts"]:
                    fields = self._validated(zone, item, None)
                    self._check_conflicts(zone, fields, None)
                    record = self._new_record(zone, fields)
                    work[record["id"]] = record
                    result["posts"].append(record)
            except ApiError:
                self.records[zone.id] = live
                raise
        return self.ok(result)

    def update_record(self, zone: Zone, record: dict[str, Any], request: Request, *, partial: bool) -> Response:
        fields = self._validated(zone, request.body, record if partial else None)
        with self.lock:
            self._check_conflicts(zone, fields, record["id"])
            record.update(fields, proxiable=fields["type"] in PROXIABLE, modified_on=_stamp(time.time()))
            if record.get("priority") is None:
                record.pop("priority", None)
        return self.ok(record)

    # --- sandbox control --------------------------------------------------------------

    def control(self, request: Request) -> Response:
        if request.path == "/__sandbox/zones" and request.method == "POST":
            body = request.body if isinstance(request.body, dict) else {}
            name = body.get("name")
            status = body.get("status", ZONE_ACTIVE)
            if not isinstance(name, str) or not name:
                return Response(400, {"error": "name is required"})
            if status not in (ZONE_ACTIVE, ZONE_PENDING):
                return Response(400, {"error": "status is active or pending"})
            if self.zone_named(name) is not None:
                return Response(409, {"error": f"zone {name} exists"})
            zone = self.add_zone(name, zone_id=body.get("id"), status=status)
            return Response(201, {"zone": zone.payload()})
        if request.path == "/__sandbox/zones" and request.method == "GET":
            with self.lock:
                zones = [zone.payload() for zone in self.zones.values()]
            return Response(200, {"zones": zones})
        parts = [p for p in request.path.split("/") if p]
        if len(parts) == 4 and parts[1] == "zones" and parts[3] == "delegate" and request.method == "POST":
            with self.lock:
                found = self.zones.get(parts[2]) or self.zone_named(parts[2])
            if found is None:
                return Response(404, {"error": f"no zone {parts[2]}"})
            return Response(200, {"zone": self.delegate(found).payload()})
        if request.path == "/__sandbox/resolve" and request.method == "GET":
            return self.resolve(request)
        return super().control(request)

    # --- a public resolver ------------------------------------------------------------

    def resolve(self, request: Request) -> Response:
        """DNS-over-HTTPS JSON, as a public resolver sees the zones: a zone answers only
        once its nameservers are delegated; a name with no records of its own falls
        under a wildcard one label up."""
        name = (request.param("name") or "").lower().rstrip(".")
        record_type = (request.param("type") or "A").upper()
        if not name or record_type not in DNS_TYPE_CODES:
            return Response(400, {"error": "name and a known type are required"})
        question = [{"name": f"{name}.", "type": DNS_TYPE_CODES[record_type]}]
        with self.lock:
            zones = [z for z in self.zones.values() if name == z.name or name.endswith("." + z.name)]
            zone = max(zones, key=lambda z: len(z.name), default=None)
            if zone is None or zone.status != ZONE_ACTIVE:
                return Response(200, {"Status": 3, "Question": question, "Answer": []})
            records = list(self.records[zone.id].values())
        if record_type == "NS" and name == zone.name:
            answers = [(name, ns, 86400) for ns in zone.name_servers]
        else:
            at_name = [r for r in records if r["name"] == name]
            if not at_name and name != zone.name:
                wildcard = "*." + name.split(".", 1)[1]
                at_name = [r for r in records if r["name"] == wildcard]
            if not at_name:
                return Response(200, {"Status": 3, "Question": question, "Answer": []})
            answers = [
                (name, f'"{r["content"]}"' if r["type"] == "TXT" else r["content"], 300 if r["ttl"] == 1 else r["ttl"])
                for r in at_name
                if r["type"] == record_type
            ]
        answer = [
            {"name": f"{owner}.", "type": DNS_TYPE_CODES[record_type], "TTL": ttl, "data": data}
            for owner, data, ttl in answers
        ]
        return Response(200, {"Status": 0, "Question": question, "Answer": answer})
