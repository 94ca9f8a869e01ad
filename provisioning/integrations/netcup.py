"""The Netcup seam: its SCP webservice (SOAP 1.1, WSEndUser), for the snapshots of
contract servers. No SOAP library: the four operations the Hub calls are one envelope
each, and zeep (the well-kept Python SOAP client) would need the live WSDL at start-up.
Requests go through the provider policy (token bucket, timeouts). A SOAP fault comes
back as HTTP 500, so 5xx is not resent here (a fault is an answer, not an outage); the
next snapshot run tries again. Snapshots have names, not labels: the Hub's label is the
snapshot's name, and a snapshot is found by it before one is made."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache

import requests
from django.conf import settings

from hub.integrations.http import provider_session
from hub.integrations.ratelimit import provider_bucket

NAMESPACE = "http://enduser.service.web.vcp.netcup.de/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TIMEOUT = (5.0, 60.0)


class NetcupError(Exception):
    """The webservice failed (a SOAP fault, an unreadable answer, no answer)."""


@dataclass(frozen=True)
class NetcupSnapshot:
    name: str
    state: str  # "creating", "available"


@lru_cache(maxsize=2)
def _session_for(limits: tuple[int, float, int]) -> requests.Session:
    return provider_session(provider_bucket("netcup"), server_error_retries=0)


def _session() -> requests.Session:
    return _session_for(tuple(settings.PROVIDER_RATE_LIMITS["netcup"]))


def envelope(operation: str, params: dict[str, str]) -> bytes:
    root = ET.Element(f"{{{SOAP_ENV}}}Envelope")
    body = ET.SubElement(root, f"{{{SOAP_ENV}}}Body")
    call = ET.SubElement(body, f"{{{NAMESPACE}}}{operation}")
    for name, value in params.items():
        ET.SubElement(call, name).text = value
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def call(operation: str, **params: str) -> list[ET.Element]:
    """Call one operation with the account's credentials; its <return> elements."""
    credentials = {"loginName": settings.NETCUP_SCP_LOGIN, "password": settings.NETCUP_SCP_PASSWORD}
    try:
        response = _session().post(
            settings.NETCUP_SCP_ENDPOINT,
            data=envelope(operation, {**credentials, **params}),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
            timeout=TIMEOUT,
        )
    except requests.RequestException as exc:
        raise NetcupError(f"netcup: {operation}: {type(exc).__name__}: {exc}") from exc
    try:
        root = ET.fromstring(response.content)  # noqa: S314 - our endpoint, no entities expanded by ElementTree
    except ET.ParseError as exc:
        raise NetcupError(f"netcup: {operation}: HTTP {response.status_code}, not SOAP") from exc
    fault = root.find(f".//{{{SOAP_ENV}}}Fault")
    if fault is not None:
        raise NetcupError(f"netcup: {operation}: {fault.findtext('faultstring') or 'fault'}")
    answer = root.find(f".//{{{NAMESPACE}}}{operation}Response")
    if answer is None:
        raise NetcupError(f"netcup: {operation}: no {operation}Response in the answer")
    return answer.findall("return")


def _simple_result(operation: str, returns: list[ET.Element]) -> None:
    """A WebServiceSimpleResult: success true, or a message saying why not."""
    result = returns[0] if returns else None
    if result is None or (result.findtext("success") or "").lower() != "true":
        message = result.findtext("message") if result is not None else "no result"
        raise NetcupError(f"netcup: {operation}: {message}")


def snapshots_of(*, vserver: str) -> list[NetcupSnapshot]:
    return [
        NetcupSnapshot(name=item.findtext("name") or "", state=(item.findtext("state") or "").lower())
        for item in call("getSnapshots", vserverName=vserver)
    ]


def snapshot_create(*, vserver: str, name: str, description: str) -> NetcupSnapshot:
    """The vserver's snapshot of this name: found if an earlier call made it, else made."""
    for existing in snapshots_of(vserver=vserver):
        if existing.name == name:
            return existing
    try:
        _simple_result(
            "createSnapshot",
            call("createSnapshot", vserverName=vserver, snapshotName=name, description=description),
        )
    except NetcupError:
        # The answer may be lost after the snapshot was made: look once more.
        for existing in snapshots_of(vserver=vserver):
            if existing.name == name:
                return existing
        raise
    for made in snapshots_of(vserver=vserver):
        if made.name == name:
            return made
    raise NetcupError(f"netcup: createSnapshot said yes, but {name} is not among {vserver}'s snapshots")


def snapshot_state(*, vserver: str, name: str) -> str:
    for existing in snapshots_of(vserver=vserver):
        if existing.name == name:
            return existing.state
    return "missing"


def snapshot_delete(*, vserver: str, name: str) -> bool:
    if not any(s.name == name for s in snapshots_of(vserver=vserver)):
        return False
    _simple_result("deleteSnapshot", call("deleteSnapshot", vserverName=vserver, snapshotName=name))
    return True
