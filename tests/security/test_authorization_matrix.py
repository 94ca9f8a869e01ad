"""Who may call what: every route of the Hub (enumerated from the URL resolver and the
OpenAPI schema, so a new endpoint without a row here fails the suite) called by every
kind of caller. Only the intended callers get through; everyone else gets 401/403/404
with a JSON error that reveals nothing; nobody ever gets a 5xx."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator

from tenants.models import AgentCredential, Command, CommandStatus
from tests.security.conftest import PASSWORD, World

pytestmark = pytest.mark.django_db

# Who may call a route.
STAFF = "staff"  # a staff user: DRF token, or admin session (with its CSRF token)
AGENT = "agent"  # any registered agent (Bearer API key)
AGENT_OWN = "agent-own"  # only the agent of the tenant the object belongs to
PUBLIC = "public"  # anyone; bad input gets a 4xx

PRINCIPALS = [
    "anonymous",
    "agent",  # tenant A's agent key
    "other_agent",  # tenant B's agent key
    "user_token",  # a non-staff user's DRF token
    "user_session",  # a non-staff user logged in
    "staff_token",
    "staff_session",  # a staff user logged in, without a CSRF token
]

HEARTBEAT = {
    "disk_percent": 41.5,
    "memory_percent": 63.0,
    "load": 0.42,
    "uptime_seconds": 86400,
    "containers": [{"name": "ghost", "state": "running", "health": None}],
    "versions": {"agent": "1.0.0"},
    "tls_expires_at": None,
}


@dataclass(frozen=True)
class Row:
    access: str
    ok: int  # the status the intended caller gets with this row's body
    obj: str | None = None  # the kind of object the path's {id} names
    body: Callable[[World], Any] | None = field(default=None)


def _backup(w: World) -> dict[str, Any]:
    return {
        "report_id": str(uuid.uuid4()),
        "last_run": "2026-01-01T03:00:00Z",
        "duration_seconds": 60,
        "databases": {},
    }


EMPTY: Callable[[World], Any] = lambda w: {}  # noqa: E731

# Every route outside the admin, with the caller it is for. The body is a valid one
# where the answer depends on it (so the intended caller gets a 2xx), else empty.
ENDPOINTS: dict[tuple[str, str], Row] = {
    ("/healthz", "GET"): Row(PUBLIC, 200),
    ("/readyz", "GET"): Row(PUBLIC, 200),
    ("/metrics", "GET"): Row(PUBLIC, 200),  # open unless METRICS_TOKEN is set, see below
    ("/api/v1/schema/", "GET"): Row(PUBLIC, 200),
    # Public: only bad input to refuse.
    ("/api/v1/billing/stripe/webhook", "POST"): Row(PUBLIC, 400, body=EMPTY),
    ("/api/v1/orders/checkout/", "POST"): Row(PUBLIC, 400, body=EMPTY),
    ("/api/v1/agent/register", "POST"): Row(
        PUBLIC, 403, body=lambda w: {"registration_token": "hrt_" + "x" * 43, "hostname": "h", "agent_version": "1"}
    ),
    # The agent API.
    ("/api/v1/agent/heartbeat", "POST"): Row(AGENT, 200, body=lambda w: HEARTBEAT),
    ("/api/v1/agent/backups", "POST"): Row(AGENT, 201, body=_backup),
    ("/api/v1/agent/usage", "POST"): Row(
        AGENT, 201, body=lambda w: {"report_id": str(uuid.uuid4()), "period": "2026-01", "tokens": 5}
    ),
    ("/api/v1/agent/rotate-key", "POST"): Row(AGENT, 201),
    # An empty body: what a valid one does needs Cloudflare (tests/provisioning/test_tls.py).
    ("/api/v1/agent/acme-challenge", "POST"): Row(AGENT, 400, body=EMPTY),
    ("/api/v1/agent/acme-challenge", "DELETE"): Row(AGENT, 400, body=EMPTY),
    ("/api/v1/agent/commands/{id}/result", "POST"): Row(
        AGENT_OWN, 200, obj="command", body=lambda w: {"status": "succeeded", "output": "done"}
    ),
    # Staff.
    ("/api/v1/alerts/", "GET"): Row(STAFF, 200),
    ("/api/v1/fleet/freeze/", "GET"): Row(STAFF, 200),
    ("/api/v1/fleet/freeze/", "POST"): Row(STAFF, 200, body=lambda w: {"reason": "matrix"}),
    ("/api/v1/fleet/freeze/", "DELETE"): Row(STAFF, 200),
    ("/api/v1/jobs/", "GET"): Row(STAFF, 200),
    ("/api/v1/jobs/{id}/", "GET"): Row(STAFF, 200, obj="job"),
    ("/api/v1/jobs/{id}/retry/", "POST"): Row(STAFF, 409, obj="job"),  # it is running
    ("/api/v1/jobs/{id}/cancel/", "POST"): Row(STAFF, 200, obj="job"),
    ("/api/v1/orders/", "GET"): Row(STAFF, 200),
    ("/api/v1/orders/", "POST"): Row(
        STAFF, 201, body=lambda w: {"plan": "build", "region": "eu", "domain": "new-order.example.test"}
    ),
    ("/api/v1/orders/{id}/", "GET"): Row(STAFF, 200, obj="order"),
    ("/api/v1/orders/{id}/retry/", "POST"): Row(STAFF, 409, obj="order"),  # it is running
    ("/api/v1/orders/{id}/cancel/", "POST"): Row(STAFF, 200, obj="order"),
    ("/api/v1/servers/", "GET"): Row(STAFF, 200),
    ("/api/v1/servers/", "POST"): Row(
        STAFF, 201, body=lambda w: {"provider": "NETCUP", "region": "eu", "tier": "build", "ipv4": "127.0.0.77"}
    ),
    ("/api/v1/tenants/", "GET"): Row(STAFF, 200),
    ("/api/v1/tenants/{id}/", "GET"): Row(STAFF, 200, obj="tenant"),
    ("/api/v1/tenants/{id}/commands/", "GET"): Row(STAFF, 200, obj="tenant"),
    ("/api/v1/tenants/{id}/history/", "GET"): Row(STAFF, 200, obj="tenant"),
    ("/api/v1/tenants/{id}/commands/", "POST"): Row(STAFF, 201, obj="tenant", body=lambda w: {"type": "diagnostics"}),
    ("/api/v1/tenants/{id}/registration-token/", "POST"): Row(STAFF, 201, obj="tenant", body=EMPTY),
    ("/api/v1/tenants/{id}/revoke-keys/", "POST"): Row(STAFF, 200, obj="tenant"),
    # The world's tenants have no server: nothing to back up or move (the real runs are
    # in tests/provisioning/test_moves.py).
    ("/api/v1/tenants/{id}/backup/", "POST"): Row(STAFF, 409, obj="tenant", body=EMPTY),
    ("/api/v1/tenants/{id}/recover/", "POST"): Row(STAFF, 409, obj="tenant", body=EMPTY),
    ("/api/v1/tenants/{id}/migrate/", "POST"): Row(STAFF, 409, obj="tenant", body=lambda w: {"provider": "NETCUP"}),
    ("/api/v1/releases/", "GET"): Row(STAFF, 200),
    ("/api/v1/releases/", "POST"): Row(
        STAFF,
        201,
        body=lambda w: {
            "component": "openclaw",
            "version": "1.2.0",
            "image": "registry.example.test/openclaw:1.2.0@sha256:" + "c" * 64,
        },
    ),
    ("/api/v1/releases/{id}/", "GET"): Row(STAFF, 200, obj="release"),
    ("/api/v1/rollouts/", "GET"): Row(STAFF, 200),
    ("/api/v1/rollouts/", "POST"): Row(STAFF, 200, body=lambda w: {"release": w.release.pk, "dry_run": True}),
    ("/api/v1/rollouts/{id}/", "GET"): Row(STAFF, 200, obj="rollout"),
    ("/api/v1/rollouts/{id}/plan/", "GET"): Row(STAFF, 200, obj="rollout"),
    ("/api/v1/rollouts/{id}/updates/", "GET"): Row(STAFF, 200, obj="rollout"),
    ("/api/v1/rollouts/{id}/start/", "POST"): Row(STAFF, 409, obj="rollout", body=EMPTY),  # nobody to update
    ("/api/v1/rollouts/{id}/pause/", "POST"): Row(STAFF, 409, obj="rollout", body=EMPTY),  # a draft
    ("/api/v1/rollouts/{id}/resume/", "POST"): Row(STAFF, 409, obj="rollout", body=EMPTY),
    ("/api/v1/rollouts/{id}/promote/", "POST"): Row(STAFF, 409, obj="rollout", body=EMPTY),
    ("/api/v1/rollouts/{id}/abort/", "POST"): Row(STAFF, 200, obj="rollout", body=EMPTY),
    ("/api/v1/rollouts/{id}/rollback/", "POST"): Row(STAFF, 409, obj="rollout", body=EMPTY),
    ("/api/v1/rollouts/{id}/retry/", "POST"): Row(STAFF, 409, obj="rollout", body=EMPTY),
    # Server-sent events (text/event-stream, not in the OpenAPI schema).
    ("/api/v1/events", "GET"): Row(STAFF, 200),
    ("/api/v1/orders/{id}/events", "GET"): Row(STAFF, 200, obj="order"),
}
# The event streams are text/event-stream, described in DESIGN.md, not JSON operations.
EVENT_STREAMS = {("/api/v1/events", "GET"), ("/api/v1/orders/{id}/events", "GET")}


# --- enumeration ------------------------------------------------------------------------


def _walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _methods(callback: Any) -> set[str]:
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view_class is None:
        return {"GET"}  # plain function views: healthz, readyz, metrics
    return {m.upper() for m in view_class.http_method_names if m not in ("options", "head") and hasattr(view_class, m)}


def routed_operations() -> set[tuple[str, str]]:
    """(path, method) of every route the resolver knows, outside the admin."""
    operations = set()
    for route, callback in _walk(get_resolver().url_patterns, "/"):
        if route.startswith("/admin/"):
            continue
        path = re.sub(r"<(?:\w+:)?\w+>", "{id}", route)
        operations |= {(path, method) for method in _methods(callback)}
    return operations


def schema_operations() -> set[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(path, method.upper()) for path, operations in schema["paths"].items() for method in operations}


def test_every_routed_endpoint_has_a_row_in_the_matrix() -> None:
    routed = routed_operations()

    assert routed - set(ENDPOINTS) == set(), "endpoints without an authorization row"
    assert set(ENDPOINTS) - routed == set(), "rows for endpoints that no longer exist"


def test_every_api_endpoint_is_in_the_schema() -> None:
    api = {
        op for op in routed_operations() - EVENT_STREAMS if op[0].startswith("/api/v1/") and op[0] != "/api/v1/schema/"
    }

    assert api == schema_operations()


# --- the matrix -------------------------------------------------------------------------


def client_for(principal: str, world: World) -> Client:
    if principal == "staff_session":
        client = Client(enforce_csrf_checks=True)
        client.force_login(world.staff)
        return client
    if principal == "user_session":
        client = Client()
        client.force_login(world.user)
        return client
    header = {
        "anonymous": None,
        "agent": f"Bearer {world.key_a}",
        "other_agent": f"Bearer {world.key_b}",
        "user_token": f"Token {world.user_token}",
        "staff_token": f"Token {world.staff_token}",
    }[principal]
    return Client(HTTP_AUTHORIZATION=header) if header else Client()


def expected_status(row: Row, principal: str, method: str) -> set[int]:
    if row.access == PUBLIC:
        return {row.ok}
    if row.access == STAFF:
        if principal == "staff_token":
            return {row.ok}
        if principal == "staff_session":
            # A session may read; a write without the CSRF token is refused.
            return {row.ok} if method == "GET" else {403}
        if principal in ("user_token", "user_session"):
            return {403}
        return {401}
    if principal == "agent":
        return {row.ok}
    if principal == "other_agent":
        return {404} if row.access == AGENT_OWN else {row.ok}
    return {401}


def call(client: Client, method: str, path: str, body: Any) -> Any:
    if method == "GET":
        return client.get(path)
    if method == "DELETE":
        return client.delete(path, body, content_type="application/json")
    if body is None:
        return client.post(path)
    return client.post(path, body, content_type="application/json")


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize(("path", "method"), sorted(ENDPOINTS), ids=lambda v: v)
def test_only_the_intended_callers_get_through(world: World, path: str, method: str, principal: str) -> None:
    row = ENDPOINTS[(path, method)]
    url = path.replace("{id}", str(world.object_id(row.obj))) if row.obj else path
    body = row.body(world) if row.body else None

    response = call(client_for(principal, world), method, url, body)

    expected = expected_status(row, principal, method)
    assert response.status_code in expected, (principal, response.status_code, response.content[:300])
    if response.status_code >= 400 and path.startswith("/api/"):
        assert "error" in response.json(), response.content[:300]
    if response.status_code in (401, 403, 404) and row.access != PUBLIC:
        text = response.content.decode()
        assert world.tenant_a.domain not in text and world.key_a not in text
    if response.status_code == 401:
        assert response.has_header("WWW-Authenticate"), "a 401 must say how to authenticate"


# --- what the matrix cannot show in one call ------------------------------------------


def test_another_tenants_agent_cannot_answer_a_command(world: World, client: Client) -> None:
    url = f"/api/v1/agent/commands/{world.command_a.pk}/result"
    body = {"status": "failed", "output": "forged"}

    forged = client.post(url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {world.key_b}")
    guessed = client.post(
        f"/api/v1/agent/commands/{uuid.uuid4()}/result",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.key_b}",
    )

    assert forged.status_code == guessed.status_code == 404
    assert forged.json() == guessed.json(), "another tenant's command must look like one that does not exist"
    command = Command.objects.get(pk=world.command_a.pk)
    assert command.status != CommandStatus.FAILED and command.result is None


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("domain", ["{a}", "*.{a}", "files.{a}", "{a}.evil.example", "evil-{a}"])
def test_an_agent_cannot_ask_for_a_dns_challenge_outside_its_own_domain(
    world: World, client: Client, method: str, domain: str
) -> None:
    body = {"domain": domain.format(a=world.tenant_a.domain), "validation": "A" * 43}

    response = call(Client(HTTP_AUTHORIZATION=f"Bearer {world.key_b}"), method, "/api/v1/agent/acme-challenge", body)

    assert response.status_code == 403, response.content
    assert response.json()["error"] == "permission_denied"
    assert world.tenant_a.domain not in response.content.decode()


def test_a_heartbeat_with_another_tenants_key_touches_only_that_tenant(world: World, client: Client) -> None:
    response = client.post(
        "/api/v1/agent/heartbeat",
        HEARTBEAT,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.key_b}",
    )

    assert response.status_code == 200
    assert [c["id"] for c in response.json()["commands"]] == [], "tenant A's command went to tenant B's agent"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer hak_000000000000_" + "A" * 43,  # well formed, unknown
        "Bearer not-a-key",
        "Token hak_000000000000_" + "A" * 43,
        "Basic c2VjLXN0YWZmOmNvcnJlY3QgaG9yc2U=",
        "Bearer ",
    ],
)
def test_a_malformed_or_unknown_agent_key_gets_401(world: World, client: Client, header: str) -> None:
    response = client.post(
        "/api/v1/agent/heartbeat", HEARTBEAT, content_type="application/json", HTTP_AUTHORIZATION=header
    )

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_a_revoked_agent_key_gets_401(world: World, client: Client) -> None:
    AgentCredential.objects.filter(tenant=world.tenant_a).update(revoked_at="2020-01-01T00:00:00Z")

    response = client.post(
        "/api/v1/agent/heartbeat",
        HEARTBEAT,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.key_a}",
    )

    assert response.status_code == 401


@pytest.mark.parametrize("header", ["Token 0123456789abcdef0123456789abcdef01234567", "Token", "Token a b"])
def test_a_wrong_staff_token_gets_401(world: World, client: Client, header: str) -> None:
    response = client.get("/api/v1/tenants/", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert world.tenant_a.domain not in response.content.decode()


def test_a_deactivated_staff_users_token_gets_401(world: World, client: Client) -> None:
    world.staff.is_active = False
    world.staff.save(update_fields=["is_active"])

    response = client.get("/api/v1/tenants/", HTTP_AUTHORIZATION=f"Token {world.staff_token}")

    assert response.status_code == 401


def test_a_staff_session_writes_with_its_csrf_token(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.staff)
    client.get("/admin/")
    csrf = client.cookies["csrftoken"].value

    response = client.post(f"/api/v1/tenants/{world.tenant_a.pk}/revoke-keys/", HTTP_X_CSRFTOKEN=csrf)

    assert response.status_code == 200


# --- public endpoints -------------------------------------------------------------------


def test_register_with_a_fresh_registration_token_succeeds_once(world: World, client: Client) -> None:
    staff = Client(HTTP_AUTHORIZATION=f"Token {world.staff_token}")
    issued = staff.post(
        f"/api/v1/tenants/{world.tenant_b.pk}/registration-token/", {}, content_type="application/json"
    ).json()
    body = {"registration_token": issued["registration_token"], "hostname": "b2", "agent_version": "1.0.0"}

    first = client.post("/api/v1/agent/register", body, content_type="application/json")
    second = client.post("/api/v1/agent/register", body, content_type="application/json")

    assert first.status_code == 201 and first.json()["tenant_id"] == world.tenant_b.pk
    assert second.status_code == 403 and "api_key" not in second.json()


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/api/v1/agent/register", b"{not json", "application/json"),
        ("/api/v1/agent/register", b"registration_token=x", "application/x-www-form-urlencoded"),
        (
            "/api/v1/agent/register",
            b'{"registration_token": 1, "hostname": [], "agent_version": {}}',
            "application/json",
        ),
        ("/api/v1/orders/checkout/", b"{not json", "application/json"),
        ("/api/v1/orders/checkout/", b'{"plan": "gold", "region": "mars", "domain": "-"}', "application/json"),
        (
            "/api/v1/billing/stripe/webhook",
            b'{"id": "evt_1", "type": "checkout.session.completed"}',
            "application/json",
        ),
        ("/api/v1/billing/stripe/webhook", b"\xff\xfe", "application/octet-stream"),
    ],
)
def test_public_endpoints_refuse_bad_input_with_a_4xx(
    world: World, client: Client, path: str, body: bytes, content_type: str
) -> None:
    response = client.post(path, body, content_type=content_type)

    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert "error" in response.json()


def test_the_webhook_refuses_a_signature_made_with_another_secret(world: World, client: Client) -> None:
    from sandbox import stripe_events

    event = stripe_events.checkout_session_completed(domain="shop.example.com", email="ada@example.com")
    body, headers = stripe_events.signed_delivery(event, "whsec_not_ours")

    response = client.post(
        "/api/v1/billing/stripe/webhook",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=headers["Stripe-Signature"],
    )

    assert response.status_code == 400


# --- /metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "status"),
    [("anonymous", 401), ("agent", 401), ("staff_token", 401), ("staff_session", 401), ("metrics_token", 200)],
)
def test_metrics_with_a_token_set_answers_only_that_token(
    world: World, settings: Any, principal: str, status: int
) -> None:
    settings.METRICS_TOKEN = "scrape-" + "s" * 32
    if principal == "metrics_token":
        client = Client(HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    else:
        client = client_for(principal, world)

    response = client.get("/metrics")

    assert response.status_code == status
    if status == 401:
        assert b"hub_" not in response.content
    else:
        assert b"hub_tenants" in response.content


def test_metrics_refuses_a_token_that_is_only_a_prefix(world: World, client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-" + "s" * 32

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN[:-1]}")

    assert response.status_code == 401


# --- the admin --------------------------------------------------------------------------

ADMIN_PAGES = ["/admin/", "/admin/tenants/tenant/", "/admin/provisioning/server/", "/admin/auth/user/"]


@pytest.mark.parametrize("page", ADMIN_PAGES)
@pytest.mark.parametrize("principal", ["anonymous", "agent", "user_token", "staff_token", "user_session"])
def test_only_a_staff_session_gets_into_the_admin(world: World, page: str, principal: str) -> None:
    response = client_for(principal, world).get(page)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_a_staff_session_gets_into_the_admin(world: World, page: str) -> None:
    world.staff.is_superuser = True
    world.staff.save(update_fields=["is_superuser"])

    response = client_for("staff_session", world).get(page)

    assert response.status_code == 200


def test_a_non_staff_user_cannot_log_into_the_admin(world: World) -> None:
    client = Client()

    response = client.post("/admin/login/", {"username": world.user.get_username(), "password": PASSWORD})

    assert response.status_code == 200, "the login form again, with its error"
    assert client.get("/admin/").status_code == 302
