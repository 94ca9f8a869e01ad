"""Heartbeats are buffered in Redis and flushed to Postgres in bulk: the tenant's state
is current within seconds, the history complete, at a constant number of queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from ops.simulation import fleet_simulate
from tenants import redis_store
from tenants.models import CONTAINER_CRASHED_STATES, CONTAINER_UNHEALTHY, HeartbeatSample, Tenant, TenantContainers
from tenants.services import agent_key_revoke, command_record_result, heartbeat_flush
from tests.conftest import wait_for
from tests.tenants.conftest import HEARTBEAT

HEARTBEAT_URL = "/api/v1/agent/heartbeat"
GHOST_EXITED = [{"name": "ghost", "state": "exited", "health": None}]


def beat(api: APIClient, api_key: str, **changes: object) -> None:
    response = api.post(HEARTBEAT_URL, {**HEARTBEAT, **changes}, format="json", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_heartbeat_is_buffered_then_flushed_into_state_and_history(api, agent):
    # given two heartbeats, buffered
    beat(api, agent.api_key, disk_percent=10.0)
    beat(api, agent.api_key, disk_percent=20.0, versions={"ghost": "5.1"})
    tenant = Tenant.objects.get(pk=agent.tenant.pk)
    assert tenant.last_heartbeat_at is None
    assert redis_store.heartbeats_buffered() == 2

    # when the flush runs
    result = heartbeat_flush()

    # then the latest state is on the tenant and both samples are in the history
    assert (result.samples, result.tenants) == (2, 1)
    tenant.refresh_from_db()
    assert tenant.last_heartbeat_at is not None
    assert (timezone.now() - tenant.last_heartbeat_at).total_seconds() < 10
    assert tenant.disk_percent == 20.0
    assert tenant.memory_percent == 63.0
    assert tenant.uptime_seconds == 86400
    assert tenant.containers == HEARTBEAT["containers"]
    assert tenant.tls_expires_at == datetime(2027, 1, 15, tzinfo=UTC)
    assert tenant.versions == {"ghost": "5.1"}
    samples = list(HeartbeatSample.objects.filter(tenant=tenant).order_by("received_at"))
    assert [s.disk_percent for s in samples] == [10.0, 20.0]
    assert samples[-1].received_at == tenant.last_heartbeat_at
    assert redis_store.heartbeats_buffered() == 0

    # and a later heartbeat's versions are merged into what the tenant had
    beat(api, agent.api_key, versions={"nextcloud": "29.0.2"})
    heartbeat_flush()
    tenant.refresh_from_db()
    assert tenant.versions == {"ghost": "5.1", "nextcloud": "29.0.2"}


@pytest.mark.django_db
def test_the_flush_leaves_the_bad_containers_described_beside_the_tenant(api, agent):
    # given a heartbeat with one container in each crashed state, one unhealthy, one fine
    crashed = [{"name": f"c-{state}", "state": state, "health": None} for state in CONTAINER_CRASHED_STATES]
    sick = {"name": "odoo", "state": "running", "health": CONTAINER_UNHEALTHY}
    fine = {"name": "web", "state": "running", "health": "healthy"}
    beat(api, agent.api_key, containers=[fine, *crashed, sick])

    # when it is flushed, Postgres describes the bad ones, in the agent's order
    heartbeat_flush()
    report = TenantContainers.objects.get(tenant=agent.tenant)
    assert report.bad == [*(f"c-{s} ({s})" for s in CONTAINER_CRASHED_STATES), "odoo (unhealthy)"]

    # and a later heartbeat with all of them fine clears the description
    beat(api, agent.api_key, containers=[fine])
    heartbeat_flush()
    report.refresh_from_db()
    assert (report.containers, report.bad) == ([fine], None)


def containers_row_version(tenant_id: int) -> str:
    """The Postgres row version (xmin) of the tenant's containers: a write changes it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT xmin::text FROM {TenantContainers._meta.db_table} WHERE tenant_id = %s",
            [tenant_id],
        )
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_the_flush_rewrites_the_containers_only_when_they_changed(api, agent):
    # given the containers flushed once
    beat(api, agent.api_key)
    heartbeat_flush()
    first = containers_row_version(agent.tenant.pk)

    # when the next heartbeats report the same list, then a different one
    beat(api, agent.api_key, disk_percent=77.0)
    heartbeat_flush()
    unchanged = containers_row_version(agent.tenant.pk)
    moved_to = Tenant.objects.get(pk=agent.tenant.pk).disk_percent
    beat(api, agent.api_key, containers=GHOST_EXITED)
    heartbeat_flush()

    # then the row was left alone while the tenant's state moved, and rewritten after
    assert (unchanged, moved_to) == (first, 77.0)
    assert containers_row_version(agent.tenant.pk) != first
    assert Tenant.objects.get(pk=agent.tenant.pk).containers == GHOST_EXITED


