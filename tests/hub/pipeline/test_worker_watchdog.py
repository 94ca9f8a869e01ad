"""Workers that cannot hang silently (hub/workers.py): a worker whose consumer stops
while work waits opens a HARD worker_stalled alert and exits 75; its restart does the
work. The canary goes through each worker's own queue. The pool decides whether a
lost broker connection cancels the running tasks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from django.conf import settings

from hub.celery import app
from hub.models import Alert, AlertSeverity, AlertStatus
from hub.pipeline.models import JobStatus, StepStatus
from hub.workers import ALERT_KIND, broker_watch, direct_queue_name, live_workers, worker_key
from tests.conftest import WorkerProcess, wait_for
from tests.hub.pipeline.test_engine import FAULT_QUEUE, calls_of, start, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STALL = {"WORKER_STALL_SECONDS": "3", "WORKER_STALL_EXIT_GRACE": "10"}
# The watchdog looks every half second at this bound; the warm shutdown is quick when
# nothing runs. Far under this, but a bound all the same.
EXIT_BOUND = 3 + 10 + 15


def exit_code(worker: WorkerProcess) -> int:
    assert worker.proc is not None
    return worker.proc.wait(timeout=EXIT_BOUND)


def stalled_alert(worker: WorkerProcess) -> Alert | None:
    return Alert.objects.filter(kind=ALERT_KIND, subject_type="worker", subject_id=worker.hostname).first()


def cancel(queue: str, worker: WorkerProcess) -> None:
    replies = app.control.cancel_consumer(queue, destination=[worker.hostname], reply=True, timeout=5)
    assert replies, f"{worker.hostname} did not confirm it stopped consuming {queue}"


def test_a_worker_whose_consumer_stops_while_jobs_wait_alerts_exits_75_and_its_restart_does_the_work(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # given a threads-pool worker whose consumer was cancelled behind its back
    stuck = start_worker(queues=FAULT_QUEUE, concurrency=2, pool="threads", name="stuck", env=STALL)
    cancel(FAULT_QUEUE, stuck)

    # when jobs wait in its queue
    jobs = [start("test.slow_faults", tmp_path, sleep=0) for _ in range(2)]

    # then it opens a HARD alert naming it and exits 75 for its supervisor
    assert exit_code(stuck) == 75, stuck.log()[-3000:]
    alert = stalled_alert(stuck)
    assert alert is not None, stuck.log()[-3000:]
    assert alert.severity == AlertSeverity.HARD
    assert alert.status == AlertStatus.OPEN
    assert stuck.hostname in alert.message and FAULT_QUEUE in alert.message
    assert all(job.steps.get(name="one").status == StepStatus.QUEUED for job in jobs), "nothing consumed them"

    # and the same worker started again does the work and resolves the alert
    start_worker(queues=FAULT_QUEUE, concurrency=2, pool="threads", name="stuck", env=STALL)
    for job in jobs:
        wait_job(job, (JobStatus.SUCCEEDED,), timeout=60)
        runs = [call for call in calls_of(tmp_path, job) if call.startswith("run ")]
        assert runs == ["run one", "run slow", "run three"]
    wait_for(
        lambda: Alert.objects.filter(pk=alert.pk, status=AlertStatus.RESOLVED).exists(),
        timeout=20,
        message="the alert to resolve",
    )


def test_the_reaper_sends_each_worker_a_canary_through_its_own_queue_and_a_worker_that_ignores_it_exits(
    start_worker: Callable[..., WorkerProcess], broker: redis.Redis
) -> None:
    # given two idle workers that registered themselves
    healthy = start_worker(queues=FAULT_QUEUE, concurrency=1, pool="threads", name="healthy", env=STALL)
    deaf = start_worker(queues=FAULT_QUEUE, concurrency=1, pool="threads", name="deaf", env=STALL)
    wait_for(
        lambda: {healthy.hostname, deaf.hostname} <= set(live_workers(broker)),
        timeout=20,
        message="both workers in the registry",
    )
    # one of which no longer consumes its own queue
    cancel(direct_queue_name(deaf.hostname), deaf)

    # when the reaper's broker round runs
    report = broker_watch()
    assert {healthy.hostname, deaf.hostname} <= set(report.sent)
    assert report.declared >= len(settings.HUB_QUEUES) + 2

    # then the healthy one consumes its canary and records it
    wait_for(
        lambda: broker.hget(worker_key(healthy.hostname), "canary_consumed"), timeout=20, message="the canary consumed"
    )
    # and the deaf one, with nothing else to do, is found out by its canary
    assert exit_code(deaf) == 75, deaf.log()[-3000:]
    assert stalled_alert(deaf) is not None
    assert healthy.proc is not None and healthy.proc.poll() is None
    # a canary still waiting is not sent twice
    assert deaf.hostname in broker_watch().pending


def test_a_lost_connection_cancels_running_tasks_only_where_the_pool_can(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    threads = start_worker(queues=FAULT_QUEUE, concurrency=1, pool="threads", name="threads-conf")
    prefork = start_worker(queues=FAULT_QUEUE, concurrency=1, pool="prefork", name="prefork-conf")

    replies = app.control.inspect([threads.hostname, prefork.hostname], timeout=5).conf(with_defaults=False) or {}

    assert replies[threads.hostname]["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert replies[prefork.hostname]["worker_cancel_long_running_tasks_on_connection_loss"] is True
