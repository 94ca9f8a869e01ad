"""Provisioning when things break: a worker SIGKILLed mid-step, a host that stops
answering mid-script. Each ends with nothing lost and nothing done twice."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from hub.models import Alert, AlertSeverity, AlertStatus
from hub.pipeline.models import Job, StepKind, StepStatus
from hub.pipeline.reaper import pipeline_reap
from provisioning.models import Order, OrderStatus, Server, ServerStatus
from sandbox.control import Sandbox
from tenants.models import AgentCredential, RegistrationToken, Tenant, TenantStatus
from tests.conftest import WorkerProcess, job_of, wait_for
from tests.provisioning.conftest import dns_records, hetzner_servers, pool_server
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
        lambda: job_of(Order.objects.get(pk=order.pk)).steps.get(name="setup_04-firewall").status == StepStatus.RUNNING,
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
    firewall = job_of(order).steps.get(name="setup_04-firewall")
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
    sandbox_host.slow("sysctl", 4)
    worker = provisioning_worker("impatient", PROVISIONING_SCRIPT_TIMEOUT="6", PROVISIONING_SSH_CONNECT_TIMEOUT="2")
    try:
        order = place("acme-frozen")
        wait_for(
            lambda: (
                job_of(Order.objects.get(pk=order.pk)).steps.get(name="setup_08-hardening").status == StepStatus.RUNNING
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
    # the frozen script, or the next one if the freeze landed just as it ended
    assert "setup_08-hardening" in order.failure_reason or "setup_09-tools" in order.failure_reason
    assert "did not answer" in order.failure_reason or "command timeout" in order.failure_reason
    assert [r for r in dns_records(sandbox) if r["name"].endswith(f"acme-frozen.{ZONE}")] == []
    server.refresh_from_db()
    assert server.status == ServerStatus.QUARANTINED


def _nobody_asked_during_retry_after(log: list[dict[str, Any]]) -> None:
    """Once a 429 was answered, no request went out before its Retry-After (1 s) had
    passed; one already in flight at that moment may arrive together with it."""
    for refused in (r for r in log if r["status"] == 429):
        later = [r["time"] - refused["time"] for r in log if r["time"] - refused["time"] > 0.05]
        if later:
            assert min(later) >= 0.9, f"a request went out during Retry-After: {refused}"


def _each_step_succeeded_at_most_once(order: Order) -> None:
    for step in job_of(order).steps.all():
        outcomes = [entry.get("outcome") for entry in step.history]
        assert outcomes.count("succeeded") <= 1, f"{step.name} ran to success twice: {outcomes}"


def test_provider_429_and_500_bursts_every_order_ends_honestly_and_nothing_is_done_twice(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: Callable[..., WorkerProcess], broker: Any
) -> None:
    # given two pool servers for two orders, and two AUTO orders that must buy theirs
    for host in fresh_hosts(2):
        pool_server(host)
    broker.delete("ratelimit:hetzner:closed", "ratelimit:cloudflare:closed")
    sandbox.clear_requests()
    # and both providers answering bursts of 500 and of 429 (Retry-After: 1)
    sandbox.hetzner_fault(status=500, count=3, method="POST", path="/v1/servers")
    sandbox.hetzner_fault(status=429, count=4, path="/v1/servers", retry_after=1)
    sandbox.cloudflare_fault(status=500, count=3, method="POST")
    sandbox.cloudflare_fault(status=429, count=3, retry_after=1)
    worker = provisioning_worker("bursts")
    try:
        orders = [place(f"burst-pool-{i}") for i in range(2)]
        orders += [place(f"burst-auto-{i}", plan="lite", region="us", tools=["uptime_kuma"]) for i in range(2)]
        orders = [wait_reaping(o, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED)) for o in orders]
    finally:
        worker.stop()
        sandbox.clear_faults()

    # then the bursts were really served, and waited out as told
    hetzner_log, cloudflare_log = sandbox.requests("hetzner"), sandbox.requests("cloudflare")
    assert {500, 429} <= {r["status"] for r in hetzner_log}
    assert {500, 429} <= {r["status"] for r in cloudflare_log}
    _nobody_asked_during_retry_after(hetzner_log)
    _nobody_asked_during_retry_after(cloudflare_log)
    # and every order got through them: passing faults are retried, not rolled back
    assert [o.status for o in orders] == [OrderStatus.FULFILLED] * 4, [(o.pk, o.failure_reason) for o in orders]
    # and nothing was done twice: one server per order, one bought per AUTO order,
    # two DNS records per domain, no step that succeeded twice
    assert len({o.server_id for o in orders}) == 4
    for order in orders[2:]:
        (bought,) = hetzner_servers(sandbox, order=str(order.pk))
        assert order.server_id is not None
        assert Server.objects.get(pk=order.server_id).provider_id == str(bought["id"])
    for order in orders:
        assert len(dns_records(sandbox, order.domain)) + len(dns_records(sandbox, f"*.{order.domain}")) == 2
        _each_step_succeeded_at_most_once(order)


def test_a_provider_outage_longer_than_the_retries_rolls_back_and_leaves_no_orphan(
    sandbox: Sandbox, provisioning_worker: Callable[..., WorkerProcess]
) -> None:
    # given Cloudflare refusing every record creation for longer than the step retries
    sandbox.cloudflare_fault(status=500, count=1000, method="POST")
    worker = provisioning_worker("outage")
    try:
        order = place("burst-outage", plan="lite", region="us", tools=["uptime_kuma"])
        order = wait_reaping(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    finally:
        worker.stop()
        sandbox.clear_faults()

    # then the order is honestly rolled back, and the server bought for it is gone
    assert order.status == OrderStatus.ROLLED_BACK
    assert "create_dns" in order.failure_reason
    assert hetzner_servers(sandbox, order=str(order.pk)) == []
    assert Server.objects.filter(bought_for_order=order).get().status == ServerStatus.DELETED
    assert dns_records(sandbox, order.domain) == []


def test_an_order_past_its_deadline_is_stopped_and_rolled_back(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: Callable[..., WorkerProcess]
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)
    sandbox.host(host.addr).slow("ufw default", 4)
    worker = provisioning_worker("late")
    try:
        order = place("acme-late")
        wait_for(
            lambda: (
                job_of(Order.objects.get(pk=order.pk)).steps.get(name="setup_04-firewall").status == StepStatus.RUNNING
            ),
            timeout=60,
            message="the firewall script to be running",
        )
        # when the job's deadline passes while a script runs
        Job.objects.filter(pk=job_of(order).pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
        order = wait_reaping(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    finally:
        worker.stop()

    # then the running script finished, nothing after it ran, and the order was undone
    assert order.status == OrderStatus.ROLLED_BACK
    assert "deadline" in order.failure_reason
    assert job_of(order).steps.get(name="setup_04-firewall").status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATED)
    assert job_of(order).steps.get(name="setup_05-ssh-hardening").status == StepStatus.SKIPPED
    assert dns_records(sandbox, order.domain) == []
    server.refresh_from_db()
    assert server.status == ServerStatus.QUARANTINED


def test_a_rollback_that_cannot_finish_fails_the_order_with_a_hard_alert(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: Callable[..., WorkerProcess]
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    # given a script that keeps failing, and Cloudflare refusing to delete anything
    sandbox.host(host.addr).fail("sysctl", 99)
    sandbox.cloudflare_fault(status=500, count=1000, method="DELETE")
    worker = provisioning_worker("stuck-undo", PROVISIONING_COMPENSATION_ATTEMPTS="3")
    try:
        order = place("acme-stuck")
        order = wait_reaping(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    finally:
        worker.stop()
        sandbox.clear_faults()
        sandbox.host(host.addr).clear_faults()

    # then the order does not claim a clean rollback, and staff are told loudly
    assert order.status == OrderStatus.FAILED
    undo = job_of(order).steps.get(kind=StepKind.COMPENSATION, compensates__name="create_dns")
    assert (undo.status, undo.attempts) == (StepStatus.FAILED, 3)
    alert = Alert.objects.get(subject_type="order", subject_id=str(order.pk), kind="provisioning_rollback_failed")
    assert (alert.severity, alert.status) == (AlertSeverity.HARD, AlertStatus.OPEN)
    assert len(dns_records(sandbox, order.domain)) == 1, "the record it could not delete is still there"


def test_an_agent_handover_that_fails_for_good_revokes_what_it_issued(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: Callable[..., WorkerProcess]
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)
    # given the agent's script failing at its very end, after the token went out
    sandbox.host(host.addr).fail("systemctl restart hub-agent", 99)
    worker = provisioning_worker("handover")
    try:
        order = place("acme-handover")
        order = wait_reaping(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    finally:
        worker.stop()
        sandbox.host(host.addr).clear_faults()

    # then the order is rolled back, and nothing the handover issued still works
    assert order.status == OrderStatus.ROLLED_BACK
    assert "agent_handover" in order.failure_reason
    assert job_of(order).steps.get(name="agent_handover").status == StepStatus.FAILED
    tenant = Tenant.objects.get(domain=order.domain)
    assert tenant.status == TenantStatus.DEPROVISIONED, "the domain is free for a new order"
    now = timezone.now()
    assert RegistrationToken.objects.filter(tenant=tenant).exists()
    assert not any(token.can_use(now=now) for token in RegistrationToken.objects.filter(tenant=tenant))
    assert not any(key.is_usable(now=now) for key in AgentCredential.objects.filter(tenant=tenant))
    server.refresh_from_db()
    assert server.status == ServerStatus.QUARANTINED
