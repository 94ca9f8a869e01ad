"""Every status move is audited, and a move the model's transition map does not allow
is refused without writing anything (hub.audit.status_move)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from hub.audit import status_move
from hub.errors import IllegalMove
from hub.models import AuditEvent
from provisioning.models import (
    ORDER_TRANSITIONS,
    SERVER_TRANSITIONS,
    Order,
    OrderMode,
    OrderStatus,
    Server,
    ServerProvider,
    ServerStatus,
)
from provisioning.services.orders import order_assign_server
from provisioning.services.pool import server_set_status
from tenants.models import TENANT_TRANSITIONS, Tenant, TenantStatus

pytestmark = pytest.mark.django_db

_ids = iter(range(1, 100_000))


def a_server(status: str) -> Server:
    n = next(_ids)
    return Server.objects.create(
        provider=ServerProvider.NETCUP, region="eu", tier="build", ipv4=f"10.9.{n // 250}.{n % 250}", status=status
    )


def a_tenant(status: str) -> Tenant:
    return Tenant.objects.create(domain=f"t{next(_ids)}.example.com", status=status)


def an_order(status: str) -> Order:
    return Order.objects.create(
        domain=f"o{next(_ids)}.example.com", plan="build", region="eu", tools=[], mode=OrderMode.MANUAL, status=status
    )


MAKERS: dict[str, tuple[Callable[[str], Server | Tenant | Order], dict[str, frozenset[str]]]] = {
    "server": (a_server, SERVER_TRANSITIONS),
    "tenant": (a_tenant, TENANT_TRANSITIONS),
}
MAKERS["order"] = (an_order, ORDER_TRANSITIONS)


def moves(transitions: Mapping[str, frozenset[str]]) -> list[tuple[str, str]]:
    return sorted((old, new) for old, targets in transitions.items() for new in targets)


def refused(transitions: Mapping[str, frozenset[str]]) -> list[tuple[str, str]]:
    statuses = sorted(transitions)
    return [(old, new) for old in statuses for new in statuses if old != new and new not in transitions[old]]


ALLOWED = [(kind, *move) for kind, (_, transitions) in MAKERS.items() for move in moves(transitions)]
FORBIDDEN = [(kind, *move) for kind, (_, transitions) in MAKERS.items() for move in refused(transitions)]


@pytest.mark.parametrize(("kind", "old", "new"), ALLOWED)
def test_every_allowed_move_leaves_one_audit_row(kind: str, old: str, new: str) -> None:
    make, transitions = MAKERS[kind]
    obj = make(old)

    assert status_move(obj, new, actor="tester", reason="walking the map", transitions=transitions)

    obj.refresh_from_db()
    assert obj.status == new
    row = AuditEvent.objects.get(object_type=kind, object_id=str(obj.pk))
    assert (row.action, row.old, row.new, row.actor) == (f"{kind}.status", old, new, "tester")


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [(kind, *move) for kind, (_, transitions) in MAKERS.items() for move in refused(transitions)],
)
def test_a_move_the_map_forbids_is_refused_and_writes_nothing(kind: str, old: str, new: str) -> None:
    make, transitions = MAKERS[kind]
    obj = make(old)

    with pytest.raises(IllegalMove):
        status_move(obj, new, actor="tester", transitions=transitions)

    obj.refresh_from_db()
    assert obj.status == old
    assert not AuditEvent.objects.filter(object_type=kind, object_id=str(obj.pk)).exists()


def test_the_maps_name_every_status() -> None:
    assert set(SERVER_TRANSITIONS) == set(ServerStatus.values)
    assert set(TENANT_TRANSITIONS) == set(TenantStatus.values)
    assert set(ORDER_TRANSITIONS) == set(OrderStatus.values)


def test_the_server_a_staff_member_assigns_to_an_order_is_audited() -> None:
    order = an_order(OrderStatus.AWAITING_SERVER)
    server = a_server(ServerStatus.AVAILABLE)

    order_assign_server(order_id=order.pk, server_id=server.pk, actor="ops-anna")

    row = AuditEvent.objects.get(action="server.status", object_type="server", object_id=str(server.pk))
    assert (row.old, row.new, row.actor) == (ServerStatus.AVAILABLE, ServerStatus.ALLOCATED, "ops-anna")
    assert f"order {order.pk}" in row.reason


def test_a_server_move_outside_the_map_is_refused_by_the_service() -> None:
    server = a_server(ServerStatus.DELETED)
    with pytest.raises(IllegalMove):
        server_set_status(server, ServerStatus.AVAILABLE, actor="tester")


@pytest.mark.parametrize("path", ["/api/v1/orders/{}/retry/", "/api/v1/orders/{}/cancel/"])
def test_operating_an_unknown_order_answers_404_json(path: str) -> None:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("ops", password="x", is_staff=True))

    response = client.post(path.format(987654))

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("path", ["/api/v1/jobs/{}/retry/", "/api/v1/jobs/{}/cancel/"])
def test_operating_an_unknown_job_answers_404_json(path: str) -> None:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("ops", password="x", is_staff=True))

    response = client.post(path.format(987654))

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "job 987654 does not exist"}
