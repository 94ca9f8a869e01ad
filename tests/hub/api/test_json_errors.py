"""Every error under /api/ is JSON (`{"error", "detail"}`), whatever failed: a body too
large, a content type no parser takes, a URL no route matches, a method the view does
not have, an exception no code caught. Outside /api/ Django's HTML pages stay."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import RequestDataTooBig
from django.test import Client, RequestFactory, override_settings
from rest_framework.authtoken.models import Token

from hub.api.errors import bad_request
from provisioning.models import Order

pytestmark = pytest.mark.django_db

THREE_MB = 3 * 1024 * 1024


@pytest.fixture
def staff_token() -> str:
    user = get_user_model().objects.create_user("errors-staff", password="x", is_staff=True)
    return Token.objects.create(user=user).key


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert body["error"] == code, body
    assert body["detail"]
    return body


def test_a_3_mb_body_gets_a_json_413_and_creates_nothing(staff_token: str) -> None:
    body = json.dumps({"domain": "big.example.com", "plan": "build", "region": "eu", "padding": "x" * THREE_MB})

    response = Client().post(
        "/api/v1/orders/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {staff_token}"
    )

    assert_json_error(response, 413, "payload_too_large")
    assert not Order.objects.exists()


def test_a_body_django_refuses_while_parsing_is_a_json_400() -> None:
    # more form fields than DATA_UPLOAD_MAX_NUMBER_FIELDS: Django raises a
    # SuspiciousOperation while the view parses, which handler400 answers.
    fields = "&".join(f"f{n}=v" for n in range(1500))

    response = Client().post("/api/v1/orders/checkout/", fields, content_type="application/x-www-form-urlencoded")

    assert_json_error(response, 400, "bad_request")


def test_django_s_request_data_too_big_is_a_json_413_under_api_and_html_elsewhere() -> None:
    # the body size check of Django itself (a body read without a Content-Length
    # the middleware could check first)
    factory = RequestFactory()

    api = bad_request(factory.post("/api/v1/orders/"), RequestDataTooBig("too big"))
    admin = bad_request(factory.post("/admin/login/"), RequestDataTooBig("too big"))

    assert api.status_code == 413 and json.loads(api.content)["error"] == "payload_too_large"
    assert admin.status_code == 400 and admin["Content-Type"].startswith("text/html")


def test_a_body_the_webhook_limit_refuses_is_json_too() -> None:
    response = Client().post("/api/v1/billing/stripe/webhook", "x" * THREE_MB, content_type="application/json")

    assert response.status_code == 413
    assert response["Content-Type"].startswith("application/json")


def test_a_wrong_content_type_gets_a_json_415_and_creates_nothing(staff_token: str) -> None:
    response = Client().post(
        "/api/v1/orders/",
        "<order><domain>x.example.com</domain></order>",
        content_type="application/xml",
        HTTP_AUTHORIZATION=f"Token {staff_token}",
    )

    assert_json_error(response, 415, "unsupported_media_type")
    assert not Order.objects.exists()


def test_an_agent_endpoint_refuses_a_wrong_content_type_with_json() -> None:
    response = Client().post("/api/v1/agent/register", "registration_token=x", content_type="text/plain")

    assert_json_error(response, 415, "unsupported_media_type")


def test_an_unknown_api_url_is_a_json_404() -> None:
    assert_json_error(Client().get("/api/v1/no-such-thing/"), 404, "not_found")
    assert_json_error(Client().get("/api/nothing-here"), 404, "not_found")


def test_an_unknown_object_is_a_json_404(staff_token: str) -> None:
    response = Client().get("/api/v1/orders/999999/", HTTP_AUTHORIZATION=f"Token {staff_token}")

    assert_json_error(response, 404, "not_found")


def test_a_method_the_endpoint_lacks_is_a_json_405(staff_token: str) -> None:
    response = Client().delete("/api/v1/orders/", HTTP_AUTHORIZATION=f"Token {staff_token}")

    body = assert_json_error(response, 405, "method_not_allowed")
    assert "DELETE" in json.dumps(body)
    assert "GET" in response["Allow"]


def test_a_plain_django_view_under_api_refusing_a_method_answers_json() -> None:
    # the webhook is POST only; GET never reaches a handler
    response = Client().get("/api/v1/billing/stripe/webhook")

    assert_json_error(response, 405, "method_not_allowed")


@override_settings(ROOT_URLCONF="tests.hub.api.error_urls")
def test_an_unhandled_exception_under_api_is_a_json_500_that_reveals_nothing() -> None:
    response = Client(raise_request_exception=False).get("/api/v1/test-only/explode/")

    body = assert_json_error(response, 500, "server_error")
    assert "secret" not in json.dumps(body)


@override_settings(ROOT_URLCONF="tests.hub.api.error_urls")
def test_outside_api_the_errors_stay_html() -> None:
    client = Client(raise_request_exception=False)

    boom = client.get("/test-only/explode/")
    missing = client.get("/no-such-page/")

    assert boom.status_code == 500 and boom["Content-Type"].startswith("text/html")
    assert missing.status_code == 404 and missing["Content-Type"].startswith("text/html")
