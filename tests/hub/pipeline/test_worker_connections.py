"""A worker keeps its Postgres connection from task to task (CONN_MAX_AGE), as the
web does from request to request, instead of opening one per task; and a kept
connection that died is replaced before the next task uses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from hub.pipeline.models import Job, JobStatus
from hub.pipeline.services import job_start
from tests.conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def run_job(effects: Path) -> tuple[Job, list[str]]:
    job = job_start(pipeline="test.backends_faults", context={"effects_dir": str(effects)})
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED, timeout=30, message=f"job {job.pk} to succeed"
    )
    lines = (effects / "calls.log").read_text().splitlines()
    backends = [line.split(" job=")[0].removeprefix("backend ") for line in lines if f" job={job.pk} " in line]
    return job, backends


@pytest.fixture
def reusing_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    # The test settings close connections after every task (CONN_MAX_AGE 0); this
    # worker keeps them, as production does.
    return start_worker(queues="test-faults", concurrency=1, name="reuser", env={"DATABASE_CONN_MAX_AGE": "60"})


def test_the_steps_of_a_job_run_on_one_kept_connection(reusing_worker: WorkerProcess, tmp_path: Path) -> None:
    _, backends = run_job(tmp_path)

    assert len(backends) == 4
    assert len(set(backends)) == 1, f"a new connection per step: {backends}"


def test_a_kept_connection_that_died_is_replaced_before_the_next_task(
    reusing_worker: WorkerProcess, tmp_path: Path
) -> None:
    _, first_backends = run_job(tmp_path)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [int(first_backends[-1])])

    job, backends = run_job(tmp_path)

    assert first_backends[-1] not in backends
    assert list(job.steps.values_list("attempts", flat=True)) == [1, 1, 1, 1], "no step failed on the dead connection"
