"""A Hetzner Cloud API emulator that the unmodified `hcloud` client drives through
`HCLOUD_API_ENDPOINT`: servers (each one a real sandbox host), actions, SSH keys,
labels, snapshots (create_image, listed by label and type, deleted) and the catalogue
lookups, with the real API's error codes and RateLimit-* headers."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sandbox.faults import HttpFault, TokenBucket
from sandbox.httpbase import ApiError, EmulatorServer, Request, Response

API_PREFIX = "/v1"

LOCATIONS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "fsn1",
        "description": "Falkenstein DC Park 1",
        "country": "DE",
        "city": "Falkenstein",
        "latitude": 50.47612,
        "longitude": 12.370071,
        "network_zone": "eu-central",
    },
    {
        "id": 2,
        "name": "nbg1",
        "description": "Nuremberg DC Park 1",
        "country": "DE",
        "city": "Nuremberg",
        "latitude": 49.452102,
        "longitude": 11.076665,
        "network_zone": "eu-central",
    },
    {
        "id": 3,
        "name": "hel1",
        "description": "Helsinki DC Park 1",
        "country": "FI",
        "city": "Helsinki",
        "latitude": 60.169855,
        "longitude": 24.938379,
        "network_zone": "eu-central",
    },
    {
        "id": 4,
        "name": "ash",
        "description": "Ashburn, VA",
        "country": "US",
        "city": "Ashburn, VA",
        "latitude": 39.045821,
        "longitude": -77.487073,
        "network_zone": "us-east",
    },
    {
        "id": 5,
        "name": "hil",
        "description": "Hillsboro, OR",
        "country": "US",
        "city": "Hillsboro, OR",
        "latitude": 45.54222,
        "longitude": -122.95194,
        "network_zone": "us-west",
    },
]

# (id, name, cores, memory GB, disk GB, hourly EUR, monthly EUR)
_SERVER_TYPES = [
    (22, "cpx11", 2, 2.0, 40, "0.0074", "4.35"),
    (23, "cpx21", 3, 4.0, 80, "0.0113", "8.24"),
    (24, "cpx31", 4, 8.0, 160, "0.0214", "15.59"),
    (25, "cpx41", 8, 16.0, 240, "0.0399", "29.09"),
    (26, "cpx51", 16, 32.0, 360, "0.0798", "58.15"),
    (104, "cx22", 2, 4.0, 40, "0.0060", "3.79"),
    (105, "cx32", 4, 8.0, 80, "0.0113", "6.80"),
]

IMAGES: list[dict[str, Any]] = [
    {"id": image_id, "name": f"{flavor}-{version}", "description": f"{flavor.title()} {version}", "os_flavor": flavor}
    | {"os_version": version}
    for image_id, flavor, version in [
        (114690387, "debian", "12"),
        (161547269, "ubuntu", "24.04"),
        (67794396, "ubuntu", "22.04"),
    ]
]

_LABEL_NAME = r"[a-z0-9A-Z]([a-z0-9A-Z._-]{0,61}[a-z0-9A-Z])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9A-Z]([a-z0-9A-Z.-]{{0,251}}[a-z0-9A-Z])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
_HOST_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_SERVER_NAME = re.compile(rf"^{_HOST_LABEL}(\.{_HOST_LABEL})*$")

STATUS_BY_CODE = {
    "unauthorized": 401,
    "forbidden": 403,
    "invalid_input": 400,
    "json_error": 400,
    "locked": 423,
    "not_found": 404,
    "rate_limit_exceeded": 429,
    "resource_limit_exceeded": 403,
    "resource_unavailable": 412,
    "uniqueness_error": 409,
    "protected": 423,
    "maintenance": 503,
    "conflict": 409,
    "service_error": 503,
    "server_error": 500,
    "unavailable": 503,
    "timeout": 504,
}


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def error(code: str, message: str, details: Any = None) -> ApiError:
    return ApiError(STATUS_BY_CODE.get(code, 400), code, message, details)


def server_type_payload(row: tuple[int, str, int, float, int, str, str]) -> dict[str, Any]:
    type_id, name, cores, memory, disk, hourly, monthly = row
    prices = [
        {
            "location": loc["name"],
            "price_hourly": {"net": hourly, "gross": hourly},
            "price_monthly": {"net": monthly, "gross": monthly},
            "included_traffic": 21990232555520,
            "price_per_tb_traffic": {"net": "1.0000", "gross": "1.1900"},
        }
        for loc in LOCATIONS
    ]
    return {
        "id": type_id,
        "name": name,
        "description": name.upper(),
        "category": "regular_purpose",
        "cores": cores,
        "memory": memory,
        "disk": disk,
        "deprecated": False,
        "deprecation": None,
        "prices": prices,
        "storage_type": "local",
        "cpu_type": "shared",
        "architecture": "x86",
        "locations": [
            {"id": loc["id"], "name": loc["name"], "deprecation": None, "available": True, "recommended": True}
            for loc in LOCATIONS
        ],
    }


SERVER_TYPES = [server_type_payload(row) for row in _SERVER_TYPES]


def image_payload(image: dict[str, Any]) -> dict[str, Any]:
    return {
        **image,
        "type": "system",
        "status": "available",
        "image_size": None,
        "disk_size": 5,
        "created": "2023-06-13T06:00:02+00:00",
        "created_from": None,
        "bound_to": None,
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deleted": None,
        "labels": {},
        "architecture": "x86",
    }


def ssh_fingerprint(public_key: str) -> str:
    """The MD5 fingerprint Hetzner reports, from an OpenSSH public key line."""
    parts = public_key.split()
    invalid = error("invalid_input", "invalid public key", _field_details("public_key", "invalid"))
    if len(parts) < 2:
        raise invalid
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as exc:
        raise invalid from exc
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def validate_labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise error("invalid_input", "invalid input in field 'labels'", _field_details("labels", "must be an object"))
    for key, value in labels.items():
        if not isinstance(value, str) or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise error(
                "invalid_input", "invalid input in field 'labels'", _field_details("labels", f"invalid label {key!r}")
            )
    return dict(labels)


def _field_details(name: str, message: str) -> dict[str, Any]:
    return {"fields": [{"name": name, "messages": [message]}]}


_SELECTOR = re.compile(r"^\s*(!)?\s*([^=!,\s]+)\s*(?:(==|=|!=)\s*([^,\s]*)|\s+(in|notin)\s+\(([^)]*)\))?\s*$")


def parse_label_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """Hetzner's label selector: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`."""
    clauses: list[tuple[str, str, set[str]]] = []
    for part in _split_selector(selector):
        match = _SELECTOR.match(part)
        if not match:
            raise error("invalid_input", f"invalid label_selector: {selector!r}")
        negate, key, op, value, set_op, values = match.groups()
        if negate:
            clauses.append(("absent", key, set()))
        elif op in ("=", "=="):
            clauses.append(("in", key, {value}))
        elif op == "!=":
            clauses.append(("notin", key, {value}))
        elif set_op:
            clauses.append((set_op, key, {v.strip() for v in values.split(",")}))
        else:
            clauses.append(("present", key, set()))

    def matches(labels: dict[str, str]) -> bool:
        for kind, key, options in clauses:
            ok = {
                "absent": key not in labels,
                "present": key in labels,
                "in": labels.get(key) in options,
                "notin": labels.get(key) not in options,
            }[kind]
            if not ok:
                return False
        return True

    return matches


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


