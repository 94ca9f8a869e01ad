"""A stage larger than ROLLOUT_COMMANDS_PER_TRANSACTION: its updates are written with the
dispatch, their commands queued in parts, the first with the dispatch and the rest
after it commits, each command once, however the parts meet a pause, an abort, a
second sender or a lost task."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone

from hub.models import AuditEvent
from rollouts.models import Rollout, RolloutStage, RolloutStatus, TenantUpdate, UpdateStatus
from rollouts.services import (
    StageSpec,
    rollout_abort,
    rollout_pause,
    rollout_resume,
    rollout_start,
    rollouts_evaluate,
    stage_send_rest,
)
from rollouts.services.dispatch import SEND_UPDATES_TASK
from tenants.models import Command, CommandStatus
from tests.conftest import blocked_behind, queues_taken_from_session_worker, wait_for
from tests.rollouts.conftest import Fleet

pytestmark = pytest.mark.django_db

PART = 3


@pytest.fixture(autouse=True)
def parts_of_three(settings: Any) -> None:
    settings.ROLLOUT_COMMANDS_PER_TRANSACTION = PART


@pytest.fixture
def rollouts_queue(broker: redis.Redis) -> Iterator[Callable[[], list[tuple[str, list[Any]]]]]:
    """The tasks sent to the broker's `rollouts` queue, (name, args) in order, with no
    worker taking them meanwhile."""

    def sent() -> list[tuple[str, list[Any]]]:
        tasks = []
        for raw in reversed(broker.lrange("rollouts", 0, -1)):  # kombu pushes on the left
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            tasks.append((message["headers"]["task"], args))
        return tasks

    with queues_taken_from_session_worker(["rollouts"], purge=True):
        broker.delete("rollouts")
        yield sent


def commands_of(rollout: Rollout) -> list[Command]:
    return list(Command.objects.filter(created_by=f"rollout:{rollout.pk}").order_by("tenant_id"))


def one_stage_started(make_fleet: Any, make_rollout: Any, on_commit: Any, tenants: int = 8) -> tuple[Fleet, Rollout]:
    fleet = make_fleet(tenants)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")
    return fleet, Rollout.objects.get(pk=rollout.pk)


def test_the_start_writes_every_update_and_queues_the_first_part_of_the_commands(
    make_fleet: Any, make_rollout: Any, on_commit: Any, rollouts_queue: Any, staff_api: Any
) -> None:
    # given 8 tenants and commands queued 3 to a transaction
    make_fleet(8)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])

    # when the one-stage rollout starts
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")

    # then all 8 updates are SENT, each naming its command, but only the oldest 3
    # commands exist; the stage counts 8 dispatched and 5 to queue, and the task that
    # queues them is sent after the commit
    updates = list(TenantUpdate.objects.filter(rollout=rollout).order_by("id"))
    assert len(updates) == 8 and all(u.status == UpdateStatus.SENT and u.command_id for u in updates)
    assert {c.pk for c in commands_of(rollout)} == {u.command_id for u in updates[:PART]}
    stage = RolloutStage.objects.get(rollout=rollout)
    assert (stage.dispatched, stage.updates_unsent) == (8, 5)
    assert rollouts_queue() == [(SEND_UPDATES_TASK, [rollout.pk])]
    # and the API shows how many wait
    (shown,) = staff_api.get(f"/api/v1/rollouts/{rollout.pk}/").json()["stages"]
    assert (shown["dispatched"], shown["updates_unsent"]) == (8, 5)


def test_the_rest_is_queued_in_parts_each_command_once_and_expiring_with_its_update(
    make_fleet: Any, make_rollout: Any, on_commit: Any
) -> None:
    # given a started stage of 8 whose first 3 commands were queued with the start, an
    # hour-long update timeout, and the rest queued ten minutes later
    fleet, rollout = one_stage_started(make_fleet, make_rollout, on_commit)
    stage = RolloutStage.objects.get(rollout=rollout)
    started = timezone.now() - timedelta(minutes=10)
    RolloutStage.objects.filter(pk=stage.pk).update(started_at=started)

    # when the rest is queued (as the task does), and again
    assert on_commit(stage_send_rest, rollout_id=rollout.pk) == 5
    assert on_commit(stage_send_rest, rollout_id=rollout.pk) == 0

    # then each tenant has exactly one command, the one its update names; the later
    # parts expire when their update times out, not an hour after they were queued
    commands = commands_of(rollout)
    updates = TenantUpdate.objects.filter(rollout=rollout)
    assert sorted(c.tenant_id for c in commands) == sorted(a.tenant_id for a in fleet.agents)
    assert {c.pk for c in commands} == {u.command_id for u in updates}
    later_parts = {u.command_id for u in updates.order_by("id")[PART:]}
    late = [c for c in commands if c.pk in later_parts]
    assert len(late) == 5
    deadline = started + timedelta(seconds=rollout.update_timeout_seconds)
    assert all(abs((c.expires_at - deadline).total_seconds()) <= 2 for c in late)
    assert RolloutStage.objects.get(pk=stage.pk).updates_unsent == 0
    # one audit row a part: 3 with the start, then 3 and 2
    audits = AuditEvent.objects.filter(action="command.queue_bulk", object_id=str(rollout.pk)).order_by("id")
    assert [(a.new or {}).get("commands") for a in audits] == [3, 3, 2]
    # and every agent, heartbeating, runs its update once
    fleet.round()
    fleet.round()
    assert all(len(agent.executed) == 1 for agent in fleet.agents)


def test_a_pause_between_parts_takes_back_the_unqueued_updates_and_resume_sends_them(
    make_fleet: Any, make_rollout: Any, on_commit: Any
) -> None:
    # given a started stage of 8 with 3 commands queued and 5 waiting
    fleet, rollout = one_stage_started(make_fleet, make_rollout, on_commit)

    # when it is paused before the rest is queued, and the task runs after the pause
    on_commit(rollout_pause, rollout_id=rollout.pk, actor="staff:ops")
    queued_after_pause = on_commit(stage_send_rest, rollout_id=rollout.pk)

    # then the 3 queued commands were withdrawn, all 8 updates are PENDING without a
    # command to hand out, and the paused rollout queued nothing
    assert queued_after_pause == 0
    assert all(c.status == CommandStatus.EXPIRED for c in commands_of(rollout)) and len(commands_of(rollout)) == 3
    updates = list(TenantUpdate.objects.filter(rollout=rollout))
    assert all(u.status == UpdateStatus.PENDING and u.sent_at is None for u in updates)
    assert sum(u.command_id is None for u in updates) == 5
    assert RolloutStage.objects.get(rollout=rollout).updates_unsent == 0
    fleet.round()
    assert not any(agent.executed for agent in fleet.agents)

    # and on resume every tenant gets one live command
    on_commit(rollout_resume, rollout_id=rollout.pk, actor="staff:ops")
    fleet.round()
    assert all(len(agent.executed) == 1 for agent in fleet.agents)
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SENT).count() == 8


def test_an_abort_between_parts_skips_the_unqueued_updates(make_fleet: Any, make_rollout: Any, on_commit: Any) -> None:
    # given a started stage of 8 with 3 commands queued and 5 waiting
    _, rollout = one_stage_started(make_fleet, make_rollout, on_commit)

    # when it is aborted
    on_commit(rollout_abort, rollout_id=rollout.pk, actor="staff:ops")

    # then every update ends SKIPPED and nothing is left to queue
    assert set(TenantUpdate.objects.filter(rollout=rollout).values_list("status", flat=True)) == {UpdateStatus.SKIPPED}
    assert on_commit(stage_send_rest, rollout_id=rollout.pk) == 0
    assert len(commands_of(rollout)) == 3


@pytest.mark.django_db(transaction=True)
def test_the_rest_waits_for_a_pause_in_progress_and_then_queues_nothing(
    make_fleet: Any, make_rollout: Any, rollouts_queue: Any
) -> None:
    # given a started stage of 8 with 5 commands still to queue (its task is left in
    # the queue: no worker runs it behind the test's back)
    make_fleet(8)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    rollout_start(rollout_id=rollout.pk, actor="test")

    def pause() -> None:
        rollout_pause(rollout_id=rollout.pk, actor="staff:ops")

    def send_rest() -> int:
        return stage_send_rest(rollout_id=rollout.pk)

    # when the task starts while a pause holds the rollout, before the pause commits
    paused, queued = blocked_behind(pause, send_rest, what="a blocked sender")

    # then the sender waited for the pause, saw the rollout PAUSED and queued nothing:
    # no command reaches an agent after the pause took the updates back
    assert paused is None and queued == 0
    assert Rollout.objects.get(pk=rollout.pk).status == RolloutStatus.PAUSED
    assert not Command.objects.filter(created_by=f"rollout:{rollout.pk}", status=CommandStatus.PENDING).exists()
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.PENDING).count() == 8


def test_the_evaluation_sends_the_task_again_while_commands_wait(
    make_fleet: Any, make_rollout: Any, on_commit: Any, rollouts_queue: Any
) -> None:
    # given a started stage whose task was lost: 5 commands still to queue
    _, rollout = one_stage_started(make_fleet, make_rollout, on_commit)
    lost = rollouts_queue()
    assert lost == [(SEND_UPDATES_TASK, [rollout.pk])]

    # when the beat job judges the rollout
    on_commit(rollouts_evaluate)

    # then it sent the task again
    assert rollouts_queue() == [*lost, (SEND_UPDATES_TASK, [rollout.pk])]

    # and once the rest is queued, it no longer does
    on_commit(stage_send_rest, rollout_id=rollout.pk)
    on_commit(rollouts_evaluate)
    assert len(rollouts_queue()) == 2


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_queues_the_rest_after_the_start_commits(
    make_fleet: Any, make_rollout: Any, start_worker: Any
) -> None:
    # given a worker on the rollouts queue that queues commands 3 to a transaction
    fleet = make_fleet(8)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])
    with queues_taken_from_session_worker(["rollouts"], purge=True):
        start_worker(name="parts", queues="rollouts", env={"ROLLOUT_COMMANDS_PER_TRANSACTION": str(PART)})

        # when the rollout starts
        rollout_start(rollout_id=rollout.pk, actor="test")

        # then the worker queues the other 5 commands, one to each tenant left
        wait_for(lambda: len(commands_of(rollout)) == 8, timeout=30, message="every command queued")
        wait_for(
            lambda: RolloutStage.objects.get(rollout=rollout).updates_unsent == 0,
            timeout=30,
            message="the stage to have none left to queue",
        )
    assert sorted(c.tenant_id for c in commands_of(rollout)) == sorted(a.tenant_id for a in fleet.agents)
    fleet.round()
    assert all(len(agent.executed) == 1 for agent in fleet.agents)


def test_a_stage_within_one_part_goes_out_with_its_start(make_fleet: Any, make_rollout: Any, on_commit: Any) -> None:
    # given 3 tenants, as many as one part
    make_fleet(PART)
    rollout = make_rollout(stages=[StageSpec(percent=100, soak_seconds=3600)])

    # when the rollout starts
    on_commit(rollout_start, rollout_id=rollout.pk, actor="test")

    # then every command was queued with it, and nothing is left for later
    assert len(commands_of(rollout)) == PART
    assert RolloutStage.objects.get(rollout=rollout).updates_unsent == 0
    assert on_commit(stage_send_rest, rollout_id=rollout.pk) == 0
