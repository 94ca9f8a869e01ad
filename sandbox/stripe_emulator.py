"""A local Stripe API for the calls the Hub makes, so the real `stripe` library talks
to it unchanged (point `STRIPE_API_BASE` at it).

API (form-encoded like Stripe's, Bearer secret key, Stripe's error shape, the
Idempotency-Key header honoured): POST/GET /v1/checkout/sessions[/{id}], POST/GET
/v1/customers[/{id}], GET /v1/subscriptions/{id}, POST /v1/billing/meter_events (an
`identifier` is counted once).

Control (`/__sandbox/`, no auth; not part of Stripe): GET health, requests,
meter_events, checkout_sessions; POST faults ({"path", "status", "times"}); POST
checkout/sessions/{id}/complete (pays the session: creates the customer and the
subscription and returns the `checkout.session.completed` event, signed and delivered
to `webhook_url` with `webhook_secret` when given); POST reset.

Run alone: python -m sandbox.stripe_emulator --port 12111 --api-key sk_test_..."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox import stripe_events

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/__sandbox"
DEFAULT_API_KEY = "sk_test_hub_development"
METER_EVENT_MAX_AGE = 35 * 86400
METER_EVENT_MAX_FUTURE = 5 * 60


class StripeApiError(Exception):
    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", code: str = "", param: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.payload: dict[str, Any] = {"error": {"type": type_, "message": message}}
        if code:
            self.payload["error"]["code"] = code
        if param:
            self.payload["error"]["param"] = param


def missing(kind: str, object_id: str) -> StripeApiError:
    return StripeApiError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param="id")


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back into objects: `a[b][0][c]=v` -> {"a": {"b": [{"c": v}]}}."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "[]":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


@dataclass
class Fault:
    path: str
    status: int
    times: int


@dataclass
class State:
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    session_subscription_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    meter_events: list[dict[str, Any]] = field(default_factory=list)
    meter_identifiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)


class StripeEmulator(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int] = ("127.0.0.1", 0), *, api_key: str = DEFAULT_API_KEY) -> None:
        super().__init__(address, _Handler)
        self.api_key = api_key
        self.state = State()
        self.lock = threading.RLock()
        self.requests: deque[dict[str, Any]] = deque(maxlen=10000)
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StripeEmulator:
        self.thread = threading.Thread(target=self.serve_forever, name="stripe-emulator", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    # --- the API ---------------------------------------------------------------------

    def api(self, method: str, path: str, params: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict]:
        self._authenticate(headers)
        with self.lock:
            for fault in self.state.faults:
                if fault.times > 0 and path.startswith(fault.path):
                    fault.times -= 1
                    raise StripeApiError(fault.status, "injected fault", type_="api_error")
        key = headers.get("idempotency-key")
        if method == "POST" and key:
            fingerprint = hashlib.sha256(f"{path}|{json.dumps(params, sort_keys=True)}".encode()).hexdigest()
            with self.lock:
                seen = self.state.idempotency.get((key, method))
                if seen is not None:
                    if seen[0] != fingerprint:
                        raise StripeApiError(
                            400,
                            "Keys for idempotent requests can only be used with the same parameters they were "
                            "first used with.",
                            type_="idempotency_error",
                        )
                    return seen[1], {**seen[2], "__replayed": True}
                status, body = self._route(method, path, params)
                if status < 500:
                    self.state.idempotency[(key, method)] = (fingerprint, status, body)
                return status, body
        with self.lock:
            return self._route(method, path, params)

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not token or not secrets.compare_digest(token, self.api_key):
            shown = f"{token[:8]}****{token[-4:]}" if len(token) > 12 else "****"
            raise StripeApiError(401, f"Invalid API Key provided: {shown}")

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if parts[:3] == ["v1", "checkout", "sessions"]:
            if method == "POST" and len(parts) == 3:
                return 200, self._session_create(params)
            if method == "GET" and len(parts) == 4:
                session = self.state.sessions.get(parts[3])
                if session is None:
                    raise missing("checkout.session", parts[3])
                return 200, session
        if parts[:2] == ["v1", "customers"]:
            if method == "POST" and len(parts) == 2:
                return 200, self._customer_create(email=params.get("email"), metadata=params.get("metadata") or {})
            if method == "GET" and len(parts) == 3:
                customer = self.state.customers.get(parts[2])
                if customer is None:
                    raise missing("customer", parts[2])
                return 200, customer
        if parts[:2] == ["v1", "subscriptions"] and method == "GET" and len(parts) == 3:
            subscription = self.state.subscriptions.get(parts[2])
            if subscription is None:
                raise missing("subscription", parts[2])
            return 200, subscription
        if parts == ["v1", "billing", "meter_events"] and method == "POST":
            return 200, self._meter_event_create(params)
        raise StripeApiError(404, f"Unrecognized request URL ({method}: {path}).")

    def _session_create(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") not in ("payment", "setup", "subscription"):
            raise StripeApiError(400, "Missing required param: mode.", code="parameter_missing", param="mode")
        line_items = params.get("line_items") or []
        if params["mode"] == "subscription" and not line_items:
            raise StripeApiError(
                400, "Missing required param: line_items.", code="parameter_missing", param="line_items"
            )
        for i, item in enumerate(line_items):
            if not isinstance(item, dict) or not str(item.get("price", "")).startswith("price_"):
                raise StripeApiError(400, "No such price.", code="resource_missing", param=f"line_items[{i}][price]")
        if params["mode"] != "setup" and not params.get("success_url") and params.get("ui_mode") != "embedded":
            raise StripeApiError(
                400, "Missing required param: success_url.", code="parameter_missing", param="success_url"
            )
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > 50 or any(len(str(v)) > 500 for v in metadata.values()):
            raise StripeApiError(400, "Invalid metadata.", param="metadata")
        session_id = stripe_events.new_id("cs_test")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": params["mode"],
            "status": "open",
            "payment_status": "unpaid",
            "url": f"{self.base_url}/c/pay/{session_id}",
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "customer": params.get("customer"),
            "customer_email": params.get("customer_email"),
            "customer_details": None,
            "subscription": None,
            "metadata": metadata,
            "created": now,
            "expires_at": now + 86400,
            "livemode": False,
        }
        self.state.sessions[session_id] = session
        self.state.session_subscription_data[session_id] = {
            "line_items": line_items,
            "metadata": (params.get("subscription_data") or {}).get("metadata") or {},
        }
        return session

    def _customer_create(self, *, email: Any, metadata: dict[str, Any]) -> dict[str, Any]:
        customer_id = stripe_events.new_id("cus")
        customer = {
            "id": customer_id,
            "object": "customer",
            "email": email,
            "metadata": metadata,
            "created": int(time.time()),
            "livemode": False,
        }
        self.state.customers[customer_id] = customer
        return customer

    def _meter_event_create(self, params: dict[str, Any]) -> dict[str, Any]:
        event_name = params.get("event_name")
        payload = params.get("payload")
        if not event_name:
            raise StripeApiError(
                400, "Missing required param: event_name.", code="parameter_missing", param="event_name"
            )
        if not isinstance(payload, dict) or not payload.get("stripe_customer_id"):
            raise StripeApiError(
                400, "Missing required param: payload[stripe_customer_id].", code="parameter_missing", param="payload"
            )
        value = payload.get("value", "")
        if not re.fullmatch(r"-?\d+", str(value)):
            raise StripeApiError(400, "payload[value] must be an integer.", param="payload[value]")
        now = int(time.time())
        timestamp = int(params.get("timestamp") or now)
        if timestamp < now - METER_EVENT_MAX_AGE or timestamp > now + METER_EVENT_MAX_FUTURE:
            raise StripeApiError(400, "Timestamp is out of range.", code="timestamp_out_of_range", param="timestamp")
        identifier = str(params.get("identifier") or stripe_events.new_id("mev"))
        existing = self.state.meter_identifiers.get(identifier)
        if existing is not None:
            # Stripe counts an identifier once; a resend changes nothing.
            return existing
        meter_event = {
            "object": "billing.meter_event",
            "event_name": event_name,
            "identifier": identifier,
            "payload": {k: str(v) for k, v in payload.items()},
            "timestamp": timestamp,
            "created": now,
            "livemode": False,
        }
        self.state.meter_identifiers[identifier] = meter_event
        self.state.meter_events.append(meter_event)
        return meter_event

    # --- the sandbox controls -------------------------------------------------------

    def control(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        action = path[len(CONTROL_PREFIX) :].strip("/")
        with self.lock:
            if method == "GET" and action == "health":
                return 200, {"ok": True, "emulator": "stripe"}
            if method == "GET" and action == "requests":
                return 200, {"requests": list(self.requests)}
            if method == "GET" and action == "meter_events":
                return 200, {"meter_events": list(self.state.meter_events)}
            if method == "GET" and action == "checkout_sessions":
                return 200, {"checkout_sessions": list(self.state.sessions.values())}
            if method == "POST" and action == "faults":
                fault = Fault(
                    path=str(body.get("path", "/")),
                    status=int(body.get("status", 500)),
                    times=int(body.get("times", 1)),
                )
                self.state.faults.append(fault)
                return 201, {"faults": [f.__dict__ for f in self.state.faults if f.times > 0]}
            if method == "POST" and action == "reset":
                self.state = State()
                self.requests.clear()
                return 200, {"ok": True}
            match = re.fullmatch(r"checkout/sessions/([^/]+)/complete", action)
            if method == "POST" and match:
                return self._session_complete(match.group(1), body)
        return 404, {"error": f"no control endpoint {method} {path}"}

    def _session_complete(self, session_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        session = self.state.sessions.get(session_id)
        if session is None:
            return 404, {"error": f"no session {session_id}"}
        if session["status"] != "open":
            return 409, {"error": f"session {session_id} is {session['status']}"}
        email = body.get("email") or session.get("customer_email") or "customer@example.com"
        customer = self._customer_create(email=email, metadata={})
        extra = self.state.session_subscription_data.get(session_id, {})
        price = (extra.get("line_items") or [{}])[0].get("price", "price_hub_build")
        plan = str(session["metadata"].get("plan", "build"))
        subscription = stripe_events.subscription_object(
            subscription_id=stripe_events.new_id("sub"),
            customer_id=customer["id"],
            plan=plan,
            price_id=price,
            metadata=extra.get("metadata") or dict(session["metadata"]),
        )
        self.state.subscriptions[subscription["id"]] = subscription
        session.update(
            status="complete",
            payment_status="paid",
            customer=customer["id"],
            subscription=subscription["id"],
            customer_details={"email": email, "name": None, "address": None},
        )
        event = stripe_events.event("checkout.session.completed", dict(session))
        answer: dict[str, Any] = {"event": event, "customer": customer, "subscription": subscription}
        if body.get("webhook_url") and body.get("webhook_secret"):
            url = str(body["webhook_url"])
            if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
                return 400, {"error": "the sandbox delivers webhooks to loopback addresses only"}
            response = stripe_events.deliver(url, event, str(body["webhook_secret"]), timeout=10)
            answer["delivery_status"] = response.status_code
        return 200, answer

    def record(self, method: str, path: str, status: int, params: dict[str, Any]) -> None:
        self.requests.append({"method": method, "path": path, "status": status, "params": params, "time": time.time()})


class _Handler(BaseHTTPRequestHandler):
    server: StripeEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("stripe emulator: " + format, *args)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if split.path.startswith(CONTROL_PREFIX):
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                self._send(400, {"error": "body is not JSON"})
                return
            status, payload = self.server.control(self.command, split.path, body if isinstance(body, dict) else {})
            self._send(status, payload)
            return
        params = decode_form(parse_qsl(split.query, keep_blank_values=True) + parse_qsl(raw, keep_blank_values=True))
        extra_headers: dict[str, str] = {}
        try:
            status, payload = self.server.api(self.command, split.path, params, headers)
        except StripeApiError as exc:
            status, payload = exc.status, exc.payload
        except Exception:
            logger.exception("stripe emulator: %s %s failed", self.command, split.path)
            status, payload = 500, {"error": {"type": "api_error", "message": "internal error in the emulator"}}
        if payload.pop("__replayed", False):
            extra_headers["Idempotent-Replayed"] = "true"
        if "idempotency-key" in headers:
            extra_headers["Idempotency-Key"] = headers["idempotency-key"]
        self.server.record(self.command, split.path, status, params)
        self._send(status, payload, extra_headers)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", f"req_{secrets.token_hex(8)}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = _dispatch  # noqa: N815
    do_POST = _dispatch  # noqa: N815
    do_DELETE = _dispatch  # noqa: N815


def main() -> None:
    parser = argparse.ArgumentParser(description="Stripe API emulator for the Hub sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the sandbox listens on loopback only")
    server = StripeEmulator((args.host, args.port), api_key=args.api_key)
    logger.info("stripe emulator on %s", server.base_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