@pytest.mark.django_db
def test_a_heartbeat_older_than_the_tenants_state_leaves_its_containers(api, agent):
    # given containers flushed, then a state newer than the next buffered heartbeat
    beat(api, agent.api_key)
    heartbeat_flush()
    Tenant.objects.filter(pk=agent.tenant.pk).update(last_heartbeat_at=timezone.now() + timedelta(hours=1))

    # when that older heartbeat, with other containers, is flushed
    beat(api, agent.api_key, containers=[{"name": "ghost", "state": "exited", "health": None}])
    heartbeat_flush()

    # then the containers are still those of the newer state
    assert Tenant.objects.get(pk=agent.tenant.pk).containers == HEARTBEAT["containers"]


def history_containers(tenant_id: int) -> list[object]:
    return list(
        HeartbeatSample.objects.filter(tenant_id=tenant_id).order_by("received_at").values_list("containers", flat=True)
    )


@pytest.mark.django_db
def test_a_raw_sample_keeps_its_containers_only_when_they_changed(api, agent):
    # given heartbeats flushed one by one: a list, the same, another, the same, the first
    same, other = HEARTBEAT["containers"], GHOST_EXITED
    for containers in (same, same, other, other, same):
        beat(api, agent.api_key, containers=containers)
        heartbeat_flush()

    # then each sample kept its list only where it differed from the one before
    assert history_containers(agent.tenant.pk) == [same, None, other, None, same]
    assert Tenant.objects.get(pk=agent.tenant.pk).containers == same


@pytest.mark.django_db
def test_within_one_flush_each_sample_is_compared_with_the_one_before_it(api, agent, settings):
    # given a list flushed, then four heartbeats buffered together, in chunks of one
    beat(api, agent.api_key, containers=GHOST_EXITED)
    heartbeat_flush()
    settings.HEARTBEAT_FLUSH_CHUNK = 1
    for containers in (GHOST_EXITED, HEARTBEAT["containers"], HEARTBEAT["containers"], GHOST_EXITED):
        beat(api, agent.api_key, containers=containers)

    # when they are flushed at once
    heartbeat_flush()

    # then the first is compared with the tenant's list, the others with their predecessor
    assert history_containers(agent.tenant.pk) == [GHOST_EXITED, None, HEARTBEAT["containers"], None, GHOST_EXITED]


@pytest.mark.django_db
def test_a_late_sample_keeps_its_containers_even_when_they_are_the_tenants(api, agent):
    # given the tenant's containers flushed, and its state newer than the next heartbeat
    beat(api, agent.api_key)
    heartbeat_flush()
    Tenant.objects.filter(pk=agent.tenant.pk).update(last_heartbeat_at=timezone.now() + timedelta(hours=1))

    # when that older heartbeat reports the very same list
    beat(api, agent.api_key)
    heartbeat_flush()

    # then it keeps its own list: it does not follow the tenant's newest sample
    assert history_containers(agent.tenant.pk) == [HEARTBEAT["containers"], HEARTBEAT["containers"]]


