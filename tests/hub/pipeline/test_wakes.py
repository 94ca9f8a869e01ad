"""A step that waits on an event the Hub itself receives (an agent registering) is woken
by it, through the real registration endpoint, instead of waiting out its poll. Run step
by step in the test's process; what happened is read off the step's history (its wakes
and attempts), never off the clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
import redis
from rest_framework.test import APIClient

from hub.pipeline import wakes
from hub.pipeline.engine import execute_step
from hub.pipeline.models import Job, JobStatus, Step, StepStatus
from hub.pipeline.services import job_start
from hub.pipeline.wakes import AGENT_REGISTERED
from provisioning.pipelines import order
from tenants.models import Tenant, TenantStatus
from tenants.services import registration_token_issue, tenant_create
from tests.factories import OrderFactory, TenantFactory
from tests.pipelines import AGENT_POLL_SECONDS, IN_PROCESS_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REGISTER = "/api/v1/agent/register"


@pytest.fixture
def in_process_queue(broker: redis.Redis) -> Iterator[None]:
    yield
    broker.delete(IN_PROCESS_QUEUE)


def waiting_job(tenant: Tenant, **context: object) -> tuple[Job, Step]:
    job = job_start(
        pipeline="test.wait_agent_in_process",
        subject_type="tenant",
        subject_id=tenant.pk,
        context={"tenant_id": tenant.pk, **context},
    )
    step = job.steps.get(name="wait_agent")
    execute_step(step.pk)
    step.refresh_from_db()
    return job, step


def outcomes(step: Step) -> list[str]:
    step.refresh_from_db()
    return [entry["outcome"] for entry in step.history]


def test_the_agent_registering_wakes_the_step_waiting_for_it(in_process_queue: None, api: APIClient) -> None:
    tenant = tenant_create(domain="wake.example.test", status=TenantStatus.ACTIVE)
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")
    job, step = waiting_job(tenant)
    # given the step looked, found no agent and waits for its next poll, minutes away
    assert step.status == StepStatus.RETRY_WAIT and outcomes(step) == ["deferred"]
    assert step.next_run_at is not None and step.history[-1]["wait"] == AGENT_POLL_SECONDS

    # when the agent registers
    response = api.post(
        REGISTER,
        {"registration_token": token, "hostname": "vps-1.example.test", "agent_version": "1.2.3"},
        format="json",
    )

    # then the registration woke the step: it is queued now, not at its poll
    assert response.status_code == 201
    step.refresh_from_db()
    assert step.status == StepStatus.QUEUED and step.next_run_at is None
    assert outcomes(step) == ["deferred", "woken"]
    assert step.history[-1]["reason"] == AGENT_REGISTERED
    # and its next attempt finds the agent and the job goes on
    execute_step(step.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert outcomes(step) == ["deferred", "woken", "succeeded"]
    assert step.attempts == 1  # waiting is not trying


def test_a_registration_while_the_step_looks_makes_it_look_again_at_once(in_process_queue: None) -> None:
    tenant = tenant_create(domain="race.example.test", status=TenantStatus.ACTIVE)
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")

    # when the agent registers after the step read the tenant and before it deferred
    job, step = waiting_job(tenant, register_meanwhile=token)

    # then the wake is kept while the attempt runs, and the step's wait is none at all
    assert outcomes(step) == ["woken", "deferred"]
    assert step.history[-1]["wait"] == 0
    assert step.status == StepStatus.RETRY_WAIT and step.next_run_at is not None
    assert step.attempt_started_at is not None
    assert step.next_run_at <= datetime.fromisoformat(step.history[-1]["finished_at"])
    execute_step(step.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert outcomes(step) == ["woken", "deferred", "succeeded"]


def test_a_registration_no_step_waits_for_wakes_nothing(in_process_queue: None, api: APIClient) -> None:
    tenant = tenant_create(domain="alone.example.test", status=TenantStatus.ACTIVE)
    _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")
    other = tenant_create(domain="other.example.test", status=TenantStatus.ACTIVE)
    _, step = waiting_job(other)

    response = api.post(
        REGISTER,
        {"registration_token": token, "hostname": "vps-1.example.test", "agent_version": "1.2.3"},
        format="json",
    )

    assert response.status_code == 201
    step.refresh_from_db()
    assert step.status == StepStatus.RETRY_WAIT and outcomes(step) == ["deferred"]


def test_provisioning_wakes_the_running_order_jobs_of_the_tenant_that_registered() -> None:
    tenant, other = TenantFactory.create(), TenantFactory.create()
    running = OrderFactory.create(
        tenant=tenant, job=Job.objects.create(pipeline="provision_order", status=JobStatus.RUNNING)
    )
    OrderFactory.create(tenant=tenant, job=Job.objects.create(pipeline="provision_order", status=JobStatus.ROLLED_BACK))
    OrderFactory.create(tenant=other, job=Job.objects.create(pipeline="provision_order", status=JobStatus.RUNNING))

    # the step provisioning registers for the event, and the jobs it finds for a tenant
    assert ("wait_agent_registered", order.jobs_waiting_for_agent) in wakes.waiting_on(AGENT_REGISTERED)
    assert order.jobs_waiting_for_agent(str(tenant.pk)) == [running.job_id]
