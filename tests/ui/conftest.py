"""Fixtures for the operator pages: a logged-in staff client and a few fleet rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client
from playwright.sync_api import Browser, Page, sync_playwright

from hub.pipeline.models import Job, JobStatus
from hub.pipeline.services import job_start
from provisioning.models import Order, OrderStatus
from tests.conftest import ROOT

STAFF_PASSWORD = "operator-pass-123"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "ui"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium package")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are plain synchronous ones all the same (the live server serves from its thread).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        # While Playwright's event loop runs in this thread, Django keeps the test's
        # connection apart from the one pytest-django set up: close it here, or it
        # outlives the test and the test database cannot be dropped.
        connections.close_all()
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


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
