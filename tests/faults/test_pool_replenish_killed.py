"""The pool replenishment SIGKILLed mid-run (after it bought at Hetzner, before it
recorded the purchase), then run again: the shortfall is bought exactly once.

Beat itself only sends the `monitoring.replenish_pool` message; the run that can die
half-way is the process executing it. Here two processes run the task's code one after
the other, as two beat ticks executed by two workers would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.pipeline.models import Job
from provisioning.models import PoolPurchase, PurchaseStatus, Server, ServerProvider, ServerStatus
from sandbox.control import Sandbox, _http_json, free_port
from tests import conftest as root_conftest
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.django_db(transaction=True)]

SHORTFALL = 3
RUN = "from monitoring.tasks import replenish_pool; print('RESULT', replenish_pool())"


@pytest.fixture(scope="module")
def slow_hetzner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A Hetzner emulator whose servers take seconds to start: the window in which a
    purchase is made at the provider but not yet recorded in the Hub."""
    box = Sandbox(
        state_dir=tmp_path_factory.mktemp("sandbox"),
        hosts_count=0,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=4.0,
    ).up()
    try:
        yield box
    finally:
        box.down()


def replenisher_env(box: Sandbox) -> dict[str, str]:
    sandbox_env = box.env
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hub.settings_test",
        "DATABASE_URL": root_conftest.test_database_url(),
        "HCLOUD_API_ENDPOINT": sandbox_env["HCLOUD_API_ENDPOINT"],
        "HCLOUD_TOKEN": sandbox_env["HCLOUD_TOKEN"],
        "HCLOUD_SSH_PORT": sandbox_env["HCLOUD_SSH_PORT"],
        "HUB_SSH_PRIVATE_KEY_PATH": sandbox_env["HUB_SSH_PRIVATE_KEY_PATH"],
        "HCLOUD_POLL_INTERVAL": "0.2",
        "HETZNER_RATE_LIMIT": "100000",
        "HETZNER_RATE_PERIOD": "1",
        "HETZNER_RATE_BURST": "10000",
        "POOL_TARGET_EU_BUILD": str(SHORTFALL),
        "POOL_TARGET_US_BUILD": "0",
        "POOL_NETCUP": "",
        "POOL_REPLENISH_MAX_PER_RUN": "5",
        "PYTHONUNBUFFERED": "1",
    }


def replenisher(box: Sandbox, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", RUN],
            cwd=ROOT,
            env=replenisher_env(box),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def creations(box: Sandbox) -> list[dict[str, Any]]:
    return [r for r in box.requests("hetzner") if r["method"] == "POST" and r["path"] == "/v1/servers"]


def at_provider(box: Sandbox) -> list[dict[str, Any]]:
    servers = _http_json("GET", f"{box.hetzner_url}/__sandbox/servers")["servers"]
    return [s for s in servers if s["labels"].get("pool") == "eu-build"]


def test_replenishment_killed_after_buying_then_run_again_buys_the_shortfall_exactly_once(
    slow_hetzner: Sandbox, tmp_path: Path
) -> None:
    box = slow_hetzner
    box.clear_requests()

    # given an empty eu/build pool (target 3) and a run that has just bought its first server
    first = replenisher(box, tmp_path / "first.log")
    try:
        wait_for(lambda: creations(box) or first.poll() is not None, timeout=60, message="the first purchase")
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]

        # when it is SIGKILLed while it waits for that server to run
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
    assert len(at_provider(box)) == 1
    # the purchase's transaction died with the process: nothing recorded the server
    assert not Server.objects.filter(provider=ServerProvider.HETZNER).exclude(provider_id="").exists()

    # and the next tick runs it again (a dead run's lock goes with its connection)
    def second_run() -> str:
        log = tmp_path / "second.log"
        proc = replenisher(box, log)
        try:
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        output = log.read_text()
        assert proc.returncode == 0, output[-3000:]
        return output if "'ran': True" in output else ""

    output = wait_for(second_run, timeout=150, interval=0.5, message="a second run that holds the lock")

    # then the shortfall was bought exactly once: 3 servers at Hetzner, 3 rows, 3 purchases
    assert "'decided': {}" in output, output[-2000:]
    bought = at_provider(box)
    assert len(bought) == SHORTFALL, bought
    assert len(creations(box)) == SHORTFALL
    assert len({s["labels"]["replenish"] for s in bought}) == SHORTFALL
    servers = list(Server.objects.filter(provider=ServerProvider.HETZNER, region="eu", tier="build"))
    assert len(servers) == SHORTFALL
    assert {s.provider_id for s in servers} == {str(s["id"]) for s in bought}
    assert all(s.status == ServerStatus.PREPARING for s in servers)
    purchases = list(PoolPurchase.objects.all())
    assert len(purchases) == SHORTFALL
    assert {p.status for p in purchases} == {PurchaseStatus.STARTED}
    assert len({p.idempotency_key for p in purchases}) == SHORTFALL
    jobs = Job.objects.filter(pipeline="prepare_server", subject_type="server")
    assert sorted(int(j.subject_id) for j in jobs) == sorted(s.pk for s in servers)
