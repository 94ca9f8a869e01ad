"""Billing fixtures: the Stripe emulator as a real HTTP server on loopback, signed
webhook deliveries through the Hub's real endpoint, and a recording stand-in for the
tenant and provisioning calls billing makes (so billing's own rules are tested on
their own; the tests that need the other apps' real services import them guarded)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import Client

from billing import ports
from billing.models import StripeEvent
from billing.services.events import stripe_event_process
from sandbox import stripe_events
from sandbox.stripe_emulator import StripeEmulator
from tests.conftest import WorkerProcess, queues_taken_from_session_worker

WEBHOOK_URL = "/api/v1/billing/stripe/webhook"


@pytest.fixture(autouse=True)
def billing_staff(settings: Any) -> None:
    settings.BILLING_STAFF_EMAILS = ["billing-staff@example.com"]


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[StripeEmulator]:
    server = StripeEmulator(("127.0.0.1", 0), api_key=settings.STRIPE_SECRET_KEY).start()
    yield server
    server.stop()


# The billing worker's provider endpoints: Stripe is the emulator; Hetzner and
# Cloudflare point at a closed loopback port, so nothing a test starts can leave
# the machine.
CLOSED_PORT = "http://127.0.0.1:9"


@pytest.fixture(scope="module", autouse=True)
def billing_queues_to_ourselves() -> Iterator[None]:
    """Billing's events are handled by the billing worker (pointed at the Stripe
    emulator), and the provisioning jobs that paid orders start must stay unrun: the
    session worker, if running, leaves both queues alone until the module ends."""
    with queues_taken_from_session_worker(["billing", "provisioning"], purge=True):
        yield


@pytest.fixture(scope="session")
def billing_worker(
    django_db_setup: None,
    django_db_blocker: Any,
    broker: Any,
    worker_logs: Path,
    stripe_server: StripeEmulator,
) -> Iterator[WorkerProcess]:
    """A real Celery worker on the `billing` queue only. Orders made by checkouts
    start provisioning jobs; their steps stay in the broker (their queues are not
    consumed here, and the broker is flushed after the session) instead of running
    against real providers."""
    env = {
        "STRIPE_API_BASE": stripe_server.base_url,
        "BILLING_STAFF_EMAILS": "billing-staff@example.com",
        "HCLOUD_API_ENDPOINT": f"{CLOSED_PORT}/v1",
        "CLOUDFLARE_API_BASE": f"{CLOSED_PORT}/client/v4",
    }
    with django_db_blocker.unblock():
        worker = WorkerProcess(log_dir=worker_logs, name="billing", queues="billing", env=env).start()
    yield worker
    worker.stop()


@dataclass
class StripeSandbox:
    server: StripeEmulator

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def control(self, method: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.request(method, f"{self.base_url}/__sandbox/{action}", json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def meter_events(self) -> list[dict[str, Any]]:
        return self.control("GET", "meter_events")["meter_events"]

    def checkout_sessions(self) -> list[dict[str, Any]]:
        return self.control("GET", "checkout_sessions")["checkout_sessions"]


@pytest.fixture
def stripe_sandbox(stripe_server: StripeEmulator, settings: Any) -> StripeSandbox:
    """The emulator, emptied, with the Hub's `stripe` library pointed at it."""
    sandbox = StripeSandbox(stripe_server)
    sandbox.control("POST", "reset")
    settings.STRIPE_API_BASE = stripe_server.base_url
    return sandbox


def post_delivery(client: Client, body: bytes, headers: dict[str, str]) -> Any:
    extra: dict[str, Any] = {
        f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items() if k.lower() != "content-type"
    }
    return client.post(WEBHOOK_URL, data=body, content_type="application/json", **extra)


