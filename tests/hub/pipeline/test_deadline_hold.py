"""A step that waits on the outside world (StepDeferred with hold_deadline) keeps its
wait off the job's deadline: the reaper rolls back a job that overruns its own work,
never one whose step waits for a customer. Run step by step in the test's process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import redis

from hub.pipeline.engine import execute_step
from hub.pipeline.models import Job, JobStatus, Step, StepStatus
from hub.pipeline.reaper import pipeline_reap
from hub.pipeline.services import job_start
from hub.pipeline.transitions import step_wake
from tests.pipelines import IN_PROCESS_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WAIT = 3600.0  # longer than a broker countdown: only the row remembers it


@pytest.fixture
def in_process_queue(broker: redis.Redis) -> Iterator[None]:
    yield
    broker.delete(IN_PROCESS_QUEUE)


def started_waiting(*, hold: bool) -> tuple[Job, Step, datetime]:
    job = job_start(pipeline="test.waits_outside_in_process", context={"delay": WAIT, "hold": hold})
    deadline = job.deadline_at
    assert deadline is not None
    step = job.steps.get(name="wait")
    execute_step(step.pk)
    job.refresh_from_db()
    step.refresh_from_db()
    assert step.status == StepStatus.RETRY_WAIT and step.attempts == 0
    return job, step, deadline


def test_a_held_wait_moves_the_deadline_by_the_wait(in_process_queue: None) -> None:
    job, step, deadline = started_waiting(hold=True)

    assert job.deadline_at == deadline + timedelta(seconds=WAIT)
    assert step.history[-1]["outcome"] == "deferred" and step.history[-1]["held_deadline"] is True


def test_a_plain_wait_leaves_the_deadline_alone(in_process_queue: None) -> None:
    job, step, deadline = started_waiting(hold=False)

    assert job.deadline_at == deadline
    assert "held_deadline" not in step.history[-1]


def test_the_reaper_rolls_back_a_job_past_its_deadline_but_not_one_waiting_on_the_outside_world(
    in_process_queue: None,
) -> None:
    # given two jobs whose 1 ms deadline has passed, each with its step waiting
    held, _, _ = started_waiting(hold=True)
    plain, _, _ = started_waiting(hold=False)

    # when the reaper looks
    report = pipeline_reap()

    # then only the job whose wait was not held is stopped for its deadline
    held.refresh_from_db()
    plain.refresh_from_db()
    assert plain.pk in report.past_deadline and plain.stop_reason == "deadline"
    assert "deadline of 0s" in plain.error
    assert held.pk not in report.past_deadline
    assert held.status == JobStatus.RUNNING and held.stop_requested_at is None


def test_a_wait_that_overran_its_announced_delay_is_added_at_the_next_wait(in_process_queue: None) -> None:
    job, step, _ = started_waiting(hold=True)
    # given the step was woken an hour late (the reaper was down): it deferred its
    # announced wait plus that hour ago
    overrun = timedelta(seconds=WAIT)
    history = step.history
    deferred_at = datetime.fromisoformat(history[-1]["finished_at"]) - timedelta(seconds=WAIT) - overrun
    history[-1]["finished_at"] = deferred_at.isoformat()
    Step.objects.filter(pk=step.pk).update(history=history)
    before = job.deadline_at
    assert before is not None

    # when the step runs again and waits once more
    assert step_wake(job_id=job.pk, step_name="wait")
    execute_step(step.pk)

    # then the deadline moved by the new wait and by the hour the last one overran
    job.refresh_from_db()
    assert job.deadline_at is not None
    moved = (job.deadline_at - before).total_seconds()
    assert WAIT + overrun.total_seconds() <= moved < WAIT + overrun.total_seconds() + 60
