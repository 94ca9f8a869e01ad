"""GET /api/v1/alerts/: staff only; the open alerts and the recently resolved ones,
filtered by status, severity, kind and subject, paginated as DRF does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from hub.alerts.services import Failing, alert_raise, alert_resolve, alerts_sync
from hub.models import Alert, AlertSeverity

pytestmark = pytest.mark.django_db

URL = "/api/v1/alerts/"


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_user("alerts-staff", password="x", is_staff=True)
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")


@pytest.fixture
def alerts() -> dict[str, Alert]:
    disk = alert_raise(subject_type="tenant", subject_id=1, kind="disk", severity=AlertSeverity.MEDIUM, message="disk")
    stale = alert_raise(
        subject_type="tenant", subject_id=2, kind="heartbeat_stale", severity=AlertSeverity.HARD, message="stale"
    )
    tls = alert_raise(subject_type="tenant", subject_id=1, kind="tls", severity=AlertSeverity.SOFT, message="tls")
    alert_resolve(subject_type="tenant", subject_id=1, kind="tls")
    old = alert_raise(subject_type="server", subject_id=9, kind="orphan", severity=AlertSeverity.SOFT, message="old")
    alert_resolve(subject_type="server", subject_id=9, kind="orphan")
    Alert.objects.filter(pk=old.pk).update(resolved_at=timezone.now() - timedelta(days=3))
    return {"disk": disk, "stale": stale, "tls": tls, "old": old}


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_lists_open_and_recently_resolved_alerts_in_the_contract_s_shape(staff: Client, alerts) -> None:
    response = staff.get(URL)

    assert ids(response) == {alerts["disk"].pk, alerts["stale"].pk, alerts["tls"].pk}
    row = next(r for r in response.json()["results"] if r["id"] == alerts["tls"].pk)
    assert row["kind"] == "tls" and row["severity"] == "SOFT" and row["status"] == "RESOLVED"
    assert row["subject"] == "tenant:1" and row["opened_at"] and row["resolved_at"]
    assert response.json()["count"] == 3


def test_older_resolved_alerts_come_back_with_a_wider_window(staff: Client, alerts) -> None:
    assert alerts["old"].pk in ids(staff.get(URL, {"resolved_within_hours": 96}))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "OPEN"}, {"disk", "stale"}),
        ({"status": "RESOLVED"}, {"tls"}),
        ({"severity": "HARD"}, {"stale"}),
        ({"kind": "disk"}, {"disk"}),
        ({"subject_type": "tenant", "subject_id": "1"}, {"disk", "tls"}),
        ({"subject_type": "server"}, set()),
    ],
)
def test_filters(staff: Client, alerts, query: dict[str, str], expected: set[str]) -> None:
    assert ids(staff.get(URL, query)) == {alerts[name].pk for name in expected}


@pytest.mark.parametrize(
    "query", [{"status": "CLOSED"}, {"severity": "LOUD"}, {"stauts": "OPEN"}, {"resolved_within_hours": "-1"}]
)
def test_a_bad_filter_is_a_json_400(staff: Client, alerts, query: dict[str, str]) -> None:
    response = staff.get(URL, query)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_pages_as_drf_does(staff: Client) -> None:
    failing = {n: Failing(severity=AlertSeverity.SOFT, message="d") for n in range(60)}
    alerts_sync(kind="disk", subject_type="tenant", failing=failing)

    first = staff.get(URL).json()
    second = staff.get(URL, {"page": 2}).json()

    seen = [r["id"] for page in (first, second) for r in page["results"]]
    assert first["count"] == 60 and len(seen) == 60 == len(set(seen))
    assert first["next"] and second["next"] is None


def test_needs_a_staff_credential(alerts) -> None:
    customer = get_user_model().objects.create_user("customer", password="x")
    token = Token.objects.create(user=customer).key

    anonymous = Client().get(URL)
    not_staff = Client(HTTP_AUTHORIZATION=f"Token {token}").get(URL)
    wrong = Client(HTTP_AUTHORIZATION="Token not-a-key").get(URL)

    assert anonymous.status_code == 401 and "results" not in anonymous.json()
    assert not_staff.status_code == 403 and "results" not in not_staff.json()
    assert wrong.status_code == 401
