"""A revoked key stops working on every web process within seconds: two gunicorn
workers with warm key caches, a revocation made elsewhere, no restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tenants.services import agent_key_revoke, agent_key_rotate
from tests import conftest as hub_fixtures
from tests.conftest import ROOT, wait_for
from tests.tenants.conftest import HEARTBEAT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    """`gunicorn hub.wsgi` with two worker processes against the test database."""
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hub.settings_test",
        "DATABASE_URL": hub_fixtures.test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    proc = subprocess.Popen(
        # No control socket: its path is per user, shared with the other shards' web processes.
        [sys.executable, "-m", "gunicorn", "hub.wsgi", "-w", "2", "-b", f"127.0.0.1:{port}", "--no-control-socket"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        # Each worker imports the Hub after it forks; with the other shards on the same 2
        # cores that took over 30 s once in CI (2026-12-07), as the other web fixtures allow.
        wait_for(up, timeout=60, message="gunicorn to answer")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def heartbeats(base: str, api_key: str, count: int = 12) -> set[int]:
    with requests.Session() as session:
        return {
            session.post(
                f"{base}/api/v1/agent/heartbeat",
                json=HEARTBEAT,
                headers={"Authorization": f"Bearer {api_key}", "Connection": "close"},
                timeout=15,
            ).status_code
            for _ in range(count)
        }


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_revocation_and_rotation_reach_every_web_process(web, make_agent, settings):
    revoked, rotated = make_agent(), make_agent()
    # warm both workers' caches (each request goes to whichever worker accepts it)
    assert heartbeats(web, revoked.api_key) == {200}
    assert heartbeats(web, rotated.api_key) == {200}

    # revoke one key; rotate the other with no overlap
    agent_key_revoke(tenant_id=revoked.tenant.pk, actor="staff")
    new_key = agent_key_rotate(tenant_id=rotated.tenant.pk, actor="staff", overlap_seconds=0).api_key

    assert heartbeats(web, revoked.api_key) == {401}
    assert heartbeats(web, rotated.api_key) == {401}
    assert heartbeats(web, new_key) == {200}
