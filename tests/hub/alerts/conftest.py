"""Fixtures of the alert tests: a local webhook receiver, and a monitoring worker that
mails into a directory."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from sandbox.control import free_port
from tests.conftest import WorkerProcess, queues_taken_from_session_worker


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
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module", autouse=True)
def monitoring_queue_to_ourselves() -> Iterator[None]:
    """The session worker, if an earlier module started it, must not run this module's
    notifications (another mail backend)."""
    with queues_taken_from_session_worker(["monitoring"], purge=True):
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
                "DJANGO_SETTINGS_MODULE": "tests.hub.alerts.worker_settings",
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
