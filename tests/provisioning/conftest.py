"""Provisioning runs against the sandbox: real sshd hosts on 127.0.0.x, the Hetzner
and Cloudflare emulators as real HTTP servers driven by the real client libraries,
a real Celery worker (threads pool, as production's provisioning workers) and the Hub
served on loopback so the deployed agents can register and heartbeat."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import override_settings

from provisioning.models import Server, ServerProvider, ServerStatus
from sandbox.control import Sandbox, free_port
from tests.conftest import WorkerProcess, queues_taken_from_session_worker

# Every test takes hosts of its own: a host that carried a tenant keeps its agent.
HOSTS = 20

FAST = {
    "PROVISIONING_RETRY_BASE_DELAY": "0.3",
    "PROVISIONING_SCRIPT_ATTEMPTS": "2",
    "PROVISIONING_AGENT_WAIT_SECONDS": "60",
    "PROVISIONING_SSH_WAIT_SECONDS": "60",
    "PROVISIONING_MANUAL_POLL_SECONDS": "120",
    "HCLOUD_POLL_INTERVAL": "0.2",
    # A provider's 5xx is resent after 25-50 ms, 50-100 ms, ...: the tests of outages and
    # stuck rollbacks wait on these waits, not on what they check.
    "PROVIDER_SERVER_ERROR_BACKOFF": "0.05",
    "AGENT_HEARTBEAT_INTERVAL": "2",
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(
        state_dir=tmp_path_factory.mktemp("sandbox"),
        hosts_count=HOSTS,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=0.2,
    ).up()
    yield box
    box.down()


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
def hub_settings(sandbox: Sandbox, live_server: Any, mail_dir: Path) -> Iterator[dict[str, str]]:
    """The settings of the test process and the worker: pointed at the sandbox."""
    values = {
        **sandbox.env,
        **FAST,
        "HUB_PUBLIC_URL": live_server.url,
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
    }
    typed: dict[str, Any] = {k: v for k, v in values.items() if k not in FAST and not k.startswith("EMAIL")}
    typed.update(
        {
            "HCLOUD_SSH_PORT": int(sandbox.env["HCLOUD_SSH_PORT"]),
            "BACKUP_TARGET_PORT": int(sandbox.env["BACKUP_TARGET_PORT"]),
            "PROVISIONING_RETRY_BASE_DELAY": 0.3,
            "HCLOUD_POLL_INTERVAL": 0.2,
            "PROVIDER_SERVER_ERROR_BACKOFF": 0.05,
        }
    )
    with override_settings(**typed):
        yield values


@pytest.fixture(scope="module", autouse=True)
def provisioning_queues_to_ourselves() -> Iterator[None]:
    """These tests run their own workers with the sandbox's settings: the session
    worker, if an earlier module started it, must leave their queues alone."""
    with queues_taken_from_session_worker(["provisioning", "default"], purge=True):
        yield


@pytest.fixture(scope="module")
def provisioning_worker(
    hub_settings: dict[str, str], django_db_setup: None, django_db_blocker: Any, worker_logs: Path, broker: Any
) -> Iterator[WorkerProcess]:
    with django_db_blocker.unblock():
        worker = WorkerProcess(
            queues="provisioning,default",
            concurrency=12,
            pool="threads",
            name="provisioning",
            env=hub_settings,
            log_dir=worker_logs,
        ).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def fresh_hosts(sandbox: Sandbox) -> Iterator[Any]:
    unused = list(sandbox.hosts)

    def take(count: int = 1) -> list[Any]:
        assert len(unused) >= count, "the sandbox fixture needs more hosts"
        return [unused.pop(0) for _ in range(count)]

    yield take


def pool_server(host: Any, *, region: str = "eu", tier: str = "build") -> Server:
    return Server.objects.create(
        provider=ServerProvider.NETCUP,
        region=region,
        tier=tier,
        ipv4=host.addr,
        ssh_port=host.port,
        status=ServerStatus.AVAILABLE,
        name=f"netcup-{host.addr}",
    )


def dns_records(sandbox: Sandbox, name: str | None = None, *, zone_id: str | None = None) -> list[dict[str, Any]]:
    """The records of a zone (the Hub's own unless `zone_id` names another), read back
    through the Cloudflare API."""
    env = sandbox.env
    params: dict[str, str | int] = {"per_page": 100, **({"name": name} if name else {})}
    response = requests.get(
        f"{env['CLOUDFLARE_API_BASE']}/zones/{zone_id or env['CLOUDFLARE_ZONE_ID']}/dns_records",
        headers={"Authorization": f"Bearer {env['CLOUDFLARE_API_TOKEN']}"},
        params=params,
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["result"]


def hetzner_servers(sandbox: Sandbox, **labels: str) -> list[dict[str, Any]]:
    env = sandbox.env
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    response = requests.get(
        f"{env['HCLOUD_API_ENDPOINT']}/servers",
        headers={"Authorization": f"Bearer {env['HCLOUD_TOKEN']}"},
        params={"label_selector": selector} if selector else {},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["servers"]


def uses_the_database(request: pytest.FixtureRequest) -> bool:
    """The unit tests here (the scripts' text, the generated stacks) need none of it."""
    node = request.node
    return node.get_closest_marker("django_db") is not None or node.get_closest_marker("integration") is not None


@pytest.fixture(autouse=True)
def releases(request: pytest.FixtureRequest) -> list[Any]:
    """A default release of every component the Hub installs, its digest made up but
    well formed (sandbox/releases.py): what provisioning pins and installs."""
    if not uses_the_database(request):
        return []
    request.getfixturevalue("db")
    from sandbox.releases import seed_releases

    return seed_releases(actor="tests")


@pytest.fixture(autouse=True)
def quiet_worker_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """The database is truncated after each test: the worker must be idle by then, or
    a running step and the truncation deadlock. Unfinished jobs are cancelled."""
    if not uses_the_database(request):
        yield
        return
    request.getfixturevalue("db")
    yield
    from hub.errors import DomainError
    from hub.pipeline.models import JOB_ACTIVE_STATUSES, Job
    from hub.pipeline.services import job_cancel

    def idle() -> bool:
        return not Job.objects.filter(status__in=JOB_ACTIVE_STATUSES).exists()

    deadline = time.monotonic() + 60
    while not idle() and time.monotonic() < deadline:
        for job in Job.objects.filter(status__in=JOB_ACTIVE_STATUSES, stop_requested_at__isnull=True):
            if job.can_cancel():
                with contextlib.suppress(DomainError):  # it may have ended since the query
                    job_cancel(job_id=job.pk, actor="test teardown")
        time.sleep(0.5)
    left = list(Job.objects.filter(status__in=JOB_ACTIVE_STATUSES).values_list("id", "pipeline", "status"))
    assert not left, f"jobs still active after the test: {left}"
    # A step's last commit may still be in flight.
    time.sleep(0.5)
