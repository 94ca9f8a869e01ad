"""Fixtures of the monitoring tests: fleets made in bulk, a Hetzner emulator, a local
webhook receiver, and a monitoring worker that mails into a directory."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from provisioning.integrations import hetzner
from provisioning.integrations.hetzner import ProviderServer
from provisioning.services.remote import hub_public_key
from sandbox.control import Sandbox, free_port
from tenants.models import Tenant, TenantStatus
from tests.conftest import WorkerProcess, queues_taken_from_session_worker

_run = 0


def make_tenants(count: int, **fields: Any) -> list[Tenant]:
    """`count` ACTIVE tenants with registered agents, created in one statement."""
    global _run
    _run += 1
    now = timezone.now()
    defaults: dict[str, Any] = {
        "status": TenantStatus.ACTIVE,
        "registered_at": now - timedelta(days=3),
        "heartbeat_interval": 60,
        "last_heartbeat_at": now,
        "disk_percent": 40.0,
        "memory_percent": 50.0,
        "containers": [{"name": "nextcloud", "state": "running", "health": "healthy"}],
        "tls_expires_at": now + timedelta(days=60),
    }
    defaults.update(fields)
    return Tenant.objects.bulk_create(
        [Tenant(domain=f"t{i}-r{_run}.monitoring.test", **defaults) for i in range(count)], batch_size=2000
    )


def hetzner_buy(*, name: str, labels: dict[str, str], tier: str = "build", region: str = "eu") -> ProviderServer:
    """Buy a server through the seam, as the provisioning pipeline does."""
    return hetzner.server_buy(name=name, tier=tier, region=region, labels=labels, ssh_public_key=hub_public_key())


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


class WebhookReceiver:
    """A Slack-compatible webhook on 127.0.0.1 that records what it was sent; it can
    answer 500 to the first N posts."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail_next = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.posts.append(json.loads(body))
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook(webhook_receiver: WebhookReceiver) -> WebhookReceiver:
    with webhook_receiver.lock:
        webhook_receiver.posts.clear()
        webhook_receiver.fail_next = 0
    return webhook_receiver


@pytest.fixture(scope="module")
def hetzner_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The Hetzner Cloud emulator (no sandbox hosts of its own)."""
    box = Sandbox(
        state_dir=tmp_path_factory.mktemp("sandbox"),
        hosts_count=0,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=0.1,
    ).up()
    yield box
    box.down()


@pytest.fixture
def hetzner_settings(hetzner_emulator: Sandbox) -> Iterator[Sandbox]:
    env = hetzner_emulator.env
    with override_settings(
        HCLOUD_API_ENDPOINT=env["HCLOUD_API_ENDPOINT"],
        HCLOUD_TOKEN=env["HCLOUD_TOKEN"],
        HCLOUD_SSH_PORT=int(env["HCLOUD_SSH_PORT"]),
        HCLOUD_POLL_INTERVAL=0.1,
        HUB_SSH_PRIVATE_KEY_PATH=env["HUB_SSH_PRIVATE_KEY_PATH"],
        # The shared bucket lives in the test Redis across runs; these tests are not
        # about the rate limit (provisioning's are), so it must never make them wait.
        PROVIDER_RATE_LIMITS={**settings.PROVIDER_RATE_LIMITS, "hetzner": (100_000, 1.0, 10_000)},
    ):
        yield hetzner_emulator


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module", autouse=True)
def monitoring_queues_to_ourselves() -> Iterator[None]:
    """The session worker, if an earlier module started it, must not run this module's
    notifications (another mail backend) nor the preparation jobs a replenishment
    starts (their rows are truncated under it)."""
    with queues_taken_from_session_worker(["monitoring", "provisioning"], purge=True):
        yield


@pytest.fixture(scope="module")
def notification_worker(
    django_db_setup: None,
    django_db_blocker: Any,
    broker: Any,
    worker_logs: Path,
    mail_dir: Path,
    webhook_receiver: WebhookReceiver,
) -> Iterator[WorkerProcess]:
    """A worker on the monitoring queue that mails into `mail_dir` (the worker is
    another process: locmem mail would be invisible) and posts to the local webhook."""
    with django_db_blocker.unblock():
        worker = WorkerProcess(
            queues="monitoring",
            name="monitoring",
            concurrency=2,
            log_dir=worker_logs,
            env={
                "DJANGO_SETTINGS_MODULE": "tests.monitoring.worker_settings",
                "MONITORING_TEST_MAIL_DIR": str(mail_dir),
                "ALERT_WEBHOOK_URL": webhook_receiver.url,
            },
        ).start()
    yield worker
    worker.stop()


@pytest.fixture
def notifying(notification_worker: WorkerProcess, mail_dir: Path, webhook: WebhookReceiver) -> Iterator[WorkerProcess]:
    """The worker, an empty mailbox and webhook, and the Hub configured to use them."""
    for path in mail_dir.iterdir():
        path.unlink()
    with override_settings(ALERT_WEBHOOK_URL=webhook.url):
        yield notification_worker
