"""The agent API's transport pieces: Bearer-key authentication, the bounded JSON
parser, per-tenant throttles and the errors they answer with."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import redis
from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from tenants import keycache, redis_store
from tenants.keycache import AgentIdentity
from tenants.secrets import api_key_prefix, secret_digest

logger = logging.getLogger(__name__)

# The same words for a missing, malformed, unknown, expired or revoked key.
INVALID_KEY_MESSAGE = "Missing or invalid API key."
MAX_JSON_DEPTH = 32


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "Temporarily unavailable, retry shortly."
    default_code = "unavailable"


class RegistrationRefusedError(exceptions.APIException):
    status_code = 403
    default_detail = "Registration token invalid, used or expired."
    default_code = "registration_refused"


class AgentUser:
    """request.user of an agent request: authenticated, never staff."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False

    def __init__(self, identity: AgentIdentity) -> None:
        self.identity = identity
        self.pk = None

    def get_username(self) -> str:
        return f"agent:{self.identity.tenant_id}"

    def __str__(self) -> str:
        return self.get_username()


class AgentKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer <api key>`. Checked against Postgres, except on views that
    set `uses_key_cache` (the heartbeat): there the process key cache answers and the
    service's Redis round trip confirms it (see tenants.keycache)."""

    www_authenticate_realm = "agent"

    def authenticate(self, request: Request) -> tuple[AgentUser, AgentIdentity]:
        # Agent endpoints take nothing else, so a missing key is answered like a wrong one.
        scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        key = key.strip()
        prefix = api_key_prefix(key) if scheme.lower() == "bearer" else None
        if prefix is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY_MESSAGE)
        view = (getattr(request, "parser_context", None) or {}).get("view")
        digest = secret_digest(key)
        if getattr(view, "uses_key_cache", False):
            try:
                identity = keycache.identity_lookup_cached(prefix=prefix, digest=digest, now=timezone.now())
            except redis.RedisError:
                # No Redis to confirm the cache with: ask Postgres (the service will too).
                identity = keycache.identity_lookup(prefix=prefix, digest=digest, now=timezone.now())
        else:
            identity = keycache.identity_lookup(prefix=prefix, digest=digest, now=timezone.now())
        if identity is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY_MESSAGE)
        return AgentUser(identity), identity

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'


class IsAgent(BasePermission):
    message = INVALID_KEY_MESSAGE

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, AgentIdentity)


class JSONOnlyNegotiation(BaseContentNegotiation):
    """Agents speak JSON only: no Accept-header parsing on every heartbeat."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        content_type = request.content_type.split(";", 1)[0].strip().lower()
        return next((parser for parser in parsers if parser.media_type == content_type), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class _RedisRateThrottle(BaseThrottle):
    """A fixed-window counter in Redis, shared by every web process. When Redis is down
    it lets requests through: an outage must not lock the fleet out."""

    rate_setting = ""

    def subject(self, request: Request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        subject = self.subject(request)
        if subject is None:
            return True
        try:
            self.retry_after = redis_store.rate_hit(subject=subject, rate=getattr(settings, self.rate_setting))
        except redis.RedisError:
            logger.warning("rate limiting unavailable", exc_info=True)
            return True
        return self.retry_after == 0

    def wait(self) -> float | None:
        return self.retry_after


class AgentRateThrottle(_RedisRateThrottle):
    """Per tenant, across all agent endpoints (the heartbeat counts in the same bucket)."""

    rate_setting = "AGENT_THROTTLE_RATE"

    def subject(self, request: Request) -> str | None:
        identity = request.auth
        return f"tenant:{identity.tenant_id}" if isinstance(identity, AgentIdentity) else None


class RegistrationRateThrottle(_RedisRateThrottle):
    """Per client address: registration tokens must not be guessable by volume."""

    rate_setting = "AGENT_REGISTER_THROTTLE_RATE"

    def subject(self, request: Request) -> str | None:
        return f"register:{self.get_ident(request)}"


def _check_storable(value: Any, depth: int = 0) -> None:
    """Postgres stores neither NUL characters nor lone surrogates, and deep nesting is
    never a real payload: refuse them here rather than fail at the database."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("NUL character in a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("invalid unicode in a string") from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, depth + 1)
            _check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)


def _may_be_unstorable(raw: bytes) -> bool:
    """False when the JSON text alone proves `_check_storable` would pass, which spares
    the walk on nearly every request: the parser refuses raw control characters in
    strings, invalid UTF-8 and lone surrogates (escaped or not), so a NUL can only
    come from a \\u escape; and nesting deeper than MAX_JSON_DEPTH needs more
    brackets than that."""
    return b"\\u" in raw or raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH


class BoundedJSONParser(JSONParser):
    """JSON of at most AGENT_REQUEST_MAX_BYTES (413 beyond), finite numbers only, and
    only what Postgres can store. Integers beyond 64 bits are read as floats (the
    serializers refuse them where a number is expected)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = settings.AGENT_REQUEST_MAX_BYTES
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if declared > limit:
            raise PayloadTooLarge
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge
        try:
            # orjson (2.0 us for a heartbeat, json with the hooks this needs took 6.9 us)
            # refuses what Postgres or the serializers could not take: NaN,
            # Infinity, numbers out of a double's range, invalid UTF-8, lone surrogates.
            data = orjson.loads(raw)
            if _may_be_unstorable(raw):
                _check_storable(data)
        except (ValueError, RecursionError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {str(exc)[:200]}") from exc
        return data
