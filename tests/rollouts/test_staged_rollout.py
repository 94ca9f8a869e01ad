"""Rollouts over a simulated fleet whose agents answer through the real agent API:
the stages, their sizes and order, the auto-stop thresholds, rollback, pause/resume."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from hub.models import Alert, AlertStatus, AuditEvent
from rollouts.models import (
    GateOutcome,
    OnHalt,
    Rollout,
    RolloutStage,
    RolloutStatus,
    StageStatus,
    TenantUpdate,
    UpdateStatus,
)
from rollouts.services import (
    StageSpec,
    rollout_evaluate,
    rollout_pause,
    rollout_resume,
    rollout_retry,
    rollout_rollback,
    rollout_start,
    updates_sync_outcomes,
)
from tenants.models import Command, CommandStatus, Tenant
from tests.rollouts.conftest import COMPONENT, NEW, OLD, OLD_IMAGE, stages

pytestmark = pytest.mark.django_db


def newest_first(tenant_ids: list[int]) -> list[int]:
    return list(Tenant.objects.filter(pk__in=tenant_ids).order_by("-created_at", "-id").values_list("pk", flat=True))


def stage_tenants(rollout: Rollout) -> dict[int, set[int]]:
    members: dict[int, set[int]] = {}
    for position, tenant_id in TenantUpdate.objects.filter(rollout=rollout).values_list("stage__position", "tenant_id"):
        members.setdefault(position, set()).add(tenant_id)
    return members


def new_status(event: AuditEvent) -> str:
    assert event.new is not None, "a status move's audit row has the new status"
    return event.new["status"]


def test_a_rollout_walks_all_four_stages_newest_first_and_completes(
    make_fleet, make_rollout, staff_api, on_commit, evaluate
):
    # given 200 tenants (4 internal) on the old version, known to the Hub by heartbeat
    fleet = make_fleet(200, internal=4)
    ids = [a.tenant_id for a in fleet.agents]
    internal, rest = set(ids[:4]), newest_first(ids[4:])
    rollout = make_rollout()

    # the dry-run plan shows every stage before anything is sent
    plan = staff_api.get(f"/api/v1/rollouts/{rollout.pk}/plan/").json()
    assert [s["size"] for s in plan["stages"]] == [4, 10, 39, 147]
    assert set(plan["stages"][0]["tenant_ids"]) == internal
    assert plan["stages"][1]["tenant_ids"] == rest[:10]
    assert not Command.objects.exists()

    # when it starts and the agents and the beat job do their work
    response = on_commit(lambda: staff_api.post(f"/api/v1/rollouts/{rollout.pk}/start/", {}, format="json"))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "RUNNING"
    seen_positions = []
    for _ in range(8):
        fleet.round()
        evaluate()
        rollout.refresh_from_db()
        seen_positions.append(rollout.current_position)
        if rollout.status == RolloutStatus.COMPLETED:
            break

    # then every stage had the right tenants, in order, and the rollout completed
    assert rollout.status == RolloutStatus.COMPLETED, rollout.status_reason
    members = stage_tenants(rollout)
    assert members[0] == internal
    assert members[1] == set(rest[:10])
    assert members[2] == set(rest[10:49])
    assert members[3] == set(rest[49:])
    assert [s.status for s in rollout.stages.order_by("position")] == [StageStatus.PASSED] * 4
    assert [s.dispatched for s in rollout.stages.order_by("position")] == [4, 10, 39, 147]
    assert seen_positions[:3] == [1, 2, 3]
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SUCCEEDED).count() == 200
    assert all(v[COMPONENT] == NEW for v in Tenant.objects.filter(pk__in=ids).values_list("versions", flat=True))
    # each agent ran exactly one update, the new release pinned by digest
    assert all(len(agent.executed) == 1 for agent in fleet.agents)
    assert fleet.agents[0].executed[0] == {"component": COMPONENT, "version": NEW, "image": rollout.release.image}
    moves = AuditEvent.objects.filter(object_type="rollout", object_id=str(rollout.pk), action="rollout.status")
    assert [new_status(m) for m in moves.order_by("id")] == ["RUNNING", "COMPLETED"]


def test_failures_above_the_threshold_in_the_canary_halt_and_roll_back_exactly_the_updated(
    make_fleet, make_rollout, on_commit, evaluate
):
    # given three canary agents whose health check fails on the new version
    fleet = make_fleet(200, internal=4)
    ids = [a.tenant_id for a in fleet.agents]
    canaries = newest_first(ids[4:])[:10]
    agents = fleet.by_tenant()
    for tenant_id in canaries[:3]:
        agents[tenant_id].fail_updates_to.add(NEW)
    rollout = make_rollout()
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")

    # when the internal stage and the canary stage are answered and judged
    fleet.round()
    evaluate()
    fleet.round()
    evaluate()

    # then the rollout halted in the 5% stage before the 25% stage started ...
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLING_BACK
    stage_25 = rollout.stages.get(position=2)
    assert stage_25.status == StageStatus.PENDING and stage_25.started_at is None
    assert not TenantUpdate.objects.filter(stage=stage_25).exists()
    canary_stage = rollout.stages.get(position=1)
    assert canary_stage.status == StageStatus.HALTED and canary_stage.gate == GateOutcome.FAIL
    assert "3 of 14 finished updates failed" in canary_stage.gate_reason
    statuses = [
        new_status(e)
        for e in AuditEvent.objects.filter(object_id=str(rollout.pk), action="rollout.status").order_by("id")
    ]
    assert statuses == ["RUNNING", "HALTED", "ROLLING_BACK"]
    assert Alert.objects.filter(subject_id=str(rollout.pk), kind="rollout_halted", status=AlertStatus.OPEN).exists()

    # ... and rollback commands went to exactly the tenants it updated
    updated = set(ids[:4]) | set(canaries[3:])
    rollback_to = set(
        TenantUpdate.objects.filter(rollout=rollout, rollback_command__isnull=False).values_list("tenant_id", flat=True)
    )
    assert rollback_to == updated
    rollback_commands = Command.objects.filter(
        pk__in=TenantUpdate.objects.filter(rollout=rollout).values("rollback_command")
    )
    assert {c.payload["version"] for c in rollback_commands} == {OLD}
    assert {c.payload["image"] for c in rollback_commands} == {OLD_IMAGE}
    # and one audit row says who queued how many, with which payloads
    queued = AuditEvent.objects.get(action="command.queue_bulk", object_id=str(rollout.pk), new__rollback=True)
    assert queued.actor == f"rollout:{rollout.pk}"
    assert queued.new == {
        "rollback": True,
        "type": "update",
        "payloads": [{"component": COMPONENT, "version": OLD, "image": OLD_IMAGE}],
        "commands": len(updated),
    }
    assert all(c.status == "PENDING" and c.created_by == f"rollout:{rollout.pk}" for c in rollback_commands)

    # when the agents run the rollback
    fleet.round()
    evaluate()

    # then it ends ROLLED_BACK with every tenant on the previous version
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLED_BACK, rollout.status_reason
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.ROLLED_BACK).count() == len(updated)
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.FAILED).count() == 3
    versions = Tenant.objects.filter(pk__in=ids).values_list("versions", flat=True)
    assert {v[COMPONENT] for v in versions} == {OLD}
    assert all(not agents[t].executed[1:] or agents[t].executed[1]["version"] == OLD for t in ids)


def test_heartbeat_loss_among_updated_tenants_halts_and_retry_continues(make_fleet, make_rollout, on_commit, evaluate):
    # given a canary stage soaking after its updates succeeded (frozen on halt)
    fleet = make_fleet(100, internal=2)
    rollout = make_rollout(stages=stages(0, 3600, 0, 0), on_halt=OnHalt.FREEZE)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()
    evaluate()
    fleet.round()
    evaluate()
    rollout.refresh_from_db()
    canary_stage = rollout.stages.get(position=1)
    assert canary_stage.status == StageStatus.SOAKING
    canaries = list(TenantUpdate.objects.filter(stage=canary_stage).values_list("tenant_id", flat=True))
    assert len(canaries) == 5

    # when three updated tenants stop heartbeating (their last one ten minutes ago)
    Tenant.objects.filter(pk__in=canaries[:3]).update(last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    evaluate()

    # then the rollout halts, frozen: no rollback
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.HALTED
    canary_stage.refresh_from_db()
    assert canary_stage.gate == GateOutcome.FAIL
    assert "heartbeat loss among updated tenants" in canary_stage.gate_reason
    assert not TenantUpdate.objects.filter(rollout=rollout, rollback_command__isnull=False).exists()

    # when the cause is fixed (the tenants are back) and staff retry
    fleet.round()
    on_commit(rollout_retry, rollout_id=rollout.pk, actor="staff")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING
    assert not Alert.objects.filter(subject_id=str(rollout.pk), kind="rollout_halted", status=AlertStatus.OPEN).exists()
    soaking = on_commit(rollout_evaluate, rollout_id=rollout.pk)
    assert soaking.outcome == GateOutcome.INCONCLUSIVE and "soaking" in soaking.reason
    RolloutStage.objects.filter(pk=canary_stage.pk).update(updates_done_at=timezone.now() - timedelta(seconds=3601))
    result = on_commit(rollout_evaluate, rollout_id=rollout.pk)

    # then the canary stage passes once its soak time is over, and the next stage starts
    assert result.outcome == GateOutcome.PASS
    rollout.refresh_from_db()
    assert rollout.current_position == 2


def test_pause_stops_dispatch_and_resume_continues_where_it_left_off(make_fleet, make_rollout, on_commit, evaluate):
    # given a running rollout whose first stage has just been dispatched
    fleet = make_fleet(40, internal=2)
    rollout = make_rollout()
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    first = set(TenantUpdate.objects.filter(rollout=rollout).values_list("tenant_id", flat=True))
    assert len(first) == 2

    # when staff pause it before any agent picked its update up
    on_commit(rollout_pause, rollout_id=rollout.pk, actor="staff")
    ran = fleet.round()
    evaluate()

    # then nothing was handed out and nothing advanced
    assert ran == 0
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PAUSED and rollout.current_position == 0
    assert (
        set(
            TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.PENDING).values_list(
                "tenant_id", flat=True
            )
        )
        == first
    )
    assert Command.objects.filter(status=CommandStatus.EXPIRED, result__status="withdrawn").count() == 2

    # when resumed, the same updates go out again and the rollout runs to the end
    on_commit(rollout_resume, rollout_id=rollout.pk, actor="staff")
    for _ in range(8):
        fleet.round()
        evaluate()
        rollout.refresh_from_db()
        if rollout.status == RolloutStatus.COMPLETED:
            break
    assert rollout.status == RolloutStatus.COMPLETED, rollout.status_reason
    first_stage = TenantUpdate.objects.filter(rollout=rollout, stage__position=0)
    assert set(first_stage.values_list("tenant_id", flat=True)) == first
    assert {u.attempts for u in first_stage} == {2}
    assert all(len(agent.executed) == 1 for agent in fleet.agents)
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SUCCEEDED).count() == 40


def test_too_few_finished_updates_is_inconclusive_and_does_not_advance(make_fleet, make_rollout, on_commit, evaluate):
    # given a canary stage of 6 where only 2 agents answer before the update timeout
    fleet = make_fleet(60)
    rollout = make_rollout(stages=stages(0, 0, 0, percents=(10, 100)), min_finished=5, update_timeout_seconds=1)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    canaries = list(TenantUpdate.objects.filter(rollout=rollout).values_list("tenant_id", flat=True))
    assert len(canaries) == 6
    agents = fleet.by_tenant()
    for tenant_id in canaries[2:]:
        agents[tenant_id].silent = True
    fleet.round()
    updates_sync_outcomes()

    # when the stage is judged after the updates timed out
    later = timezone.now() + timedelta(seconds=5)
    result = on_commit(rollout_evaluate, rollout_id=rollout.pk, now=later)

    # then it is INCONCLUSIVE: the rollout keeps running, the next stage does not start
    assert result.outcome == GateOutcome.INCONCLUSIVE
    assert "too few finished updates" in result.reason
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING and rollout.current_position == 1
    assert RolloutStage.objects.get(rollout=rollout, position=2).status == StageStatus.PENDING
    assert Alert.objects.filter(
        subject_id=str(rollout.pk), kind="rollout_inconclusive", status=AlertStatus.OPEN
    ).exists()
    again = on_commit(rollout_evaluate, rollout_id=rollout.pk, now=later + timedelta(seconds=60))
    assert again.outcome == GateOutcome.INCONCLUSIVE


def test_fleet_wide_heartbeat_loss_does_not_halt(make_fleet, make_rollout, on_commit, evaluate):
    # given a soaking canary stage
    fleet = make_fleet(100, internal=2)
    rollout = make_rollout(stages=stages(0, 3600, 0, 0))
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()
    evaluate()
    fleet.round()
    evaluate()
    updated = list(
        TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SUCCEEDED).values_list("tenant_id", flat=True)
    )
    assert len(updated) == 7

    # when, an hour into the rollout, more than half of every group, updated or not,
    # loses its heartbeat (a network blip): 4 of the 7 updated, 60% of the others
    Rollout.objects.filter(pk=rollout.pk).update(started_at=timezone.now() - timedelta(hours=1))
    not_updated = [a.tenant_id for a in fleet.agents if a.tenant_id not in updated]
    lost = updated[::2] + not_updated[: math.ceil(len(not_updated) * 0.6)]
    Tenant.objects.filter(pk__in=lost).update(last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    result = on_commit(rollout_evaluate, rollout_id=rollout.pk)

    # then the release is not blamed: no halt, no pass either
    assert result.outcome == GateOutcome.INCONCLUSIVE
    assert "fleet-wide heartbeat loss" in result.reason
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING


def test_tenants_lost_before_the_rollout_started_are_not_the_control_group(
    make_fleet, make_rollout, on_commit, evaluate
):
    # given 10% of the fleet dead since long before the rollout
    fleet = make_fleet(100, internal=2)
    dead = [a.tenant_id for a in fleet.agents[-10:]]
    for agent in fleet.agents[-10:]:
        agent.silent = True
    Tenant.objects.filter(pk__in=dead).update(last_heartbeat_at=timezone.now() - timedelta(hours=2))
    rollout = make_rollout(stages=stages(0, 3600, 0, 0))
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()
    evaluate()
    fleet.round()

    # when the soaking canary stage is judged
    updates_sync_outcomes()
    result = on_commit(rollout_evaluate, rollout_id=rollout.pk)

    # then the dead tenants neither block it as a "fleet-wide loss" nor got an update
    assert result.outcome == GateOutcome.INCONCLUSIVE and "soaking" in result.reason
    assert not TenantUpdate.objects.filter(tenant_id__in=dead).exists()


def test_no_heartbeat_data_at_all_is_inconclusive(make_fleet, make_rollout, on_commit):
    # given a rollout whose canaries succeeded, then the Hub saw no heartbeat for long
    fleet = make_fleet(30)
    rollout = make_rollout(stages=stages(0, 0, 0, percents=(10, 100)))
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()
    updates_sync_outcomes()

    # when it is judged an hour later, every heartbeat stale (the Hub itself was down)
    result = on_commit(rollout_evaluate, rollout_id=rollout.pk, now=timezone.now() + timedelta(hours=1))

    # then it waits: never a pass, never a halt
    assert result.outcome == GateOutcome.INCONCLUSIVE
    assert "no heartbeat data" in result.reason
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING and rollout.current_position == 1


def test_in_the_last_stage_the_earlier_stages_are_the_control_group(make_fleet, make_rollout, on_commit, evaluate):
    # given the 100% stage soaking: no tenant is left outside the rollout
    fleet = make_fleet(40, internal=2)
    rollout = make_rollout(stages=stages(0, 0, 0, 3600), on_halt=OnHalt.FREEZE)
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    for _ in range(6):
        fleet.round()
        evaluate()
        rollout.refresh_from_db()
        if rollout.current_position == 3 and rollout.stages.get(position=3).status == StageStatus.SOAKING:
            break
    last = list(TenantUpdate.objects.filter(stage__position=3, rollout=rollout).values_list("tenant_id", flat=True))
    earlier = list(
        TenantUpdate.objects.filter(stage__position__lt=3, rollout=rollout).values_list("tenant_id", flat=True)
    )
    assert (len(last), len(earlier)) == (28, 12)
    Rollout.objects.filter(pk=rollout.pk).update(started_at=timezone.now() - timedelta(hours=1))
    ten_minutes_ago = timezone.now() - timedelta(minutes=10)

    # when half of both the last stage and the earlier stages go quiet, it is a blip
    Tenant.objects.filter(pk__in=last[::2] + earlier[::2]).update(last_heartbeat_at=ten_minutes_ago)
    blip = on_commit(rollout_evaluate, rollout_id=rollout.pk)
    assert blip.outcome == GateOutcome.INCONCLUSIVE and "tenants of earlier stages" in blip.reason

    # when only the last stage's tenants go quiet, the release is to blame
    fleet.round()
    Tenant.objects.filter(pk__in=last[:4]).update(last_heartbeat_at=ten_minutes_ago)
    loss = on_commit(rollout_evaluate, rollout_id=rollout.pk)
    assert loss.outcome == GateOutcome.FAIL and "heartbeat loss among updated tenants" in loss.reason
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.HALTED


def test_a_rollback_sends_each_tenant_its_own_previous_version_and_marks_those_it_cannot_roll_back(
    make_fleet, make_rollout, on_commit
):
    # given a one-stage rollout answered by 6 tenants, of which: one came from a version
    # the Hub has no release of, whose agent said which image it replaced; one from a
    # version the agent said nothing about; one from an unknown version; one since
    # deprovisioned
    fleet = make_fleet(6)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    fleet.round()
    updates_sync_outcomes()
    known, answered, silent, unknown, gone, other = TenantUpdate.objects.filter(rollout=rollout).order_by("tenant_id")
    kept_image = "registry.example.test/openclaw:0.9.0@sha256:" + "c" * 64
    for update, details in ((answered, {"previous_image": kept_image}), (silent, {"previous_image": 7})):
        update.from_version = "0.9.0"
        update.save(update_fields=["from_version"])
        assert update.command_id is not None
        Command.objects.filter(pk=update.command_id).update(result={"status": "succeeded", "details": details})
    TenantUpdate.objects.filter(pk=unknown.pk).update(from_version="")
    Tenant.objects.filter(pk=gone.tenant_id).update(status="DEPROVISIONED")

    # when staff roll it back
    on_commit(rollout_rollback, rollout_id=rollout.pk, actor="staff:ops")

    # then each tenant that can be rolled back gets its own payload, the image from the
    # Hub's release or else from the agent's answer, or none
    updates = {u.pk: u for u in TenantUpdate.objects.filter(rollout=rollout)}
    sent = {u.rollback_command_id: u for u in updates.values() if u.rollback_command_id is not None}
    rollback_commands = list(Command.objects.filter(pk__in=list(sent)))
    assert {sent[c.pk].pk: c.payload for c in rollback_commands} == {
        known.pk: {"component": COMPONENT, "version": OLD, "image": OLD_IMAGE},
        answered.pk: {"component": COMPONENT, "version": "0.9.0", "image": kept_image},
        silent.pk: {"component": COMPONENT, "version": "0.9.0"},
        other.pk: {"component": COMPONENT, "version": OLD, "image": OLD_IMAGE},
    }
    assert all(c.tenant_id == sent[c.pk].tenant_id for c in rollback_commands)
    # and the two it cannot roll back say why, with no command
    for pk in (unknown.pk, gone.pk):
        assert updates[pk].rollback_command_id is None and updates[pk].rollback_finished_at is not None
        assert updates[pk].rollback_error == "cannot roll back: previous version unknown or tenant no longer live"
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLING_BACK
    assert "4 rollback commands sent, 2 tenants cannot be rolled back" in rollout.status_reason
