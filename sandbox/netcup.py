"""An emulator of Netcup's SCP webservice (SOAP 1.1 at /WSEndUser, namespace
http://enduser.service.web.vcp.netcup.de/), for the operations the Hub calls:
getVServers and the snapshots (getSnapshots, createSnapshot, deleteSnapshot).

Netcup documents getVServers, getVServerState, startVServer, ... with `loginName`,
`password` and `vserverName` and WebServiceSimpleResult answers; the snapshot operations,
their parameters (`snapshotName`, `description`), the fields of a snapshot (`name`,
`description`, `creationTime`, `state`) and `success`/`message` in a
WebServiceSimpleResult are this emulator's guess at the same style (sandbox/README.md).
A wrong login or an unknown vserver is a SOAP fault (HTTP 500), as the real service
answers. Faults and lost answers are queued through the usual `/__sandbox/faults`
(a fault's `code` names the operation it hits);
`POST /__sandbox/vservers {"name": ...}` adds a contract server to the account."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from sandbox.faults import HttpFault, TokenBucket
from sandbox.httpbase import ApiError, EmulatorServer, Request, Response

NAMESPACE = "http://enduser.service.web.vcp.netcup.de/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PATH = "/WSEndUser"


def _operation_of(body: str) -> str | None:
    try:
        root = ET.fromstring(body)  # noqa: S314 - the sandbox's own traffic
    except ET.ParseError:
        return None
    call = next(iter(root.find(f"{{{SOAP_ENV}}}Body") or []), None)
    return call.tag.split("}", 1)[1] if call is not None and "}" in call.tag else None


def soap_answer(operation: str, returns: list[str]) -> Response:
    body = "".join(f"<return>{item}</return>" for item in returns)
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{SOAP_ENV}"><S:Body>'
        f'<ns2:{operation}Response xmlns:ns2="{NAMESPACE}">{body}</ns2:{operation}Response>'
        "</S:Body></S:Envelope>"
    )
    return Response(200, raw=xml.encode(), content_type="text/xml; charset=utf-8")


def soap_fault(message: str, *, status: int = 500) -> Response:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{SOAP_ENV}"><S:Body><S:Fault>'
        f"<faultcode>S:Server</faultcode><faultstring>{escape(message)}</faultstring>"
        "</S:Fault></S:Body></S:Envelope>"
    )
    return Response(status, raw=xml.encode(), content_type="text/xml; charset=utf-8")


def simple_result(success: bool, message: str) -> str:
    return f"<success>{'true' if success else 'false'}</success><message>{escape(message)}</message>"


@dataclass
class NetcupSnapshot:
    name: str
    description: str
    created: float

    def xml(self) -> str:
        created = datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"<name>{escape(self.name)}</name><description>{escape(self.description)}</description>"
            f"<creationTime>{created}</creationTime><state>AVAILABLE</state>"
        )


@dataclass
class VServer:
    name: str
    snapshots: dict[str, NetcupSnapshot] = field(default_factory=dict)


class NetcupEmulator(EmulatorServer):
    name = "netcup"

    def __init__(self, address: tuple[str, int], *, login: str, password: str) -> None:
        super().__init__(address, token=password, bucket=TokenBucket(capacity=10_000, refill_per_second=100.0))
        self.login = login
        self.lock = threading.Lock()
        self.vservers: dict[str, VServer] = {}

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    # The webservice authenticates inside each call (loginName, password).
    def authenticate(self, request: Request) -> None:
        return None

    def rate_headers(self, remaining: int) -> dict[str, str]:
        return {}

    def rate_limited_error(self) -> ApiError:
        return ApiError(500, "rate", "too many requests")

    def error_payload(self, status: int, code: str | int, message: str, details: Any) -> Any:
        return {"error": message}

    def _take_fault(self, request: Request) -> HttpFault | None:
        """A queued fault for this call: every call is POST /WSEndUser, so a fault's
        `code`, when given, names the SOAP operation it is for."""
        operation = _operation_of(request.body) if isinstance(request.body, str) else None
        plan = self.faults
        with plan._lock:
            for fault in plan.faults:
                if fault.matches(request.method, request.path) and fault.code in (None, operation):
                    fault.count -= 1
                    if fault.count <= 0:
                        plan.faults.remove(fault)
                    return fault
        return None

    def handle_api(self, request: Request) -> Response:
        fault = self._take_fault(request)
        if fault is not None and fault.drop_answer:
            served = self._serve(request)
            served.dropped = True
            return served
        if fault is not None:
            return soap_fault(fault.message or "injected fault", status=fault.status)
        return self._serve(request)

    def route(self, request: Request) -> Response:
        if request.path != PATH or request.method != "POST" or not isinstance(request.body, str):
            return soap_fault("expected a SOAP request: POST text/xml to /WSEndUser")
        try:
            root = ET.fromstring(request.body)  # noqa: S314 - the sandbox's own traffic
        except ET.ParseError:
            return soap_fault("unreadable SOAP envelope")
        body = root.find(f"{{{SOAP_ENV}}}Body")
        call = next(iter(body), None) if body is not None else None
        if call is None or not call.tag.startswith(f"{{{NAMESPACE}}}"):
            return soap_fault("no operation of the WSEndUser namespace in the body")
        operation = call.tag.split("}", 1)[1]
        params = {child.tag.split("}")[-1]: (child.text or "") for child in call}
        if params.get("loginName") != self.login or params.get("password") != self.token:
            return soap_fault("Validation error: login failed (wrong loginName or webservice password)")
        handler = getattr(self, f"op_{operation}", None)
        if handler is None:
            return soap_fault(f"Cannot find dispatch method for {{{NAMESPACE}}}{operation}")
        return handler(operation, params)

    def _vserver(self, params: dict[str, str]) -> VServer | Response:
        name = params.get("vserverName", "")
        with self.lock:
            found = self.vservers.get(name)
        return found if found is not None else soap_fault(f"vServer {name!r} not found in this account")

    def op_getVServers(self, operation: str, params: dict[str, str]) -> Response:  # noqa: N802 - SOAP name
        with self.lock:
            names = sorted(self.vservers)
        return soap_answer(operation, [escape(n) for n in names])

    def op_getSnapshots(self, operation: str, params: dict[str, str]) -> Response:  # noqa: N802
        vserver = self._vserver(params)
        if isinstance(vserver, Response):
            return vserver
        with self.lock:
            items = sorted(vserver.snapshots.values(), key=lambda s: s.created)
        return soap_answer(operation, [s.xml() for s in items])

    def op_createSnapshot(self, operation: str, params: dict[str, str]) -> Response:  # noqa: N802
        vserver = self._vserver(params)
        if isinstance(vserver, Response):
            return vserver
        name = params.get("snapshotName", "")
        if not name or len(name) > 64:
            return soap_answer(operation, [simple_result(False, "snapshotName must be 1-64 characters")])
        with self.lock:
            if name in vserver.snapshots:
                return soap_answer(operation, [simple_result(False, f"a snapshot named {name} exists")])
            vserver.snapshots[name] = NetcupSnapshot(name, params.get("description", ""), time.time())
        return soap_answer(operation, [simple_result(True, "snapshot created")])

    def op_deleteSnapshot(self, operation: str, params: dict[str, str]) -> Response:  # noqa: N802
        vserver = self._vserver(params)
        if isinstance(vserver, Response):
            return vserver
        with self.lock:
            removed = vserver.snapshots.pop(params.get("snapshotName", ""), None)
        if removed is None:
            return soap_answer(operation, [simple_result(False, "no such snapshot")])
        return soap_answer(operation, [simple_result(True, "snapshot deleted")])

    def control(self, request: Request) -> Response:
        if request.path == "/__sandbox/vservers" and request.method == "POST":
            name = (request.body or {}).get("name", "") if isinstance(request.body, dict) else ""
            if not name:
                return Response(400, {"error": "name required"})
            with self.lock:
                self.vservers.setdefault(name, VServer(name))
            return Response(201, {"name": name})
        if request.path == "/__sandbox/vservers" and request.method == "GET":
            with self.lock:
                listing = {n: sorted(v.snapshots) for n, v in self.vservers.items()}
            return Response(200, {"vservers": listing})
        return super().control(request)
