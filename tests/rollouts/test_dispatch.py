"""Dispatching a stage: one `update` command per selected tenant, handed out through the
real heartbeat API; one audit row for the stage's commands; nothing added when the same
stage is dispatched again, one after the other or at the same time."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from hub.models import AuditEvent
from rollouts.models import Rollout, RolloutStage, TenantUpdate, UpdateStatus
from rollouts.services import StageSpec, rollout_pause, rollout_resume, rollout_start, updates_sync_outcomes
from rollouts.services.dispatch import stage_send
from tenants import redis_store
from tenants.models import Command, CommandType, Tenant, TenantStatus
from tests.conftest import blocked_behind
from tests.rollouts.conftest import COMPONENT, NEW, NEW_IMAGE, Fleet

pytestmark = pytest.mark.django_db


def commands_by_tenant(rollout: Rollout) -> dict[int, list[Command]]:
    by_tenant: dict[int, list[Command]] = {}
    for command in Command.objects.filter(created_by=f"rollout:{rollout.pk}").order_by("tenant_id"):
        by_tenant.setdefault(command.tenant_id, []).append(command)
    return by_tenant


def test_a_stage_delivers_exactly_one_update_command_to_each_selected_tenant(
    make_fleet: Any, make_rollout: Any, on_commit: Any
) -> None:
    # given 12 heartbeating tenants, of which three are not eligible: one already on the
    # new version, one whose heartbeat went stale, one suspended
    fleet: Fleet = make_fleet(12)
    agents = fleet.agents
    on_new, stale, suspended = agents[0], agents[1], agents[2]
    on_new.versions = {**on_new.versions, COMPONENT: NEW}
    fleet.round()
    stale.silent = suspended.silent = True
    Tenant.objects.filter(pk=stale.tenant_id).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    Tenant.objects.filter(pk=suspended.tenant_id).update(status=TenantStatus.SUSPENDED)
    selected = {agent.tenant_id for agent in agents[3:]}
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])

    # when the one-stage rollout starts and every agent heartbeats twice
    on_commit(rollout_start, rollout_id=rollout.pk, actor="staff:ops")
    flagged = {int(tenant_id) for tenant_id in redis_store.client().smembers(redis_store.COMMANDS_DUE_KEY)}
    fleet.round()
    fleet.round()

    # then every selected tenant was flagged, and its agent ran exactly one update, the
    # release pinned by digest; the others got nothing
    assert flagged >= selected
    ran = {agent.tenant_id: agent.executed for agent in agents if agent.executed}
    assert set(ran) == selected
    assert all(executed == [{"component": COMPONENT, "version": NEW, "image": NEW_IMAGE}] for executed in ran.values())
    # each command was created by the rollout, its tenant's update points at it and
    # learns the agent's answer from it
    by_tenant = commands_by_tenant(rollout)
    assert set(by_tenant) == selected and all(len(commands) == 1 for commands in by_tenant.values())
    updates_sync_outcomes()
    updates = TenantUpdate.objects.filter(rollout=rollout)
    assert {(u.tenant_id, u.command_id) for u in updates} == {(t, c[0].pk) for t, c in by_tenant.items()}
    assert all(u.status == UpdateStatus.SUCCEEDED and u.from_version == "1.0.0" for u in updates)
    assert rollout.stages.get().dispatched == len(selected)
    # one audit row says who queued how many commands for which rollout and stage
    audit = AuditEvent.objects.get(action="command.queue_bulk", object_type="rollout", object_id=str(rollout.pk))
    assert audit.actor == f"rollout:{rollout.pk}"
    assert audit.new == {
        "stage": 0,
        "type": CommandType.UPDATE,
        "payload": {"component": COMPONENT, "version": NEW, "image": NEW_IMAGE},
        "commands": len(selected),
    }


def test_dispatching_the_same_stage_twice_adds_nothing(make_fleet: Any, make_rollout: Any, on_commit: Any) -> None:
    # given a started one-stage rollout over 8 tenants
    make_fleet(8)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    stage = RolloutStage.objects.get(rollout=rollout)
    before = commands_by_tenant(rollout)

    # when the stage's updates are sent again
    rollout = Rollout.objects.select_related("release").get(pk=rollout.pk)
    again = stage_send(rollout=rollout, stage=stage, now=timezone.now())

    # then no update, command or audit row was added
    assert again == 0
    assert commands_by_tenant(rollout) == before and len(before) == 8
    assert TenantUpdate.objects.filter(rollout=rollout).count() == 8
    assert AuditEvent.objects.filter(action="command.queue_bulk", object_id=str(rollout.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_dispatches_of_a_stage_at_once_send_one_command_per_tenant(make_fleet: Any, make_rollout: Any) -> None:
    # given a one-stage rollout over 8 tenants, RUNNING, its stage not yet sent
    make_fleet(8)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    Rollout.objects.filter(pk=rollout.pk).update(status="RUNNING", current_position=0, started_at=timezone.now())

    def dispatch() -> int:
        with transaction.atomic():
            loaded = Rollout.objects.select_related("release").get(pk=rollout.pk)
            return stage_send(rollout=loaded, stage=RolloutStage.objects.get(rollout=loaded), now=timezone.now())

    # when a second dispatch runs while the first one's transaction is still open
    first, second = blocked_behind(dispatch, dispatch, what="a blocked dispatch")

    # then the second one waited for the first, and added nothing
    assert (first, second) == (8, 0)
    by_tenant = commands_by_tenant(rollout)
    assert len(by_tenant) == 8 and all(len(commands) == 1 for commands in by_tenant.values())
    assert TenantUpdate.objects.filter(rollout=rollout).count() == 8


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_an_update_whose_stage_is_of_another_rollout_or_missing(
    make_fleet: Any, make_rollout: Any
) -> None:
    # given two rollouts, each with its stages, and a tenant
    fleet: Fleet = make_fleet(1)
    first = make_rollout(stages=[StageSpec(percent=100, soak_seconds=0)])
    second = make_rollout(stages=[StageSpec(percent=100, soak_seconds=0)])
    other_stage = RolloutStage.objects.get(rollout=second)
    tenant_id = fleet.agents[0].tenant_id

    def write(**fields: Any) -> None:
        with transaction.atomic():
            TenantUpdate.objects.create(tenant_id=tenant_id, to_version=NEW, **fields)

    # when an update of the first rollout names the second's stage, or a stage that is not
    # there, then its insert fails (the rule checks (stage, rollout) together, per statement)
    with pytest.raises(IntegrityError, match="tenant_update_stage_of_its_rollout"):
        write(rollout=first, stage=other_stage)
    with pytest.raises(IntegrityError, match="tenant_update_stage_of_its_rollout"):
        write(rollout_id=first.pk, stage_id=other_stage.pk + 1000)
    assert not TenantUpdate.objects.exists()

    # and an update of the stage's own rollout is written
    write(rollout=first, stage=RolloutStage.objects.get(rollout=first))
    assert TenantUpdate.objects.filter(rollout=first).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_to_move_an_update_or_to_remove_or_rekey_a_stage_it_names(
    make_fleet: Any, make_rollout: Any
) -> None:
    # given an update written in the first rollout's stage, and a second rollout
    fleet: Fleet = make_fleet(1)
    first = make_rollout(stages=[StageSpec(percent=100, soak_seconds=0)])
    second = make_rollout(stages=[StageSpec(percent=100, soak_seconds=0)])
    stage, other_stage = RolloutStage.objects.get(rollout=first), RolloutStage.objects.get(rollout=second)
    update = TenantUpdate.objects.create(
        rollout=first, stage=stage, tenant_id=fleet.agents[0].tenant_id, to_version=NEW
    )

    def refused(sql: str, params: list[Any]) -> None:
        with (
            pytest.raises(IntegrityError, match="tenant_update_stage_of_its_rollout"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, params)

    # when the update is moved to the other rollout's stage, or the stage it names is
    # deleted or given another rollout, behind the ORM's back: then each is refused
    refused(
        "UPDATE rollouts_tenantupdate SET stage_id = %s, rollout_id = %s WHERE id = %s",
        [other_stage.pk, second.pk, update.pk],
    )
    refused("DELETE FROM rollouts_rolloutstage WHERE id = %s", [stage.pk])
    refused("UPDATE rollouts_rolloutstage SET rollout_id = %s WHERE id = %s", [second.pk, stage.pk])
    update.refresh_from_db()
    assert (update.rollout_id, update.stage_id) == (first.pk, stage.pk)
    # and its other fields still change, through the ORM's save too
    update.status = UpdateStatus.SKIPPED
    update.save()
    # and the other rollout's stage, named by no update, can go; the first rollout
    # goes through the ORM with its stages and updates
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM rollouts_rolloutstage WHERE id = %s", [other_stage.pk])
    Rollout.objects.filter(pk=first.pk).delete()
    assert not TenantUpdate.objects.exists() and not RolloutStage.objects.filter(rollout=first).exists()


@pytest.mark.django_db(transaction=True)
def test_a_stage_delete_waits_for_the_open_dispatch_that_names_it_then_is_refused(
    make_fleet: Any, make_rollout: Any
) -> None:
    # given a transaction that wrote an update naming a stage and has not committed
    fleet: Fleet = make_fleet(1)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=0)])
    stage = RolloutStage.objects.get(rollout=rollout)

    def dispatch() -> TenantUpdate:
        return TenantUpdate.objects.create(
            rollout=rollout, stage=stage, tenant_id=fleet.agents[0].tenant_id, to_version=NEW
        )

    def delete_stage() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM rollouts_rolloutstage WHERE id = %s", [stage.pk])

    # when another transaction deletes the stage meanwhile, then it waits on the
    # insert's key-share lock on the stage, and once the update is committed, the
    # delete is refused: both rows stay
    written, deleted = blocked_behind(dispatch, delete_stage, what="a blocked delete")
    assert isinstance(written, TenantUpdate)
    assert isinstance(deleted, IntegrityError) and "tenant_update_stage_of_its_rollout" in str(deleted)
    assert RolloutStage.objects.filter(pk=stage.pk).exists() and TenantUpdate.objects.filter(stage=stage).exists()


def test_a_tenant_deleted_through_the_orm_takes_its_updates_with_it(
    make_fleet: Any, make_rollout: Any, on_commit: Any
) -> None:
    # given a stage dispatched to two tenants (the update's tenant has no key in
    # Postgres, so nothing there would remove or refuse an orphan)
    fleet: Fleet = make_fleet(2)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    gone, kept = (agent.tenant_id for agent in fleet.agents)

    # when one tenant is deleted through the ORM
    Tenant.objects.filter(pk=gone).delete()

    # then Django's cascade took its update; the other tenant's stays
    assert list(TenantUpdate.objects.filter(rollout=rollout).values_list("tenant_id", flat=True)) == [kept]


def uuid_millis(value: uuid.UUID) -> int:
    return value.int >> 80


def test_command_ids_are_uuid7_in_creation_order_whether_python_or_postgres_made_them(
    make_fleet: Any, make_rollout: Any, on_commit: Any
) -> None:
    # given a fleet, and a command queued by Python before the rollout
    fleet: Fleet = make_fleet(6)
    first = Command.objects.create(
        tenant_id=fleet.agents[0].tenant_id,
        type=CommandType.RESTART,
        payload={},
        expires_at=timezone.now() + timedelta(hours=1),
    )
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    time.sleep(0.002)  # ids sort by millisecond: a later one is made at least one later

    # when the rollout's stage writes its commands in Postgres
    before_ms = int(time.time() * 1000)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    after_ms = int(time.time() * 1000)
    time.sleep(0.002)
    last = Command.objects.create(
        tenant_id=fleet.agents[0].tenant_id,
        type=CommandType.RESTART,
        payload={},
        expires_at=timezone.now() + timedelta(hours=1),
    )

    # then every id is an RFC 9562 version 7 id carrying the millisecond it was made,
    # so ids sort in the order the commands were made, whoever made them
    dispatched = [c.pk for commands in commands_by_tenant(rollout).values() for c in commands]
    assert len(dispatched) == 6
    for value in [first.pk, *dispatched, last.pk]:
        assert (value.version, value.variant) == (7, uuid.RFC_4122), value
    assert all(before_ms - 1 <= uuid_millis(value) <= after_ms + 1 for value in dispatched)
    assert first.pk < min(dispatched) and max(dispatched) < last.pk


def test_a_pause_and_a_resume_audit_every_command_and_update_they_move(
    make_fleet: Any, make_rollout: Any, on_commit: Any
) -> None:
    # given a started one-stage rollout over 6 tenants, one of whose agents has already
    # run its update
    fleet: Fleet = make_fleet(6)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)], update_timeout_seconds=900)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    ran, *waiting = fleet.agents
    for agent in waiting:
        agent.silent = True
    fleet.round()
    first_commands = {c.tenant_id: c.pk for cs in commands_by_tenant(rollout).values() for c in cs}

    # when staff pause it
    on_commit(rollout_pause, rollout_id=rollout.pk, actor="staff:ops", reason="bad canary")

    # then the five undelivered commands are withdrawn and their updates taken back,
    # one audit row each; the delivered one is left alone
    withdrawn = AuditEvent.objects.filter(action="command.withdraw", actor="staff:ops")
    assert {a.object_id for a in withdrawn} == {str(first_commands[a.tenant_id]) for a in waiting}
    assert all(
        (a.old, a.new, a.reason) == ({"status": "PENDING"}, {"status": "EXPIRED"}, "bad canary") for a in withdrawn
    )
    moved = AuditEvent.objects.filter(action="rollout.update.status", actor="staff:ops")
    updates = {u.tenant_id: u for u in TenantUpdate.objects.filter(rollout=rollout)}
    assert {a.object_id for a in moved} == {str(updates[a.tenant_id].pk) for a in waiting}
    assert all((a.old, a.new) == ({"status": "SENT"}, {"status": "PENDING"}) for a in moved)
    assert updates[ran.tenant_id].status == UpdateStatus.SENT and updates[ran.tenant_id].command_id is not None
    assert all(updates[a.tenant_id].sent_at is None and updates[a.tenant_id].error == "" for a in waiting)

    # when one of them is deprovisioned, and the rollout resumed
    gone, *live = waiting
    Tenant.objects.filter(pk=gone.tenant_id).update(status=TenantStatus.DEPROVISIONED)
    on_commit(rollout_resume, rollout_id=rollout.pk, actor="staff:lead")
    after_resume = timezone.now()

    # then the four live tenants' updates are sent again with new commands, the
    # deprovisioned one's is skipped, each with an audit row, and one row for the commands
    updates = {u.tenant_id: u for u in TenantUpdate.objects.filter(rollout=rollout)}
    resent = [updates[a.tenant_id] for a in live]
    assert all(u.status == UpdateStatus.SENT and u.attempts == 2 and u.sent_at is not None for u in resent)
    skipped = updates[gone.tenant_id]
    assert (skipped.status, skipped.error, skipped.finished_at is not None) == (
        UpdateStatus.SKIPPED,
        "tenant no longer takes commands",
        True,
    )
    audit = {a.object_id: a for a in AuditEvent.objects.filter(action="rollout.update.status", actor="staff:lead")}
    assert {k: (a.old, a.new, a.reason) for k, a in audit.items()} == {
        **{str(u.pk): ({"status": "PENDING"}, {"status": "SENT"}, "sent again") for u in resent},
        str(skipped.pk): ({"status": "PENDING"}, {"status": "SKIPPED"}, "tenant no longer takes commands"),
    }
    new_commands = Command.objects.filter(pk__in=[u.command_id for u in resent], status="PENDING")
    assert {c.tenant_id for c in new_commands} == {a.tenant_id for a in live}
    assert not {u.command_id for u in resent} & set(first_commands.values())
    assert all(timedelta(seconds=890) < c.expires_at - after_resume <= timedelta(seconds=900) for c in new_commands)
    assert not Command.objects.filter(tenant_id=gone.tenant_id, status="PENDING").exists()
    queued = AuditEvent.objects.filter(action="command.queue_bulk", object_id=str(rollout.pk)).latest("id")
    assert queued.new is not None and (queued.new["sent_again"], queued.new["commands"]) == (4, 4)

    # and the four agents run them once each
    for agent in live:
        agent.silent = False
    fleet.round()
    assert [len(a.executed) for a in live] == [1, 1, 1, 1] and len(ran.executed) == 1
