"""The beat job's task, run by a real Celery worker against the real broker."""

from __future__ import annotations

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from rollouts.models import RolloutStatus, TenantUpdate, UpdateStatus
from rollouts.services import rollout_start
from rollouts.tasks import evaluate
from tests.conftest import wait_for


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_evaluate_task_on_a_real_worker_advances_and_completes_a_rollout(celery_worker, make_fleet, make_rollout):
    # given a fleet whose agents answer through the agent API, and a started rollout
    fleet = make_fleet(20, internal=2)
    rollout = make_rollout()
    rollout_start(rollout_id=rollout.pk, actor="test")

    # when the agents answer and the worker runs `rollouts.evaluate`, round after round
    def completed() -> bool:
        fleet.round()
        evaluate.delay()
        rollout.refresh_from_db()
        return rollout.status == RolloutStatus.COMPLETED

    wait_for(completed, timeout=30, interval=0.5, message="the rollout to complete")

    # then every tenant was updated, stage by stage
    assert TenantUpdate.objects.filter(rollout=rollout, status=UpdateStatus.SUCCEEDED).count() == 20
    assert [s.dispatched for s in rollout.stages.order_by("position")] == [2, 1, 4, 13]


@pytest.mark.django_db
def test_the_evaluation_is_a_beat_job_every_15_seconds_on_the_rollouts_queue():
    task = PeriodicTask.objects.select_related("interval").get(task="rollouts.evaluate")

    assert (task.queue, task.interval.every, task.interval.period, task.enabled) == ("rollouts", 15, "seconds", True)
    assert settings.CELERY_TASK_ROUTES["rollouts.*"] == {"queue": "rollouts"}
