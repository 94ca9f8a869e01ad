"""The admin as served by the real web process (scripts/web.sh), in Debian's Chromium:
its stylesheet applies, and the order page and the dashboard follow the event streams,
changing without a reload when the truth changes after they loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings
from playwright.sync_api import Page, expect

from hub.alerts.services import alert_raise
from hub.audit import status_move
from hub.pipeline.engine import execute_step
from hub.pipeline.models import StepKind, StepStatus
from hub.pipeline.services import job_start
from provisioning.models import ORDER_TRANSITIONS, Order, OrderStatus
from tests.conftest import WebServer, queues_taken_from_session_worker
from tests.ui.conftest import STAFF_PASSWORD, shot

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The bound: a change made after the page loaded shows within 2 s.
LIVE_BOUND_MS = 2_000


def log_in(page: Page, server: WebServer, user: Any, next_url: str = "/admin/") -> None:
    page.goto(f"{server.url}/admin/login/?next={next_url}")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}{next_url}")


def test_the_admin_home_has_its_stylesheet_applied(page: Page, web_server: WebServer, staff_user: Any) -> None:
    log_in(page, web_server, staff_user)

    # base.css defines the admin's colours as custom properties and paints the header.
    header_bg = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--header-bg').trim()")
    assert header_bg, "the admin's base.css did not apply"
    painted = page.evaluate("getComputedStyle(document.getElementById('header')).backgroundColor")
    assert painted == "rgb(65, 118, 144)", painted
    shot(page, "live-01-admin-home-styled")


def test_an_order_page_shows_a_step_change_made_after_it_loaded_without_a_reload(
    page: Page, web_server: WebServer, staff_user: Any, tmp_path: Path
) -> None:
    order = Order.objects.create(domain="live-steps.example.test", status=OrderStatus.PAYMENT_CONFIRMED, region="eu")
    with queues_taken_from_session_worker(["default"], purge=True):
        job = job_start(
            pipeline="test.five_steps",
            subject_type="order",
            subject_id=order.pk,
            context={"effects_dir": str(tmp_path)},
        )
        Order.objects.filter(pk=order.pk).update(job=job)
        first = job.steps.get(kind=StepKind.ACTION, name="s1")

        log_in(page, web_server, staff_user, f"/admin/provisioning/order/{order.pk}/change/")
        row = page.locator("#order-timeline tr[data-kind=ACTION][data-step=s1]")
        expect(row).to_have_attribute("data-status", StepStatus.QUEUED)
        expect(page.locator("body")).to_have_attribute("data-live-mode", "stream")
        page.evaluate("window.__sameDocument = true")

        # when: the engine runs the first step, as a worker would, and hands the next one
        # to the broker (no running on: its queue is ours, so it stays QUEUED)
        with override_settings(PIPELINE_RUN_ON_SECONDS=0):
            execute_step(first.pk)

        # then: the page shows it, and the next step queued, without a reload
        expect(row).to_have_attribute("data-status", StepStatus.SUCCEEDED, timeout=LIVE_BOUND_MS)
        expect(page.locator("#order-timeline tr[data-kind=ACTION][data-step=s2]")).to_have_attribute(
            "data-status", StepStatus.QUEUED, timeout=LIVE_BOUND_MS
        )
        expect(row.locator("td").nth(7)).to_contain_text("s1 done")
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
        assert page.evaluate("HubLive.mode") == "stream", "the change came by polling, not the stream"
        shot(page, "live-02-order-step-live")


def test_the_dashboard_counters_move_live(page: Page, web_server: WebServer, staff_user: Any) -> None:
    order = Order.objects.create(domain="live-dash.example.test", status=OrderStatus.PAYMENT_CONFIRMED, region="eu")
    log_in(page, web_server, staff_user)
    hard = page.locator("#dash-alerts [data-severity=HARD]")
    awaiting = page.locator("#dash-orders [data-status=AWAITING_SERVER]")
    expect(hard).to_have_text("0")
    expect(awaiting).to_have_text("0")
    expect(page.locator("body")).to_have_attribute("data-live-mode", "stream")
    page.evaluate("window.__sameDocument = true")

    alert_raise(subject_type="tenant", subject_id="1", kind="disk", severity="HARD", message="disk 97%")
    with transaction.atomic():
        status_move(order, OrderStatus.AWAITING_SERVER, actor="test", transitions=ORDER_TRANSITIONS)

    # The dashboard redraws at most once a second.
    expect(hard).to_have_text("1", timeout=LIVE_BOUND_MS + 1_000)
    expect(awaiting).to_have_text("1", timeout=LIVE_BOUND_MS + 1_000)
    expect(page.locator("#dash-orders h2")).to_have_text("Orders in flight (1)")
    assert page.evaluate("window.__sameDocument") is True, "the dashboard reloaded"
    shot(page, "live-03-dashboard-live")


def test_an_order_page_polls_while_its_stream_is_broken(
    page: Page, web_server: WebServer, staff_user: Any, tmp_path: Path
) -> None:
    order = Order.objects.create(domain="live-poll.example.test", status=OrderStatus.PAYMENT_CONFIRMED, region="eu")
    with queues_taken_from_session_worker(["default"], purge=True):
        job = job_start(
            pipeline="test.five_steps",
            subject_type="order",
            subject_id=order.pk,
            context={"effects_dir": str(tmp_path)},
        )
        Order.objects.filter(pk=order.pk).update(job=job)
        first = job.steps.get(kind=StepKind.ACTION, name="s1")
        # A proxy that refuses the stream: the page must notice and poll.
        page.route("**/api/v1/orders/*/events", lambda route: route.abort())

        log_in(page, web_server, staff_user, f"/admin/provisioning/order/{order.pk}/change/")
        expect(page.locator("body")).to_have_attribute("data-live-mode", "polling")
        expect(page.locator("#order-live-note")).to_have_text("(polling)")
        page.evaluate("window.__sameDocument = true")

        execute_step(first.pk)

        row = page.locator("#order-timeline tr[data-kind=ACTION][data-step=s1]")
        expect(row).to_have_attribute("data-status", StepStatus.SUCCEEDED, timeout=5_000)
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
