"""A real agent process against the real Hub (gunicorn on loopback, the test database,
the test Redis) and the docker stand-in: register, heartbeat, update, roll back, and
the Hub away for a while."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from tenants import redis_store
from tenants.models import BackupReport, Command, CommandStatus, Tenant, TenantStatus, UsageReport
from tenants.services import command_queue, commands_reflag, registration_token_issue, tenant_create
from tests.agent.conftest import DOCKER_COMMAND, ROOT, container_states, write_faults
from tests.agent.test_loop import BACKUP_STATUS
from tests.conftest import test_database_url as database_url
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHATWOOT = "chat-chatwoot-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HubServer:
    """The Hub's web process (gunicorn), stoppable and restartable on the same port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hub.settings_test",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "REDIS_URL": settings.REDIS_URL,
            "AGENT_THROTTLE_RATE": "10000/minute",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", "gunicorn", "hub.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", "2", "--preload"]
        cmd += ["--graceful-timeout", "5", "--access-logfile", "-"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout=60, message="the Hub to answer /healthz")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the Hub exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


class AgentProcess:
    def __init__(self, *, hub_url: str, token: str, host_root: Path, work: Path) -> None:
        self.env = {
            **os.environ,
            "HUB_AGENT_HUB_URL": hub_url,
            "HUB_AGENT_REGISTRATION_TOKEN": token,
            "HUB_AGENT_STATE_DIR": str(work / "state"),
            "HUB_AGENT_HOST_ROOT": str(host_root),
            "HUB_AGENT_DOMAIN": "acme.example",
            "HUB_AGENT_DOCKER_COMMAND": DOCKER_COMMAND,
            "HUB_AGENT_HEALTH_POLL_INTERVAL": "0.05",
            "HUB_AGENT_HEALTH_TIMEOUT": "5",
            "HUB_AGENT_BACKOFF_BASE": "0.2",
            "HUB_AGENT_BACKOFF_MAX": "1",
            "HUB_AGENT_USAGE_INTERVAL": "0",
            "HUB_AGENT_CONNECT_TIMEOUT": "1",
            "HUB_AGENT_READ_TIMEOUT": "5",
            "HOST_ROOT": str(host_root),
        }
        self.env.pop("HUB_AGENT_CONFIG", None)
        self.log_path = work / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def queued(self) -> list[str]:
        outbox = Path(self.env["HUB_AGENT_STATE_DIR"], "outbox")
        return sorted(p.name for p in outbox.glob("[0-9]*.json"))

    def alive_at(self) -> float:
        """When the agent's loop last went round (it writes this for its healthcheck)."""
        try:
            return float(json.loads(Path(self.env["HUB_AGENT_STATE_DIR"], "alive.json").read_text())["at"])
        except (OSError, ValueError, KeyError):
            return 0.0

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


