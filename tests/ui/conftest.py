"""Fixtures for the operator pages: a logged-in staff client and a few fleet rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client

from hub.pipeline.models import Job, JobStatus
from hub.pipeline.services import job_start
from provisioning.models import Order, OrderStatus

STAFF_PASSWORD = "operator-pass-123"


@pytest.fixture
def staff_user(db: None) -> User:
    return get_user_model().objects.create_superuser("ops-anna", "anna@example.test", STAFF_PASSWORD)


@pytest.fixture
def staff_client(staff_user: User) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def make_failed_order(effects_dir: Path, *, domain: str = "failing.example.test") -> Order:
    """An order whose job runs the "test.fixable" pipeline: it fails until a file
    "fixed" exists in effects_dir."""
    order = Order.objects.create(domain=domain, status=OrderStatus.FAILED, region="eu", plan="build")
    job = job_start(
        pipeline="test.fixable", subject_type="order", subject_id=order.pk, context={"effects_dir": str(effects_dir)}
    )
    order.job = job
    order.save(update_fields=["job", "updated_at"])
    return order


def mark_job_failed(job: Job) -> None:
    """Without a worker: make the job look as the engine leaves a failed one."""
    job.steps.filter(name="first").update(status="SUCCEEDED", attempts=1)
    job.steps.filter(name="fixable").update(status="FAILED", attempts=1, error="provider said 422: invalid input")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.ROLLED_BACK, error="fixable failed")