@pytest.mark.django_db
def test_a_tenant_list_written_without_its_digest_is_not_taken_as_the_same(api, agent):
    # given a tenant whose containers were written by something other than the flush
    beat(api, agent.api_key)
    heartbeat_flush()
    TenantContainers.objects.filter(tenant=agent.tenant).update(digest=None)

    # when a heartbeat reports that same list
    beat(api, agent.api_key)
    heartbeat_flush()

    # then its sample keeps the list, and the tenant's row gets its digest back
    assert history_containers(agent.tenant.pk) == [HEARTBEAT["containers"], HEARTBEAT["containers"]]
    assert TenantContainers.objects.get(tenant=agent.tenant).digest is not None


def tenant_updates_in_this_transaction() -> tuple[int, int]:
    """(row updates, of which in place: HOT) of the tenants table in this transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
            [Tenant._meta.db_table],
        )
        updates, in_place = cursor.fetchone()
        return int(updates), int(in_place)


@pytest.mark.django_db
def test_the_flush_updates_a_tenant_row_in_place(api, agent):
    # given a tenant that heartbeated once
    beat(api, agent.api_key)
    heartbeat_flush()
    updates, in_place = tenant_updates_in_this_transaction()

    # when its next heartbeats are flushed
    beat(api, agent.api_key, disk_percent=50.0, containers=GHOST_EXITED, versions={"ghost": "6.0"})
    heartbeat_flush()
    beat(api, agent.api_key, disk_percent=51.0)
    heartbeat_flush()

    # then each update stayed on its page (HOT): none of the columns it writes is indexed
    updated, moved_in_place = tenant_updates_in_this_transaction()
    assert (updated - updates, moved_in_place - in_place) == (2, 2)
    assert Tenant.objects.get(pk=agent.tenant.pk).disk_percent == 51.0


@pytest.mark.django_db
def test_flushing_the_same_buffer_twice_changes_nothing_more(api, agent, monkeypatch):
    # given a flush that wrote to Postgres but died before clearing the buffer
    beat(api, agent.api_key)
    monkeypatch.setattr(redis_store, "heartbeats_taken_done", lambda: None)
    heartbeat_flush()
    monkeypatch.undo()
    state = Tenant.objects.values().get(pk=agent.tenant.pk)

    # when the next flush takes the same buffer again
    result = heartbeat_flush()

    # then
    assert result.samples == 1
    assert result.tenants == 0
    assert HeartbeatSample.objects.filter(tenant=agent.tenant).count() == 1
    assert Tenant.objects.values().get(pk=agent.tenant.pk) == state
    assert redis_store.heartbeats_buffered() == 0


@pytest.mark.django_db
def test_an_older_heartbeat_does_not_undo_an_update_result(api, agent, queue_command):
    # given a heartbeat still reporting the old version, then the update's success
    beat(api, agent.api_key, versions={"nextcloud": "29.0.1"})
    command = queue_command(agent.tenant, type="update", payload={"component": "nextcloud", "version": "30.0.0"})
    command_record_result(tenant_id=agent.tenant.pk, command_id=command.pk, status="succeeded", output="ok")

    # when the older heartbeat is flushed
    heartbeat_flush()

    # then
    assert Tenant.objects.get(pk=agent.tenant.pk).versions["nextcloud"] == "30.0.0"


@pytest.mark.django_db
def test_flush_costs_the_same_queries_for_10_and_200_tenants():
    def flush_queries(count: int) -> int:
        api = APIClient()
        for fleet_agent in fleet_simulate(count=count):
            beat(api, fleet_agent.api_key)
            beat(api, fleet_agent.api_key, disk_percent=50.0)
        with CaptureQueriesContext(connection) as queries:
            result = heartbeat_flush()
        assert (result.samples, result.tenants) == (2 * count, count)
        return len(queries)

    small, large = flush_queries(10), flush_queries(200)

    assert small == large
    assert large <= 5
    assert Tenant.objects.filter(disk_percent=50.0).count() == 210
    assert HeartbeatSample.objects.count() == 420


@pytest.mark.django_db
def test_heartbeat_of_a_deleted_tenant_is_dropped_by_the_flush(api, make_agent):
    gone, kept = make_agent(), make_agent()
    beat(api, gone.api_key)
    beat(api, kept.api_key)
    Tenant.objects.filter(pk=gone.tenant.pk).delete()

    result = heartbeat_flush()

    assert result.tenants == 1
    assert HeartbeatSample.objects.count() == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_flush_task_runs_on_the_real_worker(celery_worker, api, agent):
    from tenants.tasks import flush_heartbeats

    beat(api, agent.api_key, disk_percent=33.0)

    flush_heartbeats.delay()

    tenant = wait_for(
        lambda: Tenant.objects.filter(pk=agent.tenant.pk, last_heartbeat_at__isnull=False).first(),
        timeout=30,
        message="the worker to flush the heartbeat",
    )
    assert tenant.disk_percent == 33.0
    assert HeartbeatSample.objects.filter(tenant=tenant).count() == 1
    assert "tenants.flush_heartbeats" in celery_worker.log()


@pytest.mark.django_db
def test_flush_and_sweep_are_scheduled_on_the_monitoring_queue():
    from django_celery_beat.models import PeriodicTask

    tasks = {t.task: t for t in PeriodicTask.objects.filter(task__startswith="tenants.")}

    assert set(tasks) == {"tenants.flush_heartbeats", "tenants.sweep_agents"}
    for task in tasks.values():
        assert task.queue == "monitoring"
        assert task.interval.every == 5 and task.interval.period == "seconds"
        assert task.enabled


@pytest.mark.django_db
def test_without_redis_heartbeats_go_straight_to_postgres(api, make_agent, queue_command, settings):
    # given a warm key cache, a queued command, a revoked key, and then Redis gone
    agent, revoked = make_agent(), make_agent()
    beat(api, agent.api_key)
    beat(api, revoked.api_key)
    command = queue_command(agent.tenant)
    agent_key_revoke(tenant_id=revoked.tenant.pk, actor="test")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    # when the agents heartbeat
    response = api.post(HEARTBEAT_URL, {**HEARTBEAT, "disk_percent": 77.0}, format="json", **agent.auth)
    refused = api.post(HEARTBEAT_URL, HEARTBEAT, format="json", **revoked.auth)

    # then the heartbeat is stored at once, the command handed out, the revoked key refused
    assert response.status_code == 200
    assert [c["id"] for c in response.json()["commands"]] == [str(command.pk)]
    tenant = Tenant.objects.get(pk=agent.tenant.pk)
    assert tenant.disk_percent == 77.0
    assert tenant.last_heartbeat_at is not None
    assert HeartbeatSample.objects.filter(tenant=tenant).count() == 1
    assert refused.status_code == 401


@pytest.mark.django_db
def test_a_heartbeat_gets_through_a_broken_connection_and_a_redis_that_forgot_its_script(api, agent):
    # given this thread's heartbeat connection, open, then killed by Redis, and the
    # script gone from Redis (as after a restart)
    beat(api, agent.api_key)
    own = redis_store._heartbeat_channel().client
    own_id = own.client_id()
    redis_store.client().client_kill_filter(_id=str(own_id))
    redis_store.client().script_flush()

    # when the agent heartbeats again
    beat(api, agent.api_key, disk_percent=33.0)

    # then it was buffered on a new connection, the script given to Redis again
    assert own.client_id() != own_id
    assert redis_store.heartbeats_buffered() == 2
    assert heartbeat_flush().samples == 2
    assert Tenant.objects.get(pk=agent.tenant.pk).disk_percent == 33.0
