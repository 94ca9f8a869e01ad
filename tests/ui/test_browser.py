"""The operator's path through the admin in a real browser: Debian's Chromium, driven
by Playwright, against the real web process (scripts/web.sh), with the real Celery worker running the
jobs. Log in through the form, read the dashboard, open a failed order, fix the cause,
retry it and watch the page follow the job to the end without a reload."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from hub.models import Alert, AlertSeverity, AuditEvent
from hub.pipeline.models import Job, JobStatus, StepKind, StepStatus
from provisioning.models import Order, OrderStatus, ServerStatus
from tenants.models import Tenant, TenantStatus
from tests.conftest import WebServer, job_of, queues_taken_from_session_worker, wait_for
from tests.factories import ServerFactory, TenantFactory
from tests.ui.conftest import STAFF_PASSWORD, make_failed_order, shot

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The page follows the job through its event stream (polling only while it breaks).
LIVE_TIMEOUT_MS = 20_000


def test_operator_logs_in_reads_the_dashboard_and_retries_a_failed_order_live(
    page: Page, web_server: WebServer, celery_worker: Any, staff_user: Any, tmp_path: Path
) -> None:
    # given: a fleet with known numbers, and an order whose job failed on the worker
    now = timezone.now()
    for n in range(3):
        tenant = TenantFactory.create(domain=f"live-{n}.example.test")
        if n < 2:
            Tenant.objects.filter(pk=tenant.pk).update(last_heartbeat_at=now, registered_at=now)
    paused = TenantFactory.create(domain="paused.example.test")
    Tenant.objects.filter(pk=paused.pk).update(status=TenantStatus.SUSPENDED)
    for n in range(2):
        ServerFactory.create(status=ServerStatus.AVAILABLE, region="eu", tier="build", ipv4=f"127.0.50.{10 + n}")
    ServerFactory.create(status=ServerStatus.PREPARING, region="us", tier="build", ipv4="127.0.50.20")
    for kind, severity in [("disk", AlertSeverity.HARD), ("tls", AlertSeverity.HARD), ("load", AlertSeverity.SOFT)]:
        Alert.objects.create(subject_type="tenant", subject_id="1", kind=kind, severity=severity, message=kind)
    Order.objects.create(domain="waiting.example.test", status=OrderStatus.AWAITING_SERVER, region="eu", plan="build")

    order = make_failed_order(tmp_path)
    job = wait_for(
        lambda: Job.objects.filter(pk=job_of(order).pk, status=JobStatus.ROLLED_BACK).first(),
        timeout=20,
        message="the fixable job to fail and roll back on the worker",
    )
    fixable = job.steps.get(kind=StepKind.ACTION, name="fixable")
    assert fixable.status == StepStatus.FAILED and "422" in fixable.error

    # when: the operator logs in through the form
    page.goto(f"{web_server.url}/admin/login/?next=/admin/")
    shot(page, "01-login")
    page.fill("#id_username", staff_user.get_username())
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{web_server.url}/admin/")

    # then: the dashboard shows the numbers of the rows above
    dashboard = page.locator("#hub-dashboard")
    expect(dashboard).to_be_visible()
    shot(page, "02-dashboard")
    fleet = page.locator("#dash-fleet")
    expect(fleet.locator("[data-count=total]")).to_have_text("4")
    expect(fleet.locator("[data-count=active]")).to_have_text("3")
    expect(fleet.locator("[data-count=healthy]")).to_have_text("2")
    expect(fleet.locator("[data-count=suspended]")).to_have_text("1")
    expect(page.locator("#dash-alerts [data-severity=HARD]")).to_have_text("2")
    expect(page.locator("#dash-alerts [data-severity=SOFT]")).to_have_text("1")
    expect(page.locator("#dash-alerts h2")).to_have_text("Open alerts (3)")
    expect(page.locator("#dash-orders [data-status=AWAITING_SERVER]")).to_have_text("1")
    expect(page.locator("#dash-orders h2")).to_have_text("Orders in flight (1)")
    expect(page.locator("#dash-pool [data-pool=eu-build] td.num")).to_have_text("2 / 3")
    expect(page.locator("#dash-pool [data-pool=us-build] td.num")).to_have_text("0 / 2")
    expect(page.locator("#dash-pool [data-pool=us-build]")).to_contain_text("1 preparing")
    failed_row = page.locator(f"#dash-failed-jobs [data-job='{job.pk}']")
    expect(failed_row).to_contain_text("ROLLED_BACK")
    expect(failed_row).to_contain_text(f"order {order.pk}")

    # when: the operator follows the failed job to its order
    failed_row.get_by_role("link", name=f"order {order.pk}").click()
    page.wait_for_url(f"{web_server.url}/admin/provisioning/order/{order.pk}/change/")

    # then: the timeline shows the failed step with its error
    actions = page.locator("#order-timeline tr.step-row[data-kind=ACTION]")
    expect(actions).to_have_count(3)
    expect(page.locator("#order-timeline tr[data-kind=ACTION][data-step=first]")).to_have_attribute(
        "data-status", StepStatus.COMPENSATED
    )
    failed = page.locator("#order-timeline tr[data-kind=ACTION][data-step=fixable]")
    expect(failed).to_have_attribute("data-status", StepStatus.FAILED)
    expect(failed).to_contain_text("provider said 422: invalid input")
    expect(failed).to_contain_text("1 / ")
    expect(page.locator("#order-status")).to_have_text(OrderStatus.FAILED)
    expect(page.locator("#job-status")).to_have_text(JobStatus.ROLLED_BACK)
    shot(page, "03-order-failed")

    # when: the cause is fixed and the operator retries; the worker holds the job's
    # messages until the page is up, so the page must follow the job live
    (tmp_path / "fixed").touch()
    with queues_taken_from_session_worker([job.queue]):
        page.click("#order-retry-button")
        page.wait_for_url(f"{web_server.url}/admin/provisioning/order/{order.pk}/change/")
        expect(page.locator("#job-status")).to_have_text(JobStatus.RUNNING)
        expect(page.locator("#order-live-note")).to_have_text("(live)")
        expect(page.locator("#order-timeline tr[data-kind=ACTION][data-step=fixable]")).to_have_attribute(
            "data-status", StepStatus.PENDING
        )
        shot(page, "04-order-retried")
        page.evaluate("window.__sameDocument = true")

    # then: without a reload, the order and job statuses and every step move to the end
    expect(page.locator("#job-status")).to_have_text(JobStatus.SUCCEEDED, timeout=LIVE_TIMEOUT_MS)
    for name in ("first", "fixable", "last"):
        row = page.locator(f"#order-timeline tr[data-kind=ACTION][data-step={name}]")
        expect(row).to_have_attribute("data-status", StepStatus.SUCCEEDED, timeout=LIVE_TIMEOUT_MS)
    # The step's error is cleared; its log keeps the failed attempt's line.
    fixed_row = page.locator("#order-timeline tr[data-kind=ACTION][data-step=fixable]")
    expect(fixed_row.locator("td").nth(6)).to_have_text("")
    expect(fixed_row.locator("td").nth(7)).to_contain_text("attempt 1 failed")
    # order_retry puts a failed order back at the start of the flow (PAYMENT_CONFIRMED);
    # the test pipeline has no step that moves it further.
    expect(page.locator("#order-status")).to_have_text(OrderStatus.PAYMENT_CONFIRMED)
    expect(page.locator("#order-live-note")).to_have_text("")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of following the job"
    shot(page, "05-order-succeeded")

    order.refresh_from_db()
    assert order.status == OrderStatus.PAYMENT_CONFIRMED
    assert order.failure_reason == ""
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    retry = AuditEvent.objects.get(action="order.retry", object_type="order", object_id=str(order.pk))
    assert (retry.actor, retry.old, retry.new) == ("ops-anna", OrderStatus.FAILED, OrderStatus.PAYMENT_CONFIRMED)
    assert retry.created_at > now - timedelta(minutes=1)
