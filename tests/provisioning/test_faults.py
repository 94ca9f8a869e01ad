"""Provisioning when things break: a worker SIGKILLed mid-step, a host that stops
answering mid-script. Each ends with nothing lost and nothing done twice."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from hub.pipeline.models import StepStatus
from hub.pipeline.reaper import pipeline_reap
from provisioning.models import Order, OrderStatus, Server, ServerStatus
from sandbox.control import Sandbox
from tests.conftest import WorkerProcess, wait_for
from tests.provisioning.conftest import dns_records, pool_server
from tests.provisioning.test_provisioning import ZONE, place

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def provisioning_worker(
    start_worker: Callable[..., WorkerProcess], hub_settings: dict[str, str]
) -> Callable[..., WorkerProcess]:
    """Workers with the sandbox's settings, stopped after the test whatever happened."""

    def start(name: str, **env: str) -> WorkerProcess:
        return start_worker(
            queues="provisioning,default", concurrency=4, pool="threads", name=name, env={**hub_settings, **env}
        )

    return start


def wait_reaping(order: Order, statuses: tuple[str, ...], timeout: float = 120) -> Order:
    def reached() -> Order | None:
        pipeline_reap()
        order.refresh_from_db()
        return order if order.status in statuses else None

    return wait_for(reached, timeout=timeout, interval=0.5, message=f"order {order.pk} to reach {statuses}")


def test_worker_killed_mid_script_the_reaper_brings_the_order_home_and_nothing_is_done_twice(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: Callable[..., WorkerProcess]
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)
    sandbox.host(host.addr).slow("ufw default", 3)
    doomed = provisioning_worker("doomed")
    order = place("acme-sigkill")
    wait_for(
        lambda: Order.objects.get(pk=order.pk).job.steps.get(name="setup_04-firewall").status == StepStatus.RUNNING,
        timeout=60,
        message="the firewall script to be running",
    )

    doomed.kill()
    rescuer = provisioning_worker("rescuer")
    try:
        order = wait_reaping(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    finally:
        rescuer.stop()

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    firewall = order.job.steps.get(name="setup_04-firewall")
    assert [entry["outcome"] for entry in firewall.history] == ["lost", "succeeded"]
    assert Server.objects.filter(status=ServerStatus.ALLOCATED, pk=server.pk).count() == 1
    assert Order.objects.filter(server=server).count() == 1
    rules = json.loads((sandbox.host(host.addr).root / "etc/ufw/sandbox-state.json").read_text())["rules"]
    assert len(rules) == len(set(rules)), "the re-run script added no rule twice"
    assert len([r for r in dns_records(sandbox) if r["name"].endswith(f"acme-sigkill.{ZONE}")]) == 2


def test_a_host_that_stops_answering_mid_script_ends_in_an_honest_rollback(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: Callable[..., WorkerProcess]
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)
    sandbox_host = sandbox.host(host.addr)
    sandbox_host.slow("sysctl", 2)
    worker = provisioning_worker("impatient", PROVISIONING_SCRIPT_TIMEOUT="4", PROVISIONING_SSH_CONNECT_TIMEOUT="2")
    try:
        order = place("acme-frozen")
        wait_for(
            lambda: (
                Order.objects.get(pk=order.pk).job.steps.get(name="setup_08-hardening").status == StepStatus.RUNNING
            ),
            timeout=60,
            message="the hardening script to be running",
        )
        sandbox_host.freeze()
        order = wait_reaping(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    finally:
        sandbox_host.thaw()
        worker.stop()

    assert order.status == OrderStatus.ROLLED_BACK
    assert "setup_08-hardening" in order.failure_reason
    assert "did not answer" in order.failure_reason or "command timeout" in order.failure_reason
    assert [r for r in dns_records(sandbox) if r["name"].endswith(f"acme-frozen.{ZONE}")] == []
    server.refresh_from_db()
    assert server.status == ServerStatus.QUARANTINED
