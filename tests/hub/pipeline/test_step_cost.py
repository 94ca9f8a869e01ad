"""What a step costs the engine, run step by step in the test's own process against
the real Postgres (the pipelines' queue has no worker): the SQL statements of a no-op
step are pinned, so the per-step bookkeeping cannot silently grow back."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hub.pipeline.engine import execute_step
from hub.pipeline.models import Job, JobStatus, Step, StepStatus
from hub.pipeline.services import job_start
from tests.pipelines import IN_PROCESS_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The outcome recorded with the next step claimed, in one statement atomic on its own
# (no BEGIN and COMMIT round trips): the next step needs no claim of its own, and no
# message (claim-next-in-record). It was two statements, a claim and a record.
NOOP_STEP_STATEMENTS = 1


@pytest.fixture
def in_process_queue(broker: redis.Redis) -> Iterator[None]:
    yield
    broker.delete(IN_PROCESS_QUEUE)


def queued_step(job: Job) -> Step | None:
    return job.steps.filter(status=StepStatus.QUEUED).first()


def test_a_no_op_step_in_a_running_job_costs_one_statement(in_process_queue: None, broker: redis.Redis) -> None:
    job = job_start(pipeline="test.noop_in_process")
    first = queued_step(job)
    assert first is not None
    messages = broker.llen(IN_PROCESS_QUEUE)  # the first step's, from job_start

    with CaptureQueriesContext(connection) as queries:
        execute_step(first.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    # One delivery ran the whole job: each step's record claimed the next one, and no
    # message was published for any of them.
    assert broker.llen(IN_PROCESS_QUEUE) == messages
    # The first step is claimed (the job starts); then each step is recorded by one
    # statement that claims the next; n6, the last, tries it, finds no next step and
    # ends the job by the full path. Between the records of n1 and n6 nothing else ran:
    # that one statement is all a step between the first and the last pays.
    sql: list[str] = [q["sql"] for q in queries.captured_queries]
    records: list[int] = [i for i, text in enumerate(sql) if "next_step" in text]
    claims = [text for text in sql if "lease_expires_at = %(lease_expires_at)s" in text]
    assert len(records) == 6 and len(claims) == 1
    assert [b - a for a, b in itertools.pairwise(records)] == [NOOP_STEP_STATEMENTS] * 5
    steps = list(job.steps.order_by("position"))
    assert all(s.status == StepStatus.SUCCEEDED and s.attempts == 1 for s in steps)
    assert all(s.duration_seconds is not None and s.finished_at is not None for s in steps)
    assert all(s.lease_token is None and s.lease_expires_at is None for s in steps)
    assert [[entry["outcome"] for entry in s.history] for s in steps] == [["succeeded"]] * 6
    assert all(s.result == {f"{s.name}_done": True} for s in steps)
    assert job.context == {f"n{i}_done": True for i in range(1, 7)}


def test_past_the_run_on_budget_the_next_step_goes_through_the_broker(
    in_process_queue: None, broker: redis.Redis, settings: Any
) -> None:
    settings.PIPELINE_RUN_ON_SECONDS = 0
    job = job_start(pipeline="test.noop_in_process")
    costs: dict[str, int] = {}

    while (step := queued_step(job)) is not None:
        with CaptureQueriesContext(connection) as queries:
            execute_step(step.pk)
        costs[step.name] = len(queries)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert list(costs) == ["n1", "n2", "n3", "n4", "n5", "n6"]
    # Each delivery ran one step: its claim and its record (which queued the next).
    assert {name: costs[name] for name in ("n2", "n3", "n4", "n5")} == dict.fromkeys(("n2", "n3", "n4", "n5"), 2)
    assert broker.llen(IN_PROCESS_QUEUE) == 6  # the first step's, from job_start, and one per step after it


def run_in_process(pipeline: str) -> Job:
    job = job_start(pipeline=pipeline)
    while (step := queued_step(job)) is not None:
        execute_step(step.pk)
    job.refresh_from_db()
    return job


def prepared_statements() -> dict[str, int]:
    """This connection's prepared statements: the engine's, by which of the two they
    are, with the number of times each ran."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
        rows = cursor.fetchall()
    runs: dict[str, int] = {}
    for statement, count in rows:
        which = "claim" if "lease_expires_at = $" in statement else "record" if "next_step" in statement else "other"
        runs[which] = runs.get(which, 0) + count
    return runs


def test_the_statements_every_step_runs_are_prepared_once_per_connection(in_process_queue: None) -> None:
    # given a fresh connection
    connection.close()

    # when two six-step jobs run
    jobs = [run_in_process("test.noop_in_process") for _ in range(2)]

    # then each job's first delivery tried the claim and each of the twelve steps ran the
    # record (which claimed the next step) as prepared statements on this connection (a
    # job's first claim and last record find nothing to do and go on by the full path),
    # and nothing else of the Hub's was prepared
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 2
    assert prepared_statements() == {"claim": 2, "record": 12}


def test_prepared_statements_can_be_turned_off(in_process_queue: None, settings: Any) -> None:
    settings.PIPELINE_PREPARED_STATEMENTS = False
    connection.close()

    job = run_in_process("test.noop_in_process")

    assert job.status == JobStatus.SUCCEEDED
    assert prepared_statements() == {}


def test_a_step_delivered_again_after_it_ran_does_nothing(in_process_queue: None, settings: Any) -> None:
    settings.PIPELINE_RUN_ON_SECONDS = 0  # one step per delivery
    job = job_start(pipeline="test.noop_in_process")
    first = queued_step(job)
    assert first is not None
    execute_step(first.pk)

    execute_step(first.pk)

    first.refresh_from_db()
    assert first.status == StepStatus.SUCCEEDED and first.attempts == 1
    assert [entry["outcome"] for entry in first.history] == ["succeeded"]
    assert (
        list(job.steps.values_list("status", flat=True))
        == [StepStatus.SUCCEEDED, StepStatus.QUEUED] + [StepStatus.PENDING] * 4
    )


def test_a_running_step_has_its_log_streamed_and_its_lease_kept(in_process_queue: None) -> None:
    job = job_start(pipeline="test.log_streamed_in_process")
    step = queued_step(job)
    assert step is not None

    execute_step(step.pk)

    step.refresh_from_db()
    job.refresh_from_db()
    assert step.status == StepStatus.SUCCEEDED, step.error
    assert job.status == JobStatus.SUCCEEDED
    assert step.log.count("half way") == 1 and step.log.index("half way") < step.log.index("seen")


def test_a_first_step_delivered_again_after_its_job_ran_on_does_nothing(in_process_queue: None) -> None:
    job = job_start(pipeline="test.noop_in_process")
    first = queued_step(job)
    assert first is not None
    execute_step(first.pk)

    for step in job.steps.all():
        execute_step(step.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    steps = list(job.steps.order_by("position"))
    assert all(s.status == StepStatus.SUCCEEDED and s.attempts == 1 for s in steps)
    assert [[entry["outcome"] for entry in s.history] for s in steps] == [["succeeded"]] * 6