@dataclass
class Action:
    id: int
    command: str
    resources: list[dict[str, Any]]
    started: float
    ready_at: float
    # Called once the action is due; returns an error dict to fail the action.
    done: threading.Event = field(default_factory=threading.Event)
    error: dict[str, str] | None = None
    finished: float | None = None

    def payload(self) -> dict[str, Any]:
        now = time.time()
        if self.finished is None and self.done.is_set() and now >= self.ready_at:
            self.finished = max(now, self.ready_at)
        if self.finished is None:
            span = max(self.ready_at - self.started, 0.001)
            progress = min(99, int(100 * (now - self.started) / span))
            status = "running"
        else:
            progress = 100
            status = "error" if self.error else "success"
        return {
            "id": self.id,
            "command": self.command,
            "status": status,
            "progress": progress,
            "started": now_iso(self.started),
            "finished": now_iso(self.finished) if self.finished is not None else None,
            "resources": self.resources,
            "error": self.error,
        }


@dataclass
class Server:
    id: int
    name: str
    server_type: dict[str, Any]
    image: dict[str, Any]
    location: dict[str, Any]
    labels: dict[str, str]
    created: float
    ipv4: str
    ipv6: str
    ssh_keys: list[int]
    user_data: str | None
    status: str = "initializing"
    host_started: bool = False

    def payload(self) -> dict[str, Any]:
        datacenter = {
            "id": self.location["id"],
            "name": f"{self.location['name']}-dc{self.location['id']}",
            "description": f"{self.location['description']} virtual DC",
            "location": self.location,
            "server_types": {"supported": [], "available": [], "available_for_migration": []},
        }
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created": now_iso(self.created),
            "public_net": {
                "ipv4": {"id": self.id + 500000, "ip": self.ipv4, "blocked": False, "dns_ptr": _dns_ptr(self.ipv4)},
                "ipv6": {"id": self.id + 600000, "ip": self.ipv6, "blocked": False, "dns_ptr": []},
                "floating_ips": [],
                "firewalls": [],
            },
            "private_net": [],
            "server_type": self.server_type,
            "datacenter": datacenter,
            "location": self.location,
            "image": self.image,
            "iso": None,
            "rescue_enabled": False,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False},
            "labels": self.labels,
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": self.server_type["disk"],
            "placement_group": None,
        }