@pytest.fixture
def hub_server(transactional_db: Any, tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def tenant(settings: Any) -> Tenant:
    # The interval is the tenant's own, set when it is created.
    settings.AGENT_HEARTBEAT_INTERVAL = 1
    return tenant_create(domain="acme.example", status=TenantStatus.ACTIVE)


@pytest.fixture
def start_agent(
    hub_server: HubServer, tenant: Tenant, host_root: Path, tmp_path: Path, tenant_stack: Path
) -> Iterator[Callable[[], AgentProcess]]:
    started: list[AgentProcess] = []

    def start() -> AgentProcess:
        _, token = registration_token_issue(tenant_id=tenant.pk, actor="test")
        agent = AgentProcess(hub_url=hub_server.url, token=token, host_root=host_root, work=tmp_path).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        assert agent.stop() == 0, agent.log()[-3000:]


def staff_get(hub: HubServer, path: str) -> dict[str, Any]:
    user = get_user_model().objects.get_or_create(username="staff", defaults={"is_staff": True})[0]
    token, _ = Token.objects.get_or_create(user=user)
    response = requests.get(hub.url + path, headers={"Authorization": f"Token {token.key}"}, timeout=5)
    response.raise_for_status()
    return response.json()


def wait_for_command(command: Command, predicate: Callable[[Command], bool], *, message: str) -> None:
    """Wait for the command, running the agents sweep a few seconds apart as beat does
    in production: it flags again a command whose Redis flag was lost (the test Redis
    database may be shared with other runs that clear the fast-path keys). On a timeout,
    say where the command got stuck on the Hub's side."""
    last_sweep = time.monotonic()

    def check() -> bool:
        nonlocal last_sweep
        if time.monotonic() - last_sweep > 3:
            last_sweep = time.monotonic()
            commands_reflag()
        return predicate(command)

    try:
        wait_for(check, timeout=30, message=message)
    except AssertionError as exc:
        command.refresh_from_db()
        due = sorted(redis_store.client().smembers(redis_store.COMMANDS_DUE_KEY))
        raise AssertionError(
            f"{exc}: command {command.pk} is {command.status} (delivered {command.delivery_count} times); "
            f"tenants flagged with due commands in Redis: {due}"
        ) from exc


def delivered(command: Command) -> bool:
    command.refresh_from_db()
    return command.status != CommandStatus.PENDING


def finished(command: Command) -> bool:
    command.refresh_from_db()
    return command.status in (CommandStatus.SUCCEEDED, CommandStatus.FAILED)


def test_agent_registers_heartbeats_and_updates_and_a_failed_update_is_rolled_back(
    start_agent: Callable[[], AgentProcess], hub_server: HubServer, tenant: Tenant, host_root: Path
) -> None:
    agent = start_agent()
    wait_for(lambda: Tenant.objects.get(pk=tenant.pk).registered_at, timeout=20, message="registration")

    # an update the Hub hands over in a heartbeat reply
    update = command_queue(
        tenant_id=tenant.pk, type="update", payload={"component": "chatwoot", "version": "4.2"}, actor="test"
    )
    wait_for_command(update, finished, message="the update's result")
    assert update.status == CommandStatus.SUCCEEDED, update.result
    assert update.result is not None
    assert (update.result["version"], update.result["rolled_back"]) == ("4.2", False)
    assert staff_get(hub_server, f"/api/v1/tenants/{tenant.pk}/")["versions"]["chatwoot"] == "4.2"
    assert container_states(host_root)[CHATWOOT]["image"] == "registry.example/chatwoot:4.2"

    # an update whose health check fails
    bad = command_queue(
        tenant_id=tenant.pk, type="update", payload={"component": "chatwoot", "version": "4.3-unhealthy"}, actor="test"
    )
    wait_for_command(bad, finished, message="the failed update's result")
    assert bad.status == CommandStatus.FAILED
    assert bad.result is not None
    assert (bad.result["version"], bad.result["rolled_back"]) == ("4.2", True)
    assert staff_get(hub_server, f"/api/v1/tenants/{tenant.pk}/")["versions"]["chatwoot"] == "4.2"
    container = container_states(host_root)[CHATWOOT]
    assert (container["image"], container["health"]) == ("registry.example/chatwoot:4.2", "healthy")

    assert agent.proc is not None and agent.proc.poll() is None
    assert "Traceback" not in agent.log()


def test_hub_down_for_a_while_then_queued_reports_and_results_arrive_once(
    start_agent: Callable[[], AgentProcess], hub_server: HubServer, tenant: Tenant, host_root: Path
) -> None:
    agent = start_agent()
    wait_for(lambda: Tenant.objects.get(pk=tenant.pk).registered_at, timeout=20, message="registration")
    # a slow pull keeps the update running while the Hub goes away
    write_faults(host_root, {"sleep": {"docker pull": 4}})
    update = command_queue(
        tenant_id=tenant.pk, type="update", payload={"component": "chatwoot", "version": "4.2"}, actor="test"
    )
    wait_for_command(update, delivered, message="delivery")

    hub_server.stop()
    update.refresh_from_db()
    assert update.status == CommandStatus.DELIVERED, "the result beat the Hub's stop"
    backup_file = host_root / "var/backups/hub/backup-status.json"
    backup_file.parent.mkdir(parents=True)
    backup_file.write_text(json.dumps(BACKUP_STATUS))
    usage_file = host_root / "var/lib/hub-ai/usage.json"
    usage_file.parent.mkdir(parents=True)
    usage_file.write_text(json.dumps({"period": "2026-11", "tokens": 4321}))
    wait_for(lambda: len(agent.queued()) == 3, timeout=20, message="the result and the reports queued on disk")
    failures = agent.log().count("heartbeat failed")
    wait_for(lambda: agent.log().count("heartbeat failed") >= failures + 2, timeout=20, message="retries")

    hub_server.start()
    wait_for(lambda: not agent.queued(), timeout=30, message="the outbox to drain")
    # more rounds (the interval is 1 s): nothing may arrive a second time
    drained_at = time.time()
    wait_for(lambda: agent.alive_at() > drained_at + 2, timeout=20, message="two more rounds")

    update.refresh_from_db()
    assert update.result is not None
    assert update.status == CommandStatus.SUCCEEDED and update.result["version"] == "4.2"
    reports = list(BackupReport.objects.filter(tenant=tenant))
    assert len(reports) == 1 and reports[0].duration_seconds == 342
    usage = list(UsageReport.objects.filter(tenant=tenant))
    assert [(u.period, u.tokens) for u in usage] == [("2026-11", 4321)]
    assert agent.proc is not None and agent.proc.poll() is None
