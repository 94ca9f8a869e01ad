"""Backup and usage reports are stored once per report_id; staff see the fleet."""

from __future__ import annotations

import uuid

import pytest

from tenants.models import BackupOutcome, BackupReport, UsageReport
from tests.tenants.conftest import HEARTBEAT

pytestmark = pytest.mark.django_db

BACKUP_STATUS = {
    "last_run": "2026-02-27T02:15:00Z",
    "duration_seconds": 342,
    "databases": {
        "chatwoot": {"status": "success", "size_mb": 45},
        "ghost": {"status": "success", "size_mb": 12},
        "nextcloud": {"status": "failed", "error": "connection refused"},
    },
    "remote_sync": {"status": "success", "uploaded_mb": 230},
}


def test_backup_report_is_stored_once(api, agent):
    body = {"report_id": str(uuid.uuid4()), **BACKUP_STATUS}

    first = api.post("/api/v1/agent/backups", body, format="json", **agent.auth)
    again = api.post("/api/v1/agent/backups", body, format="json", **agent.auth)

    assert first.status_code == 201
    assert again.status_code == 200
    assert first.json() == again.json()
    report = BackupReport.objects.get(tenant=agent.tenant)
    assert report.outcome == BackupOutcome.PARTIAL
    assert report.databases["nextcloud"] == {"status": "failed", "error": "connection refused"}
    assert report.remote_sync == {"status": "success", "uploaded_mb": 230}


def test_backup_outcomes(api, agent):
    def outcome(databases: dict) -> str:
        body = {**BACKUP_STATUS, "report_id": str(uuid.uuid4()), "databases": databases}
        return api.post("/api/v1/agent/backups", body, format="json", **agent.auth).json()["outcome"]

    assert outcome({"a": {"status": "success"}}) == "SUCCESS"
    assert outcome({"a": {"status": "failed"}, "b": {"status": "failed"}}) == "FAILED"
    assert outcome({}) == "SUCCESS"


def test_same_report_id_from_two_tenants_is_two_reports(api, make_agent):
    report_id = str(uuid.uuid4())
    for agent in (make_agent(), make_agent()):
        body = {"report_id": report_id, "period": "2026-11", "tokens": 100}
        assert api.post("/api/v1/agent/usage", body, format="json", **agent.auth).status_code == 201

    assert UsageReport.objects.count() == 2


def test_usage_report_is_stored_once(api, agent):
    body = {"report_id": str(uuid.uuid4()), "period": "2026-11", "tokens": 123_456}

    codes = [api.post("/api/v1/agent/usage", body, format="json", **agent.auth).status_code for _ in range(3)]

    assert codes == [201, 200, 200]
    report = UsageReport.objects.get()
    assert (report.tenant_id, report.period, report.tokens) == (agent.tenant.pk, "2026-11", 123_456)


def test_staff_fleet_view(api, staff_api, make_agent):
    from tenants.services import heartbeat_flush

    alice, bob = make_agent(), make_agent(region="us")
    api.post("/api/v1/agent/heartbeat", HEARTBEAT, format="json", **alice.auth)
    heartbeat_flush()

    listing = staff_api.get("/api/v1/tenants/").json()
    detail = staff_api.get(f"/api/v1/tenants/{alice.tenant.pk}/").json()
    only_us = staff_api.get("/api/v1/tenants/?region=us").json()

    assert listing["count"] == 2
    assert [t["id"] for t in only_us["results"]] == [bob.tenant.pk]
    for key in ("id", "domain", "status", "server", "last_heartbeat_at", "versions"):
        assert key in detail
    assert detail["status"] == "ACTIVE"
    assert detail["last_heartbeat_at"] is not None
    assert detail["versions"] == HEARTBEAT["versions"]
    assert detail["containers"] == HEARTBEAT["containers"]
    assert staff_api.get("/api/v1/tenants/999999/").status_code == 404
    assert api.get("/api/v1/tenants/").status_code in (401, 403)


def test_staff_issue_a_registration_token_and_revoke_keys(api, staff_api, agent, make_tenant):
    tenant = make_tenant()

    issued = staff_api.post(f"/api/v1/tenants/{tenant.pk}/registration-token/", {"ttl_seconds": 600}, format="json")
    token = issued.json()["registration_token"]
    registered = api.post(
        "/api/v1/agent/register",
        {"registration_token": token, "hostname": "h", "agent_version": "1"},
        format="json",
    )
    revoked = staff_api.post(f"/api/v1/tenants/{agent.tenant.pk}/revoke-keys/")

    assert issued.status_code == 201
    assert registered.status_code == 201
    assert revoked.json() == {"revoked": 1}
    assert api.post("/api/v1/agent/heartbeat", HEARTBEAT, format="json", **agent.auth).status_code == 401
