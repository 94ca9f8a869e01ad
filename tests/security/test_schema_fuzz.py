"""schemathesis over the whole OpenAPI schema, every operation with the credential it
needs (staff token, agent key, or none for the public ones), valid and invalid
requests: no 5xx, and every answer is what the schema says (a documented status code,
its content type, its response schema). Checkout talks to the Stripe emulator, so a
valid order gets a session rather than a 503."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sandbox.stripe_emulator import StripeEmulator
from tests.security.conftest import World

pytestmark = pytest.mark.django_db

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = 8  # per operation and generation mode; the whole module stays under a minute

# The object a path's {id} names, by the path's first segment after /api/v1/.
PATH_OBJECTS = {
    "agent": "command",
    "jobs": "job",
    "orders": "order",
    "releases": "release",
    "rollouts": "rollout",
    "tenants": "tenant",
}


def _operations() -> list[tuple[str, str, list[str]]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            schemes = sorted({name for requirement in operation.get("security") or [] for name in requirement})
            found.append((path, method.upper(), schemes))
    return sorted(found)


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[StripeEmulator]:
    from django.conf import settings as django_settings

    server = StripeEmulator(("127.0.0.1", 0), api_key=django_settings.STRIPE_SECRET_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wsgi_schema() -> Iterator[Any]:
    # Like Django's test client: keep the test's database connection (and transaction)
    # open across the requests the WSGI app serves.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def schema(wsgi_schema: Any, settings: Any, stripe_server: StripeEmulator) -> Any:
    settings.STRIPE_API_BASE = stripe_server.base_url
    return wsgi_schema


def test_every_operation_is_fuzzed_with_a_credential_it_accepts() -> None:
    for path, method, schemes in OPERATIONS:
        assert schemes in ([], ["agentApiKey"], ["cookieAuth", "tokenAuth"]), (path, method, schemes)
        if "{id}" in path:
            assert path.split("/")[3] in PATH_OBJECTS, path
    assert len(OPERATIONS) >= 40


def credential(world: World, schemes: list[str]) -> dict[str, str]:
    if "agentApiKey" in schemes:
        return {"Authorization": f"Bearer {world.key_a}"}
    if "tokenAuth" in schemes:
        return {"Authorization": f"Token {world.staff_token}"}
    return {}


@pytest.mark.parametrize(("path", "method", "schemes"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS])
def test_every_answer_is_documented_and_none_is_a_server_error(
    schema: Any, world: World, path: str, method: str, schemes: list[str]
) -> None:
    operation = schema[path][method]
    headers = credential(world, schemes)
    path_parameters = {"id": world.object_id(PATH_OBJECTS[path.split("/")[3]])} if "{id}" in path else None
    strategies = [
        operation.as_strategy(mode, headers=headers, path_parameters=path_parameters)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=2 * EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call()
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert "error" in response.json(), response.text[:500]

    run()
