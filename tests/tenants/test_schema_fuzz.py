"""The OpenAPI schema covers every endpoint, and schemathesis, generating valid and
invalid requests from it, gets no 5xx from the agent API (or the staff fleet view)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

pytestmark = pytest.mark.django_db

AGENT_OPERATIONS = [
    ("/api/v1/agent/register", "POST"),
    ("/api/v1/agent/heartbeat", "POST"),
    ("/api/v1/agent/backups", "POST"),
    ("/api/v1/agent/usage", "POST"),
    ("/api/v1/agent/commands/{id}/result", "POST"),
    ("/api/v1/agent/rotate-key", "POST"),
]
STAFF_OPERATIONS = [
    ("/api/v1/tenants/", "GET"),
    ("/api/v1/tenants/{id}/", "GET"),
    ("/api/v1/tenants/{id}/commands/", "GET"),
    ("/api/v1/tenants/{id}/commands/", "POST"),
    ("/api/v1/tenants/{id}/registration-token/", "POST"),
]


@pytest.fixture
def schema() -> Iterator[Any]:
    # Like Django's test client: keep the test's database connection (and transaction)
    # open across the requests the WSGI app serves.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def operation_of(schema: Any, path: str, method: str) -> Any:
    return schema[path][method]


def test_schema_covers_every_endpoint(schema):
    operations = {(op.ok().path, op.ok().method.upper()) for op in schema.get_all_operations()}

    for path, method in AGENT_OPERATIONS + STAFF_OPERATIONS + [("/api/v1/tenants/{id}/revoke-keys/", "POST")]:
        assert (path, method) in operations


def fuzz(operation: Any, *, headers: dict[str, str], path_parameters: dict[str, Any] | None, examples: int) -> None:
    strategies = [
        operation.as_strategy(mode, headers=headers, path_parameters=path_parameters)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call()
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, (response.status_code, response.text[:500])
        if response.status_code >= 400:
            assert "error" in response.json(), response.text[:500]

    run()


def test_no_server_errors_on_the_agent_api(schema, make_agent, queue_command, settings):
    settings.AGENT_THROTTLE_RATE = "100000/minute"
    settings.AGENT_REGISTER_THROTTLE_RATE = "100000/minute"
    agent = make_agent()
    command = queue_command(agent.tenant, type="update", payload={"component": "ghost", "version": "5.2"})
    auth = {"Authorization": f"Bearer {agent.api_key}"}

    for path, method in AGENT_OPERATIONS:
        operation = operation_of(schema, path, method)
        fuzz(operation, headers=auth, path_parameters=None, examples=100)
        if "{id}" in path:
            fuzz(operation, headers=auth, path_parameters={"id": str(command.pk)}, examples=100)


def test_no_server_errors_on_the_staff_fleet_view(schema, make_agent, django_user_model):
    agent = make_agent()
    staff = django_user_model.objects.create_user("fuzz-staff", password="x", is_staff=True)
    auth = {"Authorization": f"Token {Token.objects.create(user=staff).key}"}

    for path, method in STAFF_OPERATIONS:
        operation = operation_of(schema, path, method)
        fuzz(operation, headers=auth, path_parameters={"id": agent.tenant.pk}, examples=15)
