"""Bad input gets a 4xx with a JSON error that says what is wrong, and changes nothing."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client

from hub.models import AuditEvent
from tenants import redis_store
from tenants.models import AgentCredential, BackupReport, Command, HeartbeatSample, Tenant, UsageReport
from tests.tenants.conftest import HEARTBEAT

pytestmark = pytest.mark.django_db


def world() -> dict[str, object]:
    """Everything a request could have changed."""
    return {
        "tenants": list(Tenant.objects.order_by("pk").values()),
        "commands": list(Command.objects.order_by("pk").values()),
        "credentials": list(AgentCredential.objects.order_by("pk").values()),
        "backups": BackupReport.objects.count(),
        "usage": UsageReport.objects.count(),
        "samples": HeartbeatSample.objects.count(),
        "audit": AuditEvent.objects.count(),
        "buffered": redis_store.heartbeats_buffered(),
    }


def with_(**changes: object) -> dict[str, object]:
    return {**HEARTBEAT, **changes}


def without(name: str) -> dict[str, object]:
    return {k: v for k, v in HEARTBEAT.items() if k != name}


BACKUP = {
    "report_id": "3f1c0b8e-8a51-4c1e-9b1e-4d7d3a2f5e10",
    "last_run": "2026-02-27T02:15:00Z",
    "duration_seconds": 342,
    "databases": {
        "chatwoot": {"status": "success", "size_mb": 45},
        "nextcloud": {"status": "failed", "error": "connection refused"},
    },
    "remote_sync": {"status": "success", "uploaded_mb": 230},
}

BAD_HEARTBEATS = {
    "missing field": without("disk_percent"),
    "disk over 100": with_(disk_percent=100.5),
    "negative memory": with_(memory_percent=-1),
    "string number": with_(load="0.5"),
    "boolean number": with_(uptime_seconds=True),
    "float uptime": with_(uptime_seconds=1.5),
    "huge uptime": with_(uptime_seconds=10**30),
    "unknown field": with_(cpu_temperature=80),
    "containers not a list": with_(containers={"name": "x"}),
    "container unknown key": with_(containers=[{"name": "a", "state": "running", "health": None, "x": 1}]),
    "container without name": with_(containers=[{"state": "running"}]),
    "container name too long": with_(containers=[{"name": "a" * 129, "state": "running"}]),
    "too many containers": with_(containers=[{"name": f"c{i}", "state": "running"} for i in range(501)]),
    "versions not strings": with_(versions={"agent": 1}),
    "versions bad component": with_(versions={"../etc": "1"}),
    "tls not a date": with_(tls_expires_at="soon"),
    "tls year 9999": with_(tls_expires_at="9999-12-31T23:59:59-05:00"),
    "tls a number": with_(tls_expires_at=1700000000),
    "body a list": [HEARTBEAT],
    "body a string": "hello",
    "body null": None,
}


@pytest.mark.parametrize("body", BAD_HEARTBEATS.values(), ids=BAD_HEARTBEATS.keys())
def test_bad_heartbeat_is_refused_and_changes_nothing(api, agent, body):
    before = world()

    response = api.post("/api/v1/agent/heartbeat", body, format="json", **agent.auth)

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert response.json()["detail"]
    assert world() == before


RAW_BODIES = {
    "not json": b"{disk_percent: 1",
    "NaN": b'{"disk_percent": NaN, "memory_percent": 1, "load": 1, "uptime_seconds": 1}',
    "Infinity": b'{"disk_percent": 1e999, "memory_percent": 1, "load": 1, "uptime_seconds": 1}',
    "NUL in a string": json.dumps(with_(versions={"agent": "1\u0000"})).encode(),
    "lone surrogate": (
        b'{"disk_percent": 1, "memory_percent": 1, "load": 1, "uptime_seconds": 1, "versions": {"a": "\\ud800"}}'
    ),
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    # The parser reads it as a float; the serializer wants a whole number.
    "integer beyond 64 bits": (
        b'{"disk_percent": 1, "memory_percent": 1, "load": 1, "uptime_seconds": 123456789012345678901234567890}'
    ),
    "invalid utf-8": b'{"disk_percent": "\xff"}',
}


@pytest.mark.parametrize("raw", RAW_BODIES.values(), ids=RAW_BODIES.keys())
def test_unparseable_body_is_refused_and_changes_nothing(agent, raw):
    before = world()

    response = Client().post(
        "/api/v1/agent/heartbeat", raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {agent.api_key}"
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"] in ("parse_error", "invalid")
    assert world() == before


@pytest.mark.parametrize(
    "path", ["/api/v1/agent/heartbeat", "/api/v1/agent/backups", "/api/v1/agent/usage", "/api/v1/agent/register"]
)
def test_oversized_body_is_refused_with_413(agent, path, settings):
    settings.AGENT_REQUEST_MAX_BYTES = 4096
    body = json.dumps(with_(containers=[{"name": f"c{i}", "state": "running" * 4} for i in range(200)])).encode()
    assert len(body) > 4096
    before = world()

    response = Client().post(path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {agent.api_key}")

    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large", "detail": "Request body too large."}
    assert world() == before


def test_a_body_just_under_the_limit_is_accepted(api, agent, settings):
    settings.AGENT_REQUEST_MAX_BYTES = 8192
    containers = [{"name": f"c{i}", "state": "running", "health": "healthy"} for i in range(100)]
    assert 4096 < len(json.dumps(with_(containers=containers))) < 8192

    response = api.post("/api/v1/agent/heartbeat", with_(containers=containers), format="json", **agent.auth)

    assert response.status_code == 200


def test_wrong_content_type_is_refused(agent):
    response = Client().post(
        "/api/v1/agent/heartbeat",
        "disk_percent=1",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Bearer {agent.api_key}",
    )

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


BAD_BACKUPS = {
    "no report id": {k: v for k, v in BACKUP.items() if k != "report_id"},
    "report id not a uuid": {**BACKUP, "report_id": "42"},
    "negative duration": {**BACKUP, "duration_seconds": -1},
    "unknown status": {**BACKUP, "databases": {"ghost": {"status": "fine"}}},
    "unknown database key": {**BACKUP, "databases": {"ghost": {"status": "success", "rows": 3}}},
    "bad database name": {**BACKUP, "databases": {"a b": {"status": "success"}}},
    "unknown top-level field": {**BACKUP, "host": "x"},
    "last_run not a date": {**BACKUP, "last_run": "yesterday"},
}


@pytest.mark.parametrize("body", BAD_BACKUPS.values(), ids=BAD_BACKUPS.keys())
def test_bad_backup_report_is_refused_and_changes_nothing(api, agent, body):
    before = world()

    response = api.post("/api/v1/agent/backups", body, format="json", **agent.auth)

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert world() == before


BAD_USAGE = {
    "bad period": {"report_id": str(uuid.uuid4()), "period": "2026-13", "tokens": 1},
    "negative tokens": {"report_id": str(uuid.uuid4()), "period": "2026-11", "tokens": -5},
    "tokens a string": {"report_id": str(uuid.uuid4()), "period": "2026-11", "tokens": "5"},
    "unknown field": {"report_id": str(uuid.uuid4()), "period": "2026-11", "tokens": 5, "cost": 1},
    "report id a boolean": {"report_id": False, "period": "2026-11", "tokens": 5},
    "report id an integer": {"report_id": 7, "period": "2026-11", "tokens": 5},
}


@pytest.mark.parametrize("body", BAD_USAGE.values(), ids=BAD_USAGE.keys())
def test_bad_usage_report_is_refused_and_changes_nothing(api, agent, body):
    before = world()

    response = api.post("/api/v1/agent/usage", body, format="json", **agent.auth)

    assert response.status_code == 400, response.content
    assert world() == before


BAD_RESULTS = {
    "unknown status": {"status": "done", "output": ""},
    "output not a string": {"status": "succeeded", "output": 5},
    "output too long": {"status": "succeeded", "output": "x" * 40_000},
    "rolled_back a string": {"status": "failed", "output": "", "rolled_back": "yes"},
    "details a list": {"status": "failed", "output": "", "details": [1]},
    "unknown field": {"status": "failed", "output": "", "exit_code": 1},
}


@pytest.mark.parametrize("body", BAD_RESULTS.values(), ids=BAD_RESULTS.keys())
def test_bad_command_result_is_refused_and_changes_nothing(api, agent, queue_command, body):
    command = queue_command(agent.tenant)
    before = world()

    response = api.post(f"/api/v1/agent/commands/{command.pk}/result", body, format="json", **agent.auth)

    assert response.status_code == 400, response.content
    assert world() == before


def test_bad_registration_is_refused(api):
    response = api.post("/api/v1/agent/register", {"registration_token": 5, "hostname": "x"}, format="json")

    assert response.status_code == 400
    assert set(response.json()["detail"]) == {"registration_token", "agent_version"}


def test_staff_bad_command_is_refused(staff_api, agent):
    before = world()

    responses = [
        staff_api.post(f"/api/v1/tenants/{agent.tenant.pk}/commands/", body, format="json")
        for body in [
            {"type": "reboot"},
            {"type": "update", "payload": {"component": "nextcloud"}},
            {"type": "restart", "payload": [], "ttl_seconds": 60},
            {"type": "restart", "ttl_seconds": 1},
        ]
    ]

    assert [r.status_code for r in responses] == [400, 400, 400, 400]
    assert world() == before
