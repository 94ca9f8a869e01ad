"""A list filtered by a value with a NUL character answers an empty page, not a server
error: Postgres stores no NUL, so no row can match, and psycopg refuses to send one.
The schema fuzzer found `GET /api/v1/tenants/?domain=%00` answering 500."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from ops.simulation import fleet_simulate

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_api() -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("nul-staff", password="x", is_staff=True))
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/tenants/?domain=%00",
        "/api/v1/tenants/?status=ACTIVE%00",
        "/api/v1/servers/?region=eu%00",
        "/api/v1/orders/?status=%00",
        "/api/v1/jobs/?status=%00",
        "/api/v1/rollouts/?status=%00",
        "/api/v1/releases/?component=%00",
    ],
)
def test_a_filter_with_a_nul_character_matches_no_row(staff_api: APIClient, url: str) -> None:
    # given a fleet, so that an ignored filter would list something
    fleet_simulate(count=2, internal=0, actor="test")

    # when a list is filtered by a value holding a NUL character
    response = staff_api.get(url)

    # then the answer is an empty page
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["count"], body["results"]) == (0, [])


def test_the_same_filter_without_the_nul_still_lists(staff_api: APIClient) -> None:
    fleet_simulate(count=2, internal=0, actor="test")
    assert staff_api.get("/api/v1/tenants/?status=ACTIVE").json()["count"] == 2
    assert staff_api.get("/api/v1/servers/?region=eu").json()["count"] >= 1