@dataclass
class Snapshot:
    id: int
    type: str
    description: str
    labels: dict[str, str]
    created: float
    ready_at: float
    server_id: int
    server_name: str
    disk_size: float
    os_flavor: str
    os_version: str

    def payload(self) -> dict[str, Any]:
        available = time.time() >= self.ready_at
        return {
            "id": self.id,
            "type": self.type,
            "status": "available" if available else "creating",
            "name": None,
            "description": self.description,
            "image_size": 0.42 if available else None,
            "disk_size": self.disk_size,
            "created": now_iso(self.created),
            "created_from": {"id": self.server_id, "name": self.server_name},
            "bound_to": self.server_id if self.type == "backup" else None,
            "os_flavor": self.os_flavor,
            "os_version": self.os_version,
            "rapid_deploy": False,
            "protection": {"delete": False},
            "deprecated": None,
            "deleted": None,
            "labels": self.labels,
            "architecture": "x86",
        }


def _dns_ptr(ip: str) -> str:
    return "static." + ".".join(reversed(ip.split("."))) + ".clients.your-server.de"


class HostBackend(Protocol):
    """What the emulator needs from the sandbox hosts (implemented by HostManager)."""

    def launch(self, *, name: str, public_keys: list[str]) -> str: ...

    def wait_ready(self, addr: str) -> None: ...

    def stop(self, addr: str) -> None: ...

    def freeze(self, addr: str) -> None: ...

    def thaw(self, addr: str) -> None: ...


