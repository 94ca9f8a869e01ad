"""The plumbing the emulators share: a threaded stdlib HTTP server, JSON in and out,
a request log, queued faults, a token bucket, and the `/__sandbox/` control endpoints."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.faults import FaultPlan, HttpFault, TokenBucket

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/__sandbox"


class ApiError(Exception):
    """Raised by a route to answer with an error in the emulated API's own shape."""

    def __init__(self, status: int, code: str | int, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def int_param(self, name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
        raw = self.param(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise ApiError(400, "invalid_input", f"invalid value for {name}: {raw!r}") from exc
        if value < minimum or (maximum is not None and value > maximum):
            raise ApiError(400, "invalid_input", f"{name} out of range: {value}")
        return value


@dataclass
class Response:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Close the connection instead of answering (the request was served).
    dropped: bool = False
    # An answer that is not JSON (a SOAP emulator's XML): sent as it is.
    raw: bytes | None = None
    content_type: str = "application/json"


class EmulatorServer(ThreadingHTTPServer):
    """Base class: subclasses implement `route`, `error_payload` and `rate_headers`."""

    daemon_threads = True
    allow_reuse_address = True
    name = "emulator"

    def __init__(self, address: tuple[str, int], *, token: str, bucket: TokenBucket) -> None:
        super().__init__(address, _Handler)
        self.token = token
        self.bucket = bucket
        self.faults = FaultPlan()
        self.requests: deque[dict[str, Any]] = deque(maxlen=20000)
        self.requests_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def route(self, request: Request) -> Response:
        raise NotImplementedError

    def error_payload(self, status: int, code: str | int, message: str, details: Any) -> Any:
        raise NotImplementedError

    def rate_headers(self, remaining: int) -> dict[str, str]:
        raise NotImplementedError

    def rate_limited_error(self) -> ApiError:
        raise NotImplementedError

    def authenticate(self, request: Request) -> None:
        """Raise an ApiError unless the request carries the sandbox token."""
        raise NotImplementedError

    def fault_error(self, fault: HttpFault) -> ApiError:
        if fault.status == 429:
            return self.rate_limited_error()
        return ApiError(fault.status, fault.code or "service_error", fault.message or "injected fault")

    def control(self, request: Request) -> Response:
        """The emulator-neutral control endpoints; subclasses add their own first."""
        action = request.path[len(CONTROL_PREFIX) :]
        if action == "/health" and request.method == "GET":
            return Response(200, {"ok": True, "emulator": self.name})
        if action == "/faults":
            if request.method == "POST":
                try:
                    self.faults.add(HttpFault.from_json(request.body or {}))
                except (TypeError, ValueError) as exc:
                    return Response(400, {"error": str(exc)})
                return Response(201, {"faults": self.faults.pending()})
            if request.method == "DELETE":
                self.faults.clear()
                return Response(200, {"faults": []})
            if request.method == "GET":
                return Response(200, {"faults": self.faults.pending()})
        if action == "/requests":
            if request.method == "GET":
                with self.requests_lock:
                    return Response(200, {"requests": list(self.requests)})
            if request.method == "DELETE":
                with self.requests_lock:
                    self.requests.clear()
                return Response(200, {"requests": []})
        if action == "/rate_limit" and request.method == "POST":
            body = request.body or {}
            self.bucket.configure(
                capacity=int(body.get("capacity", self.bucket.capacity)),
                refill_per_second=float(body.get("refill_per_second", self.bucket.refill_per_second)),
            )
            return Response(200, {"capacity": self.bucket.capacity, "refill_per_second": self.bucket.refill_per_second})
        return Response(404, {"error": f"no control endpoint {request.method} {request.path}"})

    def handle_api(self, request: Request) -> Response:
        """Auth, faults, rate limit and routing, in the order the real APIs apply them."""
        try:
            self.authenticate(request)
        except ApiError as exc:
            return Response(exc.status, self.error_payload(exc.status, exc.code, exc.message, exc.details))
        allowed, remaining = self.bucket.take()
        headers = self.rate_headers(remaining)
        fault = self.faults.take(request.method, request.path)
        if fault is not None and fault.drop_answer:
            served = self._serve(request)
            served.dropped = True
            return served
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            error = self.fault_error(fault)
            if fault.status == 429:
                headers = {**self.rate_headers(0), "Retry-After": str(fault.retry_after)}
            return Response(fault.status, self.error_payload(fault.status, error.code, error.message, None), headers)
        if not allowed:
            error = self.rate_limited_error()
            retry_after = max(1, int(self.bucket.seconds_until(1) + 0.999))
            headers = {**headers, "Retry-After": str(retry_after)}
            return Response(429, self.error_payload(429, error.code, error.message, None), headers)
        response = self._serve(request)
        response.headers = {**headers, **response.headers}
        return response

    def _serve(self, request: Request) -> Response:
        try:
            return self.route(request)
        except ApiError as exc:
            return Response(exc.status, self.error_payload(exc.status, exc.code, exc.message, exc.details))
        except Exception:
            logger.exception("%s: %s %s failed", self.name, request.method, request.path)
            return Response(500, self.error_payload(500, "server_error", "internal error in the emulator", None))

    def record(self, request: Request, status: int) -> None:
        entry = {
            "method": request.method,
            "path": request.path,
            "query": {k: v[-1] if len(v) == 1 else v for k, v in request.query.items()},
            "status": status,
            "time": time.time(),
        }
        with self.requests_lock:
            self.requests.append(entry)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name=f"{self.name}-http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.server.name, format % args)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True), None, headers)
        if raw and "xml" in headers.get("content-type", ""):
            request.body = raw.decode(errors="replace")
        elif raw:
            try:
                request.body = json.loads(raw)
            except ValueError:
                response = Response(
                    400, self.server.error_payload(400, "json_error", "request body is not valid JSON", None)
                )
                self._send(response)
                return
        if split.path.startswith(CONTROL_PREFIX):
            response = self.server.control(request)
        else:
            response = self.server.handle_api(request)
            self.server.record(request, response.status)
        self._send(response)

    def _send(self, response: Response) -> None:
        if response.dropped:
            self.close_connection = True
            return
        if response.raw is not None:
            body = response.raw
        else:
            body = b"" if response.payload is None else json.dumps(response.payload).encode()
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if response.payload is not None or response.raw is not None:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    do_GET = _dispatch  # noqa: N815
    do_POST = _dispatch  # noqa: N815
    do_PUT = _dispatch  # noqa: N815
    do_PATCH = _dispatch  # noqa: N815
    do_DELETE = _dispatch  # noqa: N815