@pytest.fixture
def deliver(client: Client) -> Callable[..., Any]:
    """Send an event to the webhook as Stripe would (signed with the Hub's secret)."""

    def send(event: dict[str, Any], *, secret: str | None = None, timestamp: int | None = None) -> Any:
        body, headers = stripe_events.signed_delivery(event, secret or settings.STRIPE_WEBHOOK_SECRET, timestamp)
        return post_delivery(client, body, headers)

    return send


@pytest.fixture
def deliver_and_process(deliver: Callable[..., Any]) -> Callable[..., StripeEvent]:
    """Deliver an event and handle it in this process (tests without a worker)."""

    def send(event: dict[str, Any]) -> StripeEvent:
        response = deliver(event)
        assert response.status_code == 200, response.content
        row = StripeEvent.objects.get(stripe_event_id=event["id"])
        stripe_event_process(event_row_id=row.pk)
        row.refresh_from_db()
        return row

    return send


def assert_order_refused(row: StripeEvent, fragments: list[str]) -> None:
    """A paid checkout whose order cannot be provisioned: the order is FAILED with every
    reason, staff are alerted (an open alert, emailed), no provisioning job exists, and
    the event is handled (not failed and retried)."""
    from hub.alerts.models import Notification, NotificationChannel
    from hub.models import Alert, AlertSeverity, AlertStatus
    from hub.pipeline.models import Job
    from provisioning.models import Order, OrderStatus

    assert (row.status, row.attempts, row.next_attempt_at) == ("SUCCEEDED", 1, None), row.error
    order = Order.objects.get(source_event_id=row.stripe_event_id)
    assert order.status == OrderStatus.FAILED
    for fragment in fragments:
        assert fragment in order.failure_reason
    assert order.job_id is None
    assert not Job.objects.filter(subject_type="order", subject_id=str(order.pk)).exists()
    alert = Alert.objects.get(subject_type="order", subject_id=str(order.pk), kind="order_invalid")
    assert (alert.status, alert.severity) == (AlertStatus.OPEN, AlertSeverity.MEDIUM)
    assert order.failure_reason in alert.message
    assert list(Notification.objects.filter(alert=alert).values_list("channel", flat=True)) == [
        NotificationChannel.EMAIL
    ]


@dataclass
class FakeTenancy:
    """Records what billing asked of the tenants and provisioning apps."""

    calls: list[tuple[str, int | None, str]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    tenants: dict[str, int] = field(default_factory=dict)
    backup_confirmed: bool = True

    def of(self, kind: str) -> list[int | None]:
        return [tenant for name, tenant, _ in self.calls if name == kind]


@pytest.fixture
def fake_tenancy(monkeypatch: pytest.MonkeyPatch) -> FakeTenancy:
    fake = FakeTenancy()

    def tenant_for_subscription(*, stripe_subscription_id: str, domain: str) -> int | None:
        return fake.tenants.get(stripe_subscription_id)

    def suspend(*, tenant_id: int, reason: str) -> None:
        fake.calls.append(("suspend", tenant_id, reason))

    def resume(*, tenant_id: int, reason: str) -> None:
        fake.calls.append(("resume", tenant_id, reason))

    def backup_confirmed(*, tenant_id: int, since: datetime) -> bool:
        fake.calls.append(("backup_check", tenant_id, since.isoformat()))
        return fake.backup_confirmed

    def deprovision(*, tenant_id: int, reason: str) -> None:
        fake.calls.append(("deprovision", tenant_id, reason))

    def create_order(**kwargs: Any) -> dict[str, Any]:
        fake.orders.append(kwargs)
        return kwargs

    monkeypatch.setattr(ports, "tenant_for_subscription", tenant_for_subscription)
    monkeypatch.setattr(ports, "tenant_suspend", suspend)
    monkeypatch.setattr(ports, "tenant_resume", resume)
    monkeypatch.setattr(ports, "tenant_final_backup_confirmed", backup_confirmed)
    monkeypatch.setattr(ports, "tenant_deprovision_start", deprovision)
    monkeypatch.setattr(ports, "order_create_from_checkout", create_order)
    return fake
