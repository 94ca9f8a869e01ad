"""The step-pipeline engine on a real Celery worker, the real Redis broker and the
real Postgres: nothing here runs eagerly."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client

from hub.models import AuditEvent
from hub.pipeline.models import Job, JobStatus, StepKind, StepStatus
from hub.pipeline.reaper import pipeline_reap
from hub.pipeline.services import job_start
from hub.pipeline.tasks import run_step
from tests.conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FAULT_QUEUE = "test-faults"


def calls(effects: Path) -> list[str]:
    path = effects / "calls.log"
    if not path.exists():
        return []
    return [line.split(" job=")[0] for line in path.read_text().splitlines()]


def calls_of(effects: Path, job: Job) -> list[str]:
    path = effects / "calls.log"
    return [line.split(" job=")[0] for line in path.read_text().splitlines() if f" job={job.pk} " in line]


def wait_job(job: Job, statuses: tuple[str, ...], *, timeout: float = 30.0, reap: bool = False) -> Job:
    def done() -> Job | None:
        if reap:
            pipeline_reap()
        job.refresh_from_db()
        return job if job.status in statuses else None

    return wait_for(done, timeout=timeout, interval=0.2, message=f"job {job.pk} to reach {statuses}")


def start(pipeline: str, effects: Path, **context: object) -> Job:
    return job_start(pipeline=pipeline, context={"effects_dir": str(effects), **context})


def step(job: Job, name: str):
    return job.steps.get(name=name)


def test_five_step_job_runs_to_succeeded_on_the_worker(celery_worker: WorkerProcess, tmp_path: Path) -> None:
    job = start("test.five_steps", tmp_path)

    wait_job(job, (JobStatus.SUCCEEDED,))

    assert calls(tmp_path) == ["run s1", "run s2", "run s3", "run s4", "run s5"]
    steps = list(job.steps.order_by("position"))
    assert [s.status for s in steps] == [StepStatus.SUCCEEDED] * 5
    assert all(s.attempts == 1 and s.duration_seconds is not None for s in steps)
    assert "s3 done" in steps[2].log
    assert job.context["s5_done"] is True
    assert job.finished_at is not None


def test_step_failing_twice_then_succeeding_ends_with_three_attempts_and_growing_waits(
    celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    job = start("test.flaky", tmp_path, fail_times=2)

    wait_job(job, (JobStatus.SUCCEEDED,))

    flaky = step(job, "flaky")
    assert flaky.status == StepStatus.SUCCEEDED
    assert flaky.attempts == 3
    outcomes = [entry["outcome"] for entry in flaky.history]
    assert outcomes == ["failed", "failed", "succeeded"]
    planned = [entry["retry_in"] for entry in flaky.history if "retry_in" in entry]
    assert planned[0] < planned[1], f"backoff must grow: {planned}"
    starts = [datetime.fromisoformat(entry["started_at"]) for entry in flaky.history]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= planned[0] * 0.9 and gaps[1] >= planned[1] * 0.9, gaps
    assert "transient failure 2" in flaky.log
    assert calls(tmp_path) == ["run before", "run flaky", "run flaky", "run flaky", "run after"]


def test_step_failing_for_good_compensates_earlier_steps_in_reverse_once(
    celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    job = start("test.doomed", tmp_path)

    wait_job(job, (JobStatus.ROLLED_BACK,))

    assert calls(tmp_path) == ["run a", "run no_undo", "run b", "run doomed", "run doomed", "undo b", "undo a"]
    assert "the disk is on fire" in job.error
    doomed = step(job, "doomed")
    assert doomed.status == StepStatus.FAILED and doomed.attempts == 2
    assert step(job, "never").status == StepStatus.SKIPPED
    assert step(job, "a").status == StepStatus.COMPENSATED
    assert step(job, "b").status == StepStatus.COMPENSATED
    assert step(job, "no_undo").status == StepStatus.SUCCEEDED
    compensations = list(job.steps.filter(kind=StepKind.COMPENSATION).order_by("position"))
    assert [c.name for c in compensations] == ["undo b", "undo a"]
    assert all(c.status == StepStatus.SUCCEEDED and c.attempts == 1 for c in compensations)
    moves = list(
        AuditEvent.objects.filter(object_type="job", object_id=str(job.pk), action="job.status")
        .order_by("id")
        .values_list("new", flat=True)
    )
    assert moves == [JobStatus.RUNNING, JobStatus.COMPENSATING, JobStatus.ROLLED_BACK]


def test_a_step_that_failed_half_way_is_cleaned_up_by_its_own_compensation_first(
    celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    job = start("test.half_done", tmp_path)

    wait_job(job, (JobStatus.ROLLED_BACK,))

    assert calls(tmp_path) == ["run a", "run half", "undo half", "undo a"]
    assert not (tmp_path / "effect-half-1").exists(), "the half-made effect is undone"
    assert step(job, "half").status == StepStatus.FAILED, "a failed step stays FAILED"
    assert step(job, "a").status == StepStatus.COMPENSATED
    assert "the second half was refused" in job.error


def test_a_compensation_that_keeps_failing_ends_the_job_failed_not_rolled_back(
    celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    job = start("test.stuck_undo", tmp_path)

    job = wait_job(job, (JobStatus.FAILED, JobStatus.ROLLED_BACK))

    assert job.status == JobStatus.FAILED, "a rollback that left something behind is no rollback"
    assert job.compensation_failed
    undo = job.steps.get(kind=StepKind.COMPENSATION, name__contains="stuck")
    assert (undo.status, undo.attempts) == (StepStatus.FAILED, 3)
    assert "refuses to delete" in undo.error
    assert step(job, "a").status == StepStatus.COMPENSATED, "the other undo still ran"
    assert calls(tmp_path).count("undo stuck") == 3
    moved = AuditEvent.objects.filter(object_type="job", object_id=str(job.pk), new=JobStatus.FAILED).get()
    assert "compensation failed" in moved.reason


def test_a_step_that_outlives_its_lease_keeps_it_by_renewal_while_the_reaper_watches(
    celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    # a 6 s step under a 2 s lease (the test settings), the reaper running all along
    job = start("test.slow", tmp_path, sleep=6)

    def done() -> bool:
        pipeline_reap()
        job.refresh_from_db()
        return job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.ROLLED_BACK)

    wait_for(done, timeout=40, interval=0.3, message="the slow job to end")

    assert job.status == JobStatus.SUCCEEDED
    slow = step(job, "slow")
    assert slow.attempts == 1
    assert [entry["outcome"] for entry in slow.history] == ["succeeded"], "the reaper never took it back"
    assert calls(tmp_path).count("run slow") == 1


def test_the_same_step_message_delivered_twice_runs_the_action_once(
    celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    job = start("test.single", tmp_path)
    counted = step(job, "counted")
    # Two more deliveries of the same message while the first may be running.
    run_step.apply_async(args=[counted.pk], queue="default")
    run_step.apply_async(args=[counted.pk], queue="default")

    wait_job(job, (JobStatus.SUCCEEDED,))
    wait_for(
        lambda: celery_worker.log().count("hub.pipeline.run_step") >= 6,
        timeout=10,
        message="all three deliveries to be handled",
    )

    assert calls(tmp_path) == ["run counted"]
    assert step(job, "counted").attempts == 1


def test_twenty_jobs_at_once_all_complete_without_interfering(celery_worker: WorkerProcess, tmp_path: Path) -> None:
    jobs = [start("test.five_steps", tmp_path) for _ in range(20)]

    for job in jobs:
        wait_job(job, (JobStatus.SUCCEEDED,), timeout=90)

    for job in jobs:
        assert calls_of(tmp_path, job) == ["run s1", "run s2", "run s3", "run s4", "run s5"]
        assert list(job.steps.values_list("attempts", flat=True)) == [1] * 5
    assert len(calls(tmp_path)) == 100


def test_worker_killed_mid_step_is_recovered_by_the_reaper_and_the_effect_happens_once(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    doomed_worker = start_worker(queues=FAULT_QUEUE, concurrency=1, name="doomed")
    job = job_start(pipeline="test.slow_faults", context={"effects_dir": str(tmp_path), "sleep": 3})
    wait_for(lambda: (tmp_path / "effect-slow").exists(), timeout=30, message="the slow step to start")

    doomed_worker.kill()
    start_worker(queues=FAULT_QUEUE, concurrency=1, name="rescuer")
    wait_job(job, (JobStatus.SUCCEEDED,), timeout=60, reap=True)

    slow = step(job, "slow")
    assert slow.attempts == 2
    assert [entry["outcome"] for entry in slow.history] == ["lost", "succeeded"]
    assert calls(tmp_path).count("effect slow") == 1
    assert calls(tmp_path).count("run slow") == 2
    assert calls(tmp_path)[-1] == "run three"


def test_broker_flushed_mid_job_is_recovered_by_the_reaper(
    start_worker: Callable[..., WorkerProcess], broker: redis.Redis, tmp_path: Path
) -> None:
    first = start_worker(queues=FAULT_QUEUE, concurrency=1, name="first")
    job = job_start(pipeline="test.slow_faults", context={"effects_dir": str(tmp_path), "sleep": 2})
    wait_for(lambda: (tmp_path / "effect-slow").exists(), timeout=30, message="the slow step to start")
    # A warm shutdown lets the running step finish; its successor's message then
    # waits in Redis with nobody consuming, and the flush loses it.
    first.stop()
    assert step(job, "three").status == StepStatus.QUEUED
    broker.flushdb()

    start_worker(queues=FAULT_QUEUE, concurrency=1, name="second")
    job.refresh_from_db()
    assert step(job, "three").status == StepStatus.QUEUED, "nothing can run it without the reaper"

    wait_job(job, (JobStatus.SUCCEEDED,), timeout=60, reap=True)
    assert calls(tmp_path).count("run three") == 1
    assert calls(tmp_path).count("effect slow") == 1


def test_step_that_kills_its_worker_every_time_fails_after_its_delivery_limit(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    start_worker(queues=FAULT_QUEUE, concurrency=1, name="victim")
    job = job_start(pipeline="test.killer_faults", context={"effects_dir": str(tmp_path)})

    wait_job(job, (JobStatus.ROLLED_BACK, JobStatus.FAILED), timeout=90, reap=True)

    killer = step(job, "killer")
    assert killer.status == StepStatus.FAILED
    assert killer.attempts == killer.max_attempts == 3
    assert "gave up after 3 deliveries" in killer.error
    assert calls(tmp_path).count("run killer") == 3
    assert calls(tmp_path)[-1] == "undo pre"
    assert job.status == JobStatus.ROLLED_BACK


@pytest.fixture
def staff_client(db: None) -> Client:
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    client = Client()
    client.force_login(user)
    return client


def test_retry_from_the_failed_step_through_the_admin_action(
    celery_worker: WorkerProcess, staff_client: Client, tmp_path: Path
) -> None:
    job = start("test.fixable", tmp_path)
    wait_job(job, (JobStatus.ROLLED_BACK,))
    assert calls(tmp_path) == ["run first", "run fixable", "undo first"]
    page = staff_client.get(f"/admin/hub/job/{job.pk}/change/")
    assert page.status_code == 200 and b"job-timeline" in page.content and b"provider said 422" in page.content

    failed_at = step(job, "fixable").finished_at
    (tmp_path / "fixed").touch()
    response = staff_client.post("/admin/hub/job/", {"action": "retry_jobs", "_selected_action": [job.pk]}, follow=True)
    assert response.status_code == 200
    assert b"Retried 1 job" in response.content

    wait_job(job, (JobStatus.SUCCEEDED,))
    # "first" was undone by the compensation, so the retry redoes it.
    assert calls(tmp_path) == ["run first", "run fixable", "undo first", "run first", "run fixable", "run last"]
    assert AuditEvent.objects.filter(action="job.retry", object_id=str(job.pk), actor="ops").exists()
    assert step(job, "fixable").attempts == 1
    # the timeline shows the retried run, not the time the job sat failed
    assert step(job, "fixable").started_at > failed_at


def test_retry_is_refused_for_a_job_that_did_not_fail(
    celery_worker: WorkerProcess, staff_client: Client, tmp_path: Path
) -> None:
    job = start("test.five_steps", tmp_path)
    wait_job(job, (JobStatus.SUCCEEDED,))

    response = staff_client.post(f"/admin/hub/job/{job.pk}/retry/", follow=True)

    assert b"only a failed, rolled-back or cancelled job can be retried" in response.content
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert len(calls(tmp_path)) == 5


def test_cancel_from_the_admin_lets_the_running_step_finish_then_compensates(
    celery_worker: WorkerProcess, staff_client: Client, tmp_path: Path
) -> None:
    job = start("test.slow", tmp_path, sleep=2)
    wait_for(lambda: (tmp_path / "effect-slow").exists(), timeout=30, message="the slow step to start")

    response = staff_client.post(f"/admin/hub/job/{job.pk}/cancel/", follow=True)
    assert b"Cancelled 1 job" in response.content

    wait_job(job, (JobStatus.CANCELLED,))
    assert calls(tmp_path) == ["run one", "run slow", "effect slow", "undo one"]
    assert step(job, "slow").status == StepStatus.SUCCEEDED
    assert step(job, "three").status == StepStatus.SKIPPED
    assert AuditEvent.objects.filter(action="job.cancel", object_id=str(job.pk), actor="ops").exists()
    second = staff_client.post(f"/admin/hub/job/{job.pk}/cancel/", follow=True)
    assert re.search(rb"is CANCELLED; it cannot be cancelled", second.content)