class HetznerEmulator(EmulatorServer):
    """With a `hosts` backend every server created is a real sandbox host; without one
    a server gets an address from the documentation range and no host."""

    name = "hetzner"

    def __init__(
        self,
        address: tuple[str, int],
        *,
        token: str,
        rate_limit_per_hour: int = 3600,
        burst: int | None = None,
        action_seconds: float = 1.0,
        hosts: HostBackend | None = None,
    ) -> None:
        bucket = TokenBucket(capacity=burst or rate_limit_per_hour, refill_per_second=rate_limit_per_hour / 3600)
        super().__init__(address, token=token, bucket=bucket)
        self.rate_limit_per_hour = rate_limit_per_hour
        self.action_seconds = action_seconds
        self.hosts = hosts
        self.lock = threading.RLock()
        self.servers: dict[int, Server] = {}
        self.actions: dict[int, Action] = {}
        self.ssh_keys: dict[int, dict[str, Any]] = {}
        # Snapshots and backups made from servers (the system images are IMAGES).
        self.images: dict[int, Snapshot] = {}
        self._ids = 1000
        self._fake_ip = ipaddress.IPv4Address("203.0.113.10")

    def _next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    # --- envelope -------------------------------------------------------------------

    def error_payload(self, status: int, code: str | int, message: str, details: Any) -> Any:
        return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}

    def rate_headers(self, remaining: int) -> dict[str, str]:
        reset = time.time() + self.bucket.seconds_until(self.bucket.capacity)
        return {
            "RateLimit-Limit": str(self.rate_limit_per_hour),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(int(reset)),
        }

    def rate_limited_error(self) -> ApiError:
        return error("rate_limit_exceeded", "limit of requests per hour reached")

    def fault_error(self, fault: HttpFault) -> ApiError:
        if fault.status == 429:
            return self.rate_limited_error()
        codes = {500: "server_error", 502: "bad_gateway", 503: "unavailable", 504: "timeout"}
        return ApiError(
            fault.status, fault.code or codes.get(fault.status, "server_error"), fault.message or "injected fault"
        )

    def authenticate(self, request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise error("unauthorized", "unable to authenticate")

    # --- routing --------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        if not request.path.startswith(API_PREFIX + "/"):
            raise error("not_found", "not found")
        parts = [p for p in request.path[len(API_PREFIX) :].split("/") if p]
        method = request.method
        resource = parts[0] if parts else ""
        ident = _int_id(parts[1]) if len(parts) > 1 else None
        if resource == "servers":
            if len(parts) == 1 and method == "GET":
                return self.list_servers(request)
            if len(parts) == 1 and method == "POST":
                return self.create_server(request)
            if len(parts) == 2:
                server = self._server(ident)
                if method == "GET":
                    return Response(200, {"server": server.payload()})
                if method == "PUT":
                    return self.update_server(server, request)
                if method == "DELETE":
                    return self.delete_server(server)
            if len(parts) == 3 and parts[2] == "actions" and method == "GET":
                return self.list_actions(request, server_id=self._server(ident).id)
            if len(parts) == 4 and parts[2] == "actions":
                server = self._server(ident)
                action_id = _int_id(parts[3])
                if method == "GET" and action_id is not None:
                    return Response(200, {"action": self._action(action_id).payload()})
                if method == "POST" and parts[3] == "create_image":
                    return self.create_image(server, request)
                if method == "POST":
                    return self.power_action(server, parts[3])
        if resource == "actions":
            if len(parts) == 1 and method == "GET":
                return self.list_actions(request)
            if len(parts) == 2 and method == "GET":
                return Response(200, {"action": self._action(ident).payload()})
        if resource == "ssh_keys":
            return self.route_ssh_keys(request, parts, ident)
        if resource == "images":
            return self.route_images(request, ident, len(parts))
        if resource in ("server_types", "locations") and method == "GET":
            return self.route_catalogue(request, resource, ident, len(parts))
        raise error("not_found", "not found")

    def route_catalogue(self, request: Request, resource: str, ident: int | None, depth: int) -> Response:
        items: list[dict[str, Any]]
        if resource == "server_types":
            items, singular = SERVER_TYPES, "server_type"
        else:
            items, singular = LOCATIONS, "location"
        if depth == 2:
            for item in items:
                if item["id"] == ident:
                    return Response(200, {singular: item})
            raise error("not_found", f"{singular} with ID '{ident}' not found")
        name = request.param("name")
        if name:
            items = [i for i in items if i["name"] == name]
        architecture = request.param("architecture")
        if architecture:
            items = [i for i in items if i.get("architecture", "x86") == architecture]
        return self.paginate(request, resource, items)

    def paginate(self, request: Request, key: str, items: list[dict[str, Any]]) -> Response:
        page = request.int_param("page", 1)
        per_page = request.int_param("per_page", 25, maximum=50)
        total = len(items)
        last_page = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        meta = {
            "pagination": {
                "page": page,
                "per_page": per_page,
                "previous_page": page - 1 if page > 1 else None,
                "next_page": page + 1 if page < last_page else None,
                "last_page": last_page,
                "total_entries": total,
            }
        }
        return Response(200, {key: chunk, "meta": meta})

    # --- servers --------------------------------------------------------------------

    def _server(self, server_id: int | None) -> Server:
        with self.lock:
            server = self.servers.get(server_id) if server_id is not None else None
        if server is None:
            raise error("not_found", f"server with ID '{server_id}' not found")
        return server

    def _action(self, action_id: int | None) -> Action:
        with self.lock:
            action = self.actions.get(action_id) if action_id is not None else None
        if action is None:
            raise error("not_found", f"action with ID '{action_id}' not found")
        return action

    def _new_action(self, command: str, server_id: int, *, seconds: float | None = None) -> Action:
        started = time.time()
        action = Action(
            id=self._next_id(),
            command=command,
            resources=[{"id": server_id, "type": "server"}],
            started=started,
            ready_at=started + (self.action_seconds if seconds is None else seconds),
        )
        with self.lock:
            self.actions[action.id] = action
        return action

    def list_servers(self, request: Request) -> Response:
        with self.lock:
            servers = sorted(self.servers.values(), key=lambda s: s.id)
        name = request.param("name")
        if name:
            servers = [s for s in servers if s.name == name]
        statuses = request.query.get("status")
        if statuses:
            servers = [s for s in servers if s.status in statuses]
        selector = request.param("label_selector")
        if selector:
            predicate = parse_label_selector(selector)
            servers = [s for s in servers if predicate(s.labels)]
        return self.paginate(request, "servers", [s.payload() for s in servers])

    def _lookup(self, items: list[dict[str, Any]], ref: Any, field_name: str) -> dict[str, Any]:
        for item in items:
            if ref in (item["id"], item["name"]) or str(ref) == str(item["id"]):
                return item
        raise error("invalid_input", f"invalid input in field '{field_name}'", _field_details(field_name, "not found"))

    def create_server(self, request: Request, *, with_host: bool = True) -> Response:
        body = request.body
        if not isinstance(body, dict):
            raise error("invalid_input", "request body must be an object")
        name = body.get("name")
        if not isinstance(name, str) or not _SERVER_NAME.match(name):
            raise error("invalid_input", "invalid input in field 'name'", _field_details("name", "invalid hostname"))
        server_type = self._lookup(SERVER_TYPES, body.get("server_type"), "server_type")
        image = self._lookup([image_payload(i) for i in IMAGES], body.get("image"), "image")
        location = self._lookup(LOCATIONS, body.get("location") or "fsn1", "location")
        labels = validate_labels(body.get("labels"))
        ssh_key_ids = []
        for ref in body.get("ssh_keys") or []:
            key = next((k for k in self.ssh_keys.values() if ref in (k["id"], k["name"])), None)
            if key is None:
                raise error("invalid_input", f"SSH key '{ref}' not found", _field_details("ssh_keys", "not found"))
            ssh_key_ids.append(key["id"])
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > 32 * 1024):
            raise error("invalid_input", "invalid input in field 'user_data'", _field_details("user_data", "too long"))
        with self.lock:
            if any(s.name == name for s in self.servers.values()):
                raise error("uniqueness_error", "server name is already used", {"fields": [{"name": "name"}]})
            server = Server(
                id=self._next_id(),
                name=name,
                server_type=server_type,
                image=image,
                location=location,
                labels=labels,
                created=time.time(),
                ipv4="",
                ipv6="",
                ssh_keys=ssh_key_ids,
                user_data=user_data,
            )
            self.servers[server.id] = server
        create = self._new_action("create_server", server.id)
        start = self._new_action("start_server", server.id)
        if self.hosts is None or not with_host:
            server.ipv4 = str(self._fake_ip + server.id % 200)
            server.status = "running"
            create.done.set()
            start.done.set()
        else:
            try:
                public_keys = [self.ssh_keys[key_id]["public_key"] for key_id in ssh_key_ids]
                server.ipv4 = self.hosts.launch(name=name, public_keys=public_keys)
            except Exception as exc:
                with self.lock:
                    self.servers.pop(server.id, None)
                raise error("resource_unavailable", f"no sandbox host available: {exc}") from exc
            server.host_started = True
            # The API answers at once, as the real one does; the actions stay running
            # until the host answers SSH.
            threading.Thread(target=self._boot, args=(server, create, start), daemon=True).start()
        server.ipv6 = f"2001:db8:{server.id % 65536:x}::/64"
        payload = {
            "server": server.payload(),
            "action": create.payload(),
            "next_actions": [start.payload()],
            "root_password": None,
        }
        return Response(201, payload)

    def _boot(self, server: Server, create: Action, start: Action) -> None:
        assert self.hosts is not None
        try:
            self.hosts.wait_ready(server.ipv4)
            server.status = "running"
        except Exception as exc:  # noqa: BLE001 - any failure to boot fails the action
            create.error = {"code": "server_error", "message": f"sandbox host failed to start: {exc}"}
            start.error = create.error
            server.status = "off"
        create.done.set()
        start.done.set()

    def update_server(self, server: Server, request: Request) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        with self.lock:
            if "name" in body:
                name = body["name"]
                if not isinstance(name, str) or not _SERVER_NAME.match(name):
                    raise error("invalid_input", "invalid input in field 'name'", _field_details("name", "invalid"))
                if any(s.name == name and s.id != server.id for s in self.servers.values()):
                    raise error("uniqueness_error", "server name is already used", {"fields": [{"name": "name"}]})
                server.name = name
            if "labels" in body:
                server.labels = validate_labels(body["labels"])
        return Response(200, {"server": server.payload()})

    def delete_server(self, server: Server) -> Response:
        with self.lock:
            self.servers.pop(server.id, None)
        action = self._new_action("delete_server", server.id, seconds=0.0)
        if server.host_started and self.hosts is not None:
            self.hosts.stop(server.ipv4)
        action.done.set()
        return Response(200, {"action": action.payload()})

    def power_action(self, server: Server, command: str) -> Response:
        known = {"poweron", "poweroff", "shutdown", "reboot", "reset"}
        if command not in known:
            raise error("not_found", "not found")
        action = self._new_action(
            {"poweron": "start_server", "poweroff": "stop_server"}.get(command, f"{command}_server"), server.id
        )
        if server.host_started and self.hosts is not None:
            # Powered off, a host keeps its address but stops answering, like a VPS.
            if command in ("poweroff", "shutdown"):
                self.hosts.freeze(server.ipv4)
                server.status = "off"
            elif command in ("poweron", "reboot", "reset"):
                self.hosts.thaw(server.ipv4)
                server.status = "running"
        else:
            server.status = "off" if command in ("poweroff", "shutdown") else "running"
        action.done.set()
        return Response(201, {"action": action.payload()})

    def list_actions(self, request: Request, server_id: int | None = None) -> Response:
        with self.lock:
            actions = sorted(self.actions.values(), key=lambda a: a.id)
        if server_id is not None:
            actions = [a for a in actions if any(r["id"] == server_id for r in a.resources)]
        ids = {int(i) for i in request.query.get("id", []) if i.isdigit()}
        if ids:
            actions = [a for a in actions if a.id in ids]
        payloads = [a.payload() for a in actions]
        statuses = request.query.get("status")
        if statuses:
            payloads = [p for p in payloads if p["status"] in statuses]
        return self.paginate(request, "actions", payloads)

    # --- images: the system images, and the snapshots made from servers ---------------

    def _all_images(self) -> list[dict[str, Any]]:
        with self.lock:
            made = [image.payload() for image in sorted(self.images.values(), key=lambda i: i.id)]
        return [image_payload(i) for i in IMAGES] + made

    def route_images(self, request: Request, ident: int | None, depth: int) -> Response:
        method = request.method
        if depth == 1 and method == "GET":
            items = self._all_images()
            types = request.query.get("type")
            if types:
                unknown = set(types) - {"system", "snapshot", "backup", "app"}
                if unknown:
                    raise error("invalid_input", f"invalid type: {sorted(unknown)}")
                items = [i for i in items if i["type"] in types]
            for param in ("name", "architecture", "status"):
                value = request.param(param)
                if value:
                    items = [i for i in items if i.get(param) == value]
            selector = request.param("label_selector")
            if selector:
                predicate = parse_label_selector(selector)
                items = [i for i in items if predicate(i["labels"])]
            return self.paginate(request, "images", items)
        if depth == 2:
            found = next((i for i in self._all_images() if i["id"] == ident), None)
            if found is None:
                raise error("not_found", f"image with ID '{ident}' not found")
            if method == "GET":
                return Response(200, {"image": found})
            if method == "DELETE":
                if found["type"] not in ("snapshot", "backup"):
                    raise error("forbidden", "only images of type snapshot and backup can be deleted")
                with self.lock:
                    self.images.pop(found["id"], None)
                return Response(204)
        raise error("not_found", "not found")

    def create_image(self, server: Server, request: Request) -> Response:
        """POST /servers/{id}/actions/create_image: a snapshot of the server's disk,
        `creating` until its action finishes, then `available`."""
        body = request.body if isinstance(request.body, dict) else {}
        image_type = body.get("type") or "snapshot"
        if image_type not in ("snapshot", "backup"):
            raise error("invalid_input", "invalid input in field 'type'", _field_details("type", "invalid"))
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise error("invalid_input", "invalid input in field 'description'", _field_details("description", "x"))
        labels = validate_labels(body.get("labels"))
        image_id = self._next_id()
        action = self._new_action("create_image", server.id)
        action.resources.append({"id": image_id, "type": "image"})
        snapshot = Snapshot(
            id=image_id,
            type=image_type,
            description=description or f"{server.name}-{now_iso()}",
            labels=labels,
            created=time.time(),
            ready_at=action.ready_at,
            server_id=server.id,
            server_name=server.name,
            disk_size=float(server.server_type["disk"]),
            os_flavor=str(server.image.get("os_flavor", "unknown")),
            os_version=str(server.image.get("os_version", "")),
        )
        with self.lock:
            self.images[image_id] = snapshot
        action.done.set()
        return Response(201, {"image": snapshot.payload(), "action": action.payload()})

    # --- ssh keys -------------------------------------------------------------------

    def route_ssh_keys(self, request: Request, parts: list[str], ident: int | None) -> Response:
        method = request.method
        if len(parts) == 1 and method == "GET":
            with self.lock:
                keys = sorted(self.ssh_keys.values(), key=lambda k: k["id"])
            for param in ("name", "fingerprint"):
                value = request.param(param)
                if value:
                    keys = [k for k in keys if k[param] == value]
            selector = request.param("label_selector")
            if selector:
                predicate = parse_label_selector(selector)
                keys = [k for k in keys if predicate(k["labels"])]
            return self.paginate(request, "ssh_keys", keys)
        if len(parts) == 1 and method == "POST":
            body = request.body if isinstance(request.body, dict) else {}
            name, public_key = body.get("name"), body.get("public_key")
            if not isinstance(name, str) or not name:
                raise error("invalid_input", "invalid input in field 'name'", _field_details("name", "required"))
            if not isinstance(public_key, str):
                raise error(
                    "invalid_input", "invalid input in field 'public_key'", _field_details("public_key", "required")
                )
            fingerprint = ssh_fingerprint(public_key)
            with self.lock:
                for key in self.ssh_keys.values():
                    if key["name"] == name:
                        raise error("uniqueness_error", "SSH key with the same name already exists", {})
                    if key["fingerprint"] == fingerprint:
                        raise error("uniqueness_error", "SSH key with the same fingerprint already exists", {})
                key = {
                    "id": self._next_id(),
                    "name": name,
                    "fingerprint": fingerprint,
                    "public_key": public_key.strip(),
                    "labels": validate_labels(body.get("labels")),
                    "created": now_iso(),
                }
                self.ssh_keys[key["id"]] = key
            return Response(201, {"ssh_key": key})
        if len(parts) == 2:
            with self.lock:
                found = self.ssh_keys.get(ident) if ident is not None else None
            if found is None:
                raise error("not_found", f"SSH key with ID '{ident}' not found")
            key = found
            if method == "GET":
                return Response(200, {"ssh_key": key})
            if method == "PUT":
                body = request.body if isinstance(request.body, dict) else {}
                if "name" in body:
                    key["name"] = body["name"]
                if "labels" in body:
                    key["labels"] = validate_labels(body["labels"])
                return Response(200, {"ssh_key": key})
            if method == "DELETE":
                with self.lock:
                    self.ssh_keys.pop(key["id"], None)
                return Response(204)
        raise error("not_found", "not found")

    # --- sandbox control --------------------------------------------------------------

    def control(self, request: Request) -> Response:
        if request.path == "/__sandbox/servers" and request.method == "POST":
            return self.control_create_server(request)
        if request.path == "/__sandbox/servers" and request.method == "GET":
            with self.lock:
                servers = [s.payload() for s in self.servers.values()]
            return Response(200, {"servers": servers})
        return super().control(request)

    def control_create_server(self, request: Request) -> Response:
        """Put a server straight into the account, as if bought outside the Hub (an
        orphan). With `"host": true` it gets a real sandbox host like any other."""
        body = request.body if isinstance(request.body, dict) else {}
        wants_host = bool(body.pop("host", False))
        try:
            return self.create_server(
                Request("POST", "/v1/servers", {}, {"server_type": "cpx31", "image": "debian-12", **body}, {}),
                with_host=wants_host,
            )
        except ApiError as exc:
            return Response(exc.status, self.error_payload(exc.status, exc.code, exc.message, exc.details))


def _int_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None
