"""One strict-input rule for every app: every input serializer built on
hub.api.fields.StrictSerializer is documented as refusing unknown fields."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        response = Client().get("/api/v1/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def request_schema(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/rollouts/", "post"),
        ("/api/v1/releases/", "post"),
        ("/api/v1/agent/heartbeat", "post"),
        ("/api/v1/agent/register", "post"),
    ],
)
def test_input_serializers_refuse_unknown_fields_in_the_schema(schema: dict[str, Any], path: str, method: str) -> None:
    assert request_schema(schema, path, method)["additionalProperties"] is False
