"""Commands go out in heartbeat replies at least once until a result answers them,
again when unanswered past the redelivery timeout, and expire after their TTL."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from hub.models import AuditEvent
from tenants import redis_store
from tenants.models import Command, CommandStatus, Tenant, TenantStatus
from tenants.services import agents_sweep
from tests.tenants.conftest import HEARTBEAT

pytestmark = pytest.mark.django_db

HEARTBEAT_URL = "/api/v1/agent/heartbeat"


def heartbeat(api, agent) -> list[dict]:
    response = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth)
    assert response.status_code == 200, response.content
    return response.json()["commands"]


def answer(api, agent, command_id, **body):
    body.setdefault("status", "succeeded")
    body.setdefault("output", "ok")
    return api.post(f"/api/v1/agent/commands/{command_id}/result", body, format="json", **agent.auth)


def test_command_is_delivered_in_the_next_heartbeat_once(api, agent, queue_command):
    command = queue_command(agent.tenant, type="diagnostics", payload={"level": "full"})

    first, second = heartbeat(api, agent), heartbeat(api, agent)

    assert first == [{"id": str(command.pk), "type": "diagnostics", "payload": {"level": "full"}}]
    assert second == []
    command.refresh_from_db()
    assert command.status == CommandStatus.DELIVERED
    assert command.delivery_count == 1
    assert command.delivered_at is not None


def test_unanswered_command_is_redelivered_after_the_timeout(api, agent, queue_command, settings):
    settings.COMMAND_REDELIVERY_TIMEOUT = 30
    command = queue_command(agent.tenant)
    assert len(heartbeat(api, agent)) == 1

    # not yet: still inside the timeout
    agents_sweep()
    assert heartbeat(api, agent) == []

    # the delivery is now older than the timeout; the sweep flags the tenant again
    Command.objects.filter(pk=command.pk).update(delivered_at=timezone.now() - timedelta(seconds=31))
    agents_sweep()

    again = heartbeat(api, agent)
    assert [c["id"] for c in again] == [str(command.pk)]
    command.refresh_from_db()
    assert command.delivery_count == 2
    assert command.status == CommandStatus.DELIVERED


def test_command_expires_after_its_ttl(api, agent, queue_command):
    command = queue_command(agent.tenant, ttl_seconds=60)
    assert (command.expires_at - command.created_at).total_seconds() == pytest.approx(60, abs=1)
    Command.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    result = agents_sweep()

    assert result.expired == 1
    command.refresh_from_db()
    assert command.status == CommandStatus.EXPIRED
    assert command.finished_at is not None
    assert heartbeat(api, agent) == []
    assert AuditEvent.objects.filter(action="command.expire", object_id=str(command.pk)).exists()


def test_an_expired_command_is_never_delivered_even_before_the_sweep(api, agent, queue_command):
    command = queue_command(agent.tenant)
    Command.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert heartbeat(api, agent) == []


def test_result_is_recorded_once(api, agent, queue_command):
    command = queue_command(agent.tenant)
    heartbeat(api, agent)

    first = answer(api, agent, command.pk, status="succeeded", output="restarted")
    again = answer(api, agent, command.pk, status="failed", output="a different story")

    assert first.status_code == 200
    assert first.json()["status"] == "SUCCEEDED"
    assert first.json()["result"] == {"status": "succeeded", "output": "restarted"}
    assert again.status_code == 200
    assert again.json() == first.json()
    assert AuditEvent.objects.filter(action="command.result", object_id=str(command.pk)).count() == 1
    # and an answered command is never delivered again
    Command.objects.filter(pk=command.pk).update(delivered_at=timezone.now() - timedelta(days=1))
    agents_sweep()
    assert heartbeat(api, agent) == []


def test_successful_update_sets_the_tenants_version(api, agent, queue_command):
    command = queue_command(agent.tenant, type="update", payload={"component": "nextcloud", "version": "30.0.0"})
    heartbeat(api, agent)

    response = answer(api, agent, command.pk, output="pulled, healthy", version="30.0.0-r1", rolled_back=False)

    assert response.status_code == 200
    tenant = Tenant.objects.get(pk=agent.tenant.pk)
    assert tenant.versions["nextcloud"] == "30.0.0-r1"
    assert AuditEvent.objects.filter(action="tenant.version", object_id=str(tenant.pk)).exists()


def test_failed_update_leaves_the_version(api, agent, queue_command):
    Tenant.objects.filter(pk=agent.tenant.pk).update(versions={"nextcloud": "29.0.1"})
    command = queue_command(agent.tenant, type="update", payload={"component": "nextcloud", "version": "30.0.0"})
    heartbeat(api, agent)

    response = answer(
        api, agent, command.pk, status="failed", output="health check failed", rolled_back=True, details={"tries": 3}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "FAILED"
    assert response.json()["result"]["rolled_back"] is True
    assert Tenant.objects.get(pk=agent.tenant.pk).versions == {"nextcloud": "29.0.1"}


def test_a_late_answer_to_an_expired_command_is_kept(api, agent, queue_command):
    command = queue_command(agent.tenant)
    heartbeat(api, agent)
    Command.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    agents_sweep()

    response = answer(api, agent, command.pk)

    assert response.status_code == 200
    assert response.json()["status"] == "SUCCEEDED"


def test_many_commands_go_out_in_batches(api, agent, queue_command, settings):
    settings.COMMANDS_PER_HEARTBEAT = 2
    for _ in range(5):
        queue_command(agent.tenant)

    batches = [len(heartbeat(api, agent)) for _ in range(4)]

    assert batches == [2, 2, 1, 0]


def test_flags_lost_with_redis_come_back_with_the_sweep(api, agent, queue_command):
    queue_command(agent.tenant)
    redis_store.client().delete(redis_store.COMMANDS_DUE_KEY)
    assert heartbeat(api, agent) == []

    agents_sweep()

    assert len(heartbeat(api, agent)) == 1


def test_staff_queue_and_list_commands_through_the_api(api, staff_api, agent, django_capture_on_commit_callbacks):
    url = f"/api/v1/tenants/{agent.tenant.pk}/commands/"
    with django_capture_on_commit_callbacks(execute=True):
        created = staff_api.post(
            url,
            {"type": "update", "payload": {"component": "ghost", "version": "5.2"}, "ttl_seconds": 600},
            format="json",
        )

    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "PENDING"
    assert body["created_by"] == "staff"
    assert body["tenant"] == agent.tenant.pk
    listed = staff_api.get(url).json()
    assert [c["id"] for c in listed["results"]] == [body["id"]]
    assert [c["id"] for c in heartbeat(api, agent)] == [body["id"]]
    assert staff_api.get("/api/v1/tenants/999999/commands/").status_code == 404
    assert staff_api.post("/api/v1/tenants/999999/commands/", {"type": "restart"}, format="json").status_code == 404


def test_no_commands_for_a_deprovisioned_tenant(staff_api, agent):
    Tenant.objects.filter(pk=agent.tenant.pk).update(status=TenantStatus.DEPROVISIONED)

    response = staff_api.post(f"/api/v1/tenants/{agent.tenant.pk}/commands/", {"type": "restart"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"] == "tenant_not_live"
    assert not Command.objects.exists()


def test_staff_queue_a_command_from_the_admin(client, agent):
    admin_user = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(admin_user)

    response = client.post(
        "/admin/tenants/command/add/",
        {"tenant": agent.tenant.pk, "type": "restart", "payload": '{"component": "ghost"}', "ttl_seconds": "600"},
    )

    assert response.status_code == 302, response.content[:2000]
    command = Command.objects.get()
    assert (command.type, command.payload, command.created_by) == ("restart", {"component": "ghost"}, "root")
    assert AuditEvent.objects.filter(action="command.queue", actor="root").exists()
    assert client.get(f"/admin/tenants/command/{command.pk}/change/").status_code == 200
    assert client.get(f"/admin/tenants/tenant/{agent.tenant.pk}/change/").status_code == 200
    assert client.get("/admin/tenants/agentcredential/").status_code == 200
    page = client.get(f"/admin/tenants/agentcredential/{agent.tenant.credentials.get().pk}/change/").content.decode()
    assert agent.tenant.credentials.get().key_hash not in page


def test_staff_admin_actions(client, agent):
    admin_user = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(admin_user)

    for action in ["queue_restart", "queue_diagnostics", "issue_registration_token", "revoke_agent_keys"]:
        response = client.post(
            "/admin/tenants/tenant/", {"action": action, "_selected_action": [agent.tenant.pk]}, follow=True
        )
        assert response.status_code == 200

    assert sorted(Command.objects.values_list("type", flat=True)) == ["diagnostics", "restart"]
    assert agent.tenant.credentials.get().revoked_at is not None
    assert agent.tenant.registration_tokens.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_that_cannot_read_its_commands_keeps_them_due(api, agent, queue_command):
    # given a command due, and the commands table locked by another session (as during
    # a Postgres restart or a long migration, the hand-out cannot read it)
    command = queue_command(agent.tenant)
    locker = psycopg.connect(connection_url(), autocommit=False)
    try:
        locker.execute("LOCK TABLE tenants_command IN ACCESS EXCLUSIVE MODE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        try:
            # when the agent heartbeats
            blocked = heartbeat(api, agent)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")

        # then the heartbeat still succeeds, without the command, and the tenant stays flagged
        assert blocked == []
        assert redis_store.client().sismember(redis_store.COMMANDS_DUE_KEY, agent.tenant.pk)
    finally:
        locker.rollback()
        locker.close()

    # and the next heartbeat hands it out, once
    assert [c["id"] for c in heartbeat(api, agent)] == [str(command.pk)]
    command.refresh_from_db()
    assert (command.status, command.delivery_count) == (CommandStatus.DELIVERED, 1)


def connection_url() -> str:
    params = connection.get_connection_params()
    return psycopg.conninfo.make_conninfo(
        **{k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")}
    )


def test_the_heartbeat_reply_is_the_same_json_with_and_without_commands(
    staff_api, api, agent, django_capture_on_commit_callbacks
):
    # given a tenant with nothing due: the reply is written without the output serializer
    quiet = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth)
    assert quiet.status_code == 200
    assert quiet.json() == {"heartbeat_interval": agent.tenant.heartbeat_interval, "commands": []}

    # when a command is queued, then the next reply carries it through the serializer,
    # with the same keys
    with django_capture_on_commit_callbacks(execute=True):
        queued = staff_api.post(
            f"/api/v1/tenants/{agent.tenant.pk}/commands/", {"type": "restart", "payload": {}}, format="json"
        )
    assert queued.status_code == 201, queued.content
    due = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).json()
    assert due == {
        "heartbeat_interval": agent.tenant.heartbeat_interval,
        "commands": [{"id": queued.json()["id"], "type": "restart", "payload": {}}],
    }
