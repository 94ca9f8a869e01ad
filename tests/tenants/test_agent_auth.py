"""Only a tenant's own, current key works, and a refusal says nothing useful."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tenants import keycache
from tenants.models import AgentCredential, Command, CommandStatus
from tenants.secrets import secret_digest
from tenants.services import agent_key_revoke, agent_key_rotate, agents_sweep
from tests.conftest import wait_for
from tests.tenants.conftest import HEARTBEAT

pytestmark = pytest.mark.django_db

HEARTBEAT_URL = "/api/v1/agent/heartbeat"
GENERIC_401 = {"error": "authentication_failed", "detail": "Missing or invalid API key."}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer ",
        "Token abc",
        "Bearer hak_000000000000_" + "A" * 43,
        "Bearer not-a-key",
        "Basic dXNlcjpwYXNz",
    ],
)
@pytest.mark.parametrize(
    "path",
    ["/api/v1/agent/heartbeat", "/api/v1/agent/backups", "/api/v1/agent/usage", "/api/v1/agent/rotate-key"],
)
def test_missing_or_wrong_key_gets_401_and_no_detail(api, agent, header, path):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}

    response = api.post(path, HEARTBEAT, format="json", **extra)

    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="agent"'


def test_a_key_with_a_right_prefix_and_wrong_secret_is_refused(api, agent):
    forged = agent.api_key[:-4] + ("AAAA" if not agent.api_key.endswith("AAAA") else "BBBB")

    response = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", HTTP_AUTHORIZATION=f"Bearer {forged}")

    assert response.status_code == 401
    assert response.json() == GENERIC_401


def test_tenant_cannot_answer_another_tenants_command(api, make_agent, queue_command):
    # given
    alice, bob = make_agent(), make_agent()
    command = queue_command(bob.tenant)

    # when Alice answers Bob's command, and asks for an unknown one
    stolen = api.post(
        f"/api/v1/agent/commands/{command.pk}/result",
        {"status": "succeeded", "output": "done"},
        format="json",
        **alice.auth,
    )
    unknown = api.post(
        f"/api/v1/agent/commands/{uuid.uuid4()}/result",
        {"status": "succeeded", "output": ""},
        format="json",
        **alice.auth,
    )

    # then both look the same, and Bob's command is untouched
    assert stolen.status_code == 404
    assert stolen.json() == unknown.json() == {"error": "not_found", "detail": "Not found."}
    assert Command.objects.get(pk=command.pk).status == CommandStatus.PENDING


def test_tenant_cannot_read_another_tenants_commands(api, make_agent, queue_command):
    alice, bob = make_agent(), make_agent()
    queue_command(bob.tenant)

    alice_reply = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **alice.auth).json()
    bob_reply = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **bob.auth).json()
    staff_view = api.get(f"/api/v1/tenants/{bob.tenant.pk}/commands/", **alice.auth)

    assert alice_reply["commands"] == []
    assert len(bob_reply["commands"]) == 1
    assert staff_view.status_code in (401, 403)


def test_agent_key_cannot_use_staff_endpoints(api, agent):
    for path in ["/api/v1/tenants/", f"/api/v1/tenants/{agent.tenant.pk}/"]:
        assert api.get(path, **agent.auth).status_code in (401, 403)


def test_rotation_keeps_the_old_key_working_for_the_overlap_then_not(api, agent, django_capture_on_commit_callbacks):
    # given a warm key cache
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200

    # when the agent rotates its key
    with django_capture_on_commit_callbacks(execute=True):
        rotated = api.post("/api/v1/agent/rotate-key", format="json", **agent.auth)
    new_auth = {"HTTP_AUTHORIZATION": f"Bearer {rotated.json()['api_key']}"}

    # then both keys work during the overlap
    assert rotated.status_code == 201
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **new_auth).status_code == 200


def test_old_key_stops_working_when_the_overlap_ends(api, agent, django_capture_on_commit_callbacks):
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        rotation = agent_key_rotate(tenant_id=agent.tenant.pk, actor="staff", overlap_seconds=1)
    new_auth = {"HTTP_AUTHORIZATION": f"Bearer {rotation.api_key}"}
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200

    # the cached entry carries the expiry: no notification is needed when it passes
    wait_for(
        lambda: api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 401,
        timeout=5,
        message="the old key to expire",
    )
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **new_auth).status_code == 200


def test_rotation_overlap_is_a_setting(agent, settings):
    settings.AGENT_KEY_ROTATION_OVERLAP = 90
    before = timezone.now()

    rotation = agent_key_rotate(tenant_id=agent.tenant.pk, actor="staff")

    assert timedelta(seconds=89) < rotation.old_keys_expire_at - before < timedelta(seconds=91)
    old = AgentCredential.objects.exclude(pk=rotation.credential.pk).get(tenant=agent.tenant)
    assert old.expires_at == rotation.old_keys_expire_at
    assert old.revoked_at is None


def test_revoked_key_stops_working_on_the_cached_heartbeat_path(api, agent, django_capture_on_commit_callbacks):
    # given the key is in this process's cache
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200
    assert keycache._entries

    # when staff revoke it (the service only tells Redis; no process cache is touched)
    with django_capture_on_commit_callbacks(execute=True):
        assert agent_key_revoke(tenant_id=agent.tenant.pk, actor="staff", reason="compromised") == 1

    # then the very next heartbeat is refused
    response = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth)
    assert response.status_code == 401
    assert response.json() == GENERIC_401


def test_a_revocation_redis_never_heard_of_is_repaired_by_the_sweep(api, agent):
    # given a warm cache and a revocation written straight to Postgres (the Redis
    # notification lost, as in a Redis restart)
    agents_sweep()
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200
    AgentCredential.objects.filter(tenant=agent.tenant).update(revoked_at=timezone.now(), updated_at=timezone.now())
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200  # cache still trusts it

    # when the periodic sweep runs
    result = agents_sweep()

    # then
    assert result.key_caches_invalidated
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 401


def test_cached_heartbeat_runs_no_sql(api, agent, django_assert_num_queries):
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200

    with django_assert_num_queries(0):
        response = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth)

    assert response.status_code == 200


def test_per_tenant_throttle(api, make_agent, settings):
    settings.AGENT_THROTTLE_RATE = "3/minute"
    noisy, quiet = make_agent(), make_agent()

    codes = [api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **noisy.auth).status_code for _ in range(5)]
    other = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **quiet.auth)
    usage = api.post(
        "/api/v1/agent/usage",
        {"report_id": str(uuid.uuid4()), "period": "2026-11", "tokens": 1},
        format="json",
        **noisy.auth,
    )

    assert codes == [200, 200, 200, 429, 429]
    assert other.status_code == 200
    assert usage.status_code == 429
    assert usage.json()["error"] == "throttled"
    assert int(usage.headers["Retry-After"]) >= 1


def test_cache_reset_under_a_request_rechecks_the_key(api, agent):
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200
    keycache.reset(generation="something-else")

    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **agent.auth).status_code == 200


def _key_with_prefix(tenant, prefix: str) -> dict[str, str]:
    """A working key whose lookup prefix the test chooses (keys are random otherwise)."""
    plaintext = f"hak_{prefix}_{secrets.token_urlsafe(32)}"
    AgentCredential.objects.create(tenant=tenant, key_prefix=prefix, key_hash=secret_digest(plaintext))
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def test_a_cold_cache_loads_a_whole_bucket_of_keys_with_one_query(api, make_tenant, django_assert_num_queries):
    first, neighbour, stranger = (
        _key_with_prefix(make_tenant(), p) for p in ("ab0000000001", "ab0000000002", "cd0000000001")
    )

    with django_assert_num_queries(1):
        assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **first).status_code == 200
    with django_assert_num_queries(0):
        # same bucket ("ab"): already loaded with the first
        assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **neighbour).status_code == 200
    with django_assert_num_queries(1):
        assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **stranger).status_code == 200


def test_a_key_made_after_its_bucket_was_loaded_still_works(api, make_tenant, django_assert_num_queries):
    early = _key_with_prefix(make_tenant(), "ef0000000001")
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **early).status_code == 200

    late = _key_with_prefix(make_tenant(), "ef0000000002")

    # the bucket does not know it: one query for that prefix alone, then cached
    with django_assert_num_queries(1):
        assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **late).status_code == 200
    with django_assert_num_queries(0):
        assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **late).status_code == 200


def test_a_wrong_secret_behind_a_cached_prefix_is_refused(api, make_tenant):
    good = _key_with_prefix(make_tenant(), "aa0000000001")
    assert api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **good).status_code == 200

    forged = {"HTTP_AUTHORIZATION": f"Bearer hak_aa0000000001_{secrets.token_urlsafe(32)}"}

    response = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **forged)
    assert response.status_code == 401
    assert response.json() == GENERIC_401
