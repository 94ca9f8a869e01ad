"""An agent trades its one-time registration token for an API key, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import AgentCredential, RegistrationToken
from tenants.secrets import secret_digest
from tenants.services import registration_token_issue

pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/agent/register"


def register_body(token: str) -> dict[str, str]:
    return {"registration_token": token, "hostname": "vps-1.example.test", "agent_version": "1.2.3"}


def test_registration_token_works_once_and_returns_a_working_key(api, make_tenant):
    # given
    tenant = make_tenant()
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")

    # when
    first = api.post(REGISTER, register_body(token), format="json")
    second = api.post(REGISTER, register_body(token), format="json")

    # then
    assert first.status_code == 201
    body = first.json()
    assert body["tenant_id"] == tenant.pk
    assert body["heartbeat_interval"] == 60
    assert body["api_key"].startswith("hak_")
    assert second.status_code == 403
    assert second.json()["error"] == "registration_refused"
    assert "api_key" not in second.json()
    assert AgentCredential.objects.filter(tenant=tenant).count() == 1
    heartbeat = api.post(
        "/api/v1/agent/heartbeat",
        {"disk_percent": 1, "memory_percent": 2, "load": 0.1, "uptime_seconds": 5},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {body['api_key']}",
    )
    assert heartbeat.status_code == 200


def test_expired_registration_token_is_refused(api, make_tenant):
    tenant = make_tenant()
    record, token = registration_token_issue(tenant_id=tenant.pk, actor="test")
    RegistrationToken.objects.filter(pk=record.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = api.post(REGISTER, register_body(token), format="json")

    assert response.status_code == 403
    assert response.json()["error"] == "registration_refused"
    assert not AgentCredential.objects.filter(tenant=tenant).exists()
    assert RegistrationToken.objects.get(pk=record.pk).used_at is None


def test_unknown_token_gets_the_same_answer_as_a_used_one(api):
    response = api.post(REGISTER, register_body("hrt_" + "x" * 43), format="json")

    assert response.status_code == 403
    assert response.json() == {
        "error": "registration_refused",
        "detail": "Registration token invalid, used or expired.",
    }


def test_only_hashes_of_tokens_and_keys_are_stored(api, make_tenant):
    tenant = make_tenant()
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")
    api_key = api.post(REGISTER, register_body(token), format="json").json()["api_key"]

    stored_token = RegistrationToken.objects.get(tenant=tenant)
    credential = AgentCredential.objects.get(tenant=tenant)
    assert stored_token.token_hash == secret_digest(token)
    assert credential.key_hash == secret_digest(api_key)
    assert api_key not in str(list(AgentCredential.objects.values()))
    assert credential.key_prefix == api_key.split("_")[1]


def test_reregistration_revokes_the_previous_key(api, agent, django_capture_on_commit_callbacks):
    _, token = registration_token_issue(tenant_id=agent.tenant.pk, actor="test")
    with django_capture_on_commit_callbacks(execute=True):
        new_key = api.post(REGISTER, register_body(token), format="json").json()["api_key"]

    old = api.post("/api/v1/agent/usage", usage(), format="json", **agent.auth)
    new = api.post("/api/v1/agent/usage", usage(), format="json", HTTP_AUTHORIZATION=f"Bearer {new_key}")

    assert old.status_code == 401
    assert new.status_code == 201


def usage() -> dict[str, object]:
    import uuid

    return {"report_id": str(uuid.uuid4()), "period": "2026-11", "tokens": 1000}
