"""Redis (the broker and the agents' fast path) restarted empty in the middle of ten
provisionings: every queued and unacked message is gone. Postgres holds the truth, so
the reaper brings every order home, and nothing is done twice."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
from django.test import override_settings

from hub.celery import app
from hub.pipeline.models import Step, StepStatus
from hub.pipeline.reaper import pipeline_reap
from provisioning.models import Order, OrderStatus, Server, ServerStatus
from sandbox.control import Sandbox
from tenants.models import Tenant
from tests.conftest import WorkerProcess, job_of, wait_for
from tests.faults.conftest import PrivateRedis
from tests.provisioning.conftest import (  # noqa: F401 - fixtures, used by name
    dns_records,
    hetzner_servers,
    mail_dir,
    pool_server,
    quiet_worker_after_test,
    releases,
)
from tests.provisioning.conftest import fresh_hosts as fresh_hosts  # a fixture, used by name
from tests.provisioning.conftest import hub_settings as hub_settings  # a fixture, used by name
from tests.provisioning.conftest import sandbox as sandbox  # a fixture, used by name
from tests.provisioning.test_provisioning import ZONE, place

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.django_db(transaction=True)]

ORDERS = 10
DOWNTIME = 3.0
TERMINAL = (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED)


def point_celery_at(url: str) -> None:
    """The test process publishes (orders placed, steps requeued by the reaper) through
    hub.celery.app: its broker URL and cached connection pools are replaced."""
    app.conf.broker_url = app.conf.broker_read_url = app.conf.broker_write_url = url
    # kombu keeps producer pools in a global registry keyed by connection; a pool left
    # there for the old URL would hand out connections from a closed pool later.
    kombu.pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker_and_worker(
    private_redis: PrivateRedis, hub_settings: dict[str, str], worker_logs: Path, django_db_blocker: Any
) -> Iterator[WorkerProcess]:
    """A threads-pool provisioning worker and the test process, both on the private Redis."""
    previous = app.conf.broker_write_url
    point_celery_at(private_redis.url)
    worker = WorkerProcess(
        queues="provisioning,default",
        # Fewer threads than orders: messages wait in Redis, to be lost with it.
        concurrency=4,
        pool="threads",
        name="redis-restart",
        env={**hub_settings, "CELERY_BROKER_URL": private_redis.url, "REDIS_URL": private_redis.url},
        log_dir=worker_logs,
    )
    try:
        with override_settings(REDIS_URL=private_redis.url, RATE_LIMIT_REDIS_URL=private_redis.url):
            with django_db_blocker.unblock():
                worker.start()
            yield worker
    finally:
        worker.stop()
        point_celery_at(previous)


def test_redis_restarted_empty_mid_provisioning_every_order_ends_honestly_and_nothing_twice(
    sandbox: Sandbox,
    fresh_hosts: Any,
    private_redis: PrivateRedis,
    broker_and_worker: WorkerProcess,
) -> None:
    # given ten pool servers and ten orders under way
    hosts = fresh_hosts(ORDERS)
    servers = [pool_server(host) for host in hosts]
    orders = [place(f"acme-redis-{i}") for i in range(ORDERS)]
    ids = [order.pk for order in orders]

    def in_scripts() -> int:
        return (
            Step.objects.filter(
                job__subject_type="order", job__subject_id__in=[str(i) for i in ids], name__startswith="setup_"
            )
            .filter(status__in=(StepStatus.RUNNING, StepStatus.SUCCEEDED))
            .values("job_id")
            .distinct()
            .count()
        )

    wait_for(lambda: in_scripts() >= 3, timeout=90, interval=0.2, message="several orders to be in their scripts")

    # when Redis dies, stays away a few seconds (longer than a publish retries) and
    # comes back empty: queued, unacked and unsent messages are all lost
    private_redis.kill()
    time.sleep(DOWNTIME)
    private_redis.start()

    # then the reaper (beat's job, called here) brings every order to an end
    recovered: list[int] = []

    def all_terminal() -> bool:
        report = pipeline_reap()
        recovered.extend(report.lost_leases + report.lost_messages + report.due_retries)
        return Order.objects.filter(pk__in=ids, status__in=TERMINAL).count() == ORDERS

    try:
        wait_for(all_terminal, timeout=150, interval=0.5, message="every order to end")
    except AssertionError:
        stuck = [
            (
                o.pk,
                o.status,
                [(s.name, s.status, s.attempts) for s in job_of(o).steps.exclude(status=StepStatus.SUCCEEDED)],
            )
            for o in Order.objects.filter(pk__in=ids).exclude(status__in=TERMINAL)
        ]
        raise AssertionError(f"orders not ended: {stuck}\n{broker_and_worker.log()[-4000:]}") from None

    finished = list(Order.objects.filter(pk__in=ids).select_related("job"))
    # the restart did cost messages, and the reaper is what brought them back
    assert recovered, "the restart lost nothing: it came too late to test anything"
    print(
        f"reaper recovered {len(recovered)} steps; outcomes {Counter(o.status for o in finished)}; "
        f"rolled back: {[(o.pk, o.failure_reason) for o in finished if o.status != OrderStatus.FULFILLED]}"
    )
    outcomes = Counter(o.status for o in finished)
    # A Redis outage is a passing fault: every order gets through it (an honest
    # rollback, with its reason, would still be no loss, but none is expected here).
    assert all(o.failure_reason for o in finished if o.status == OrderStatus.ROLLED_BACK)
    assert outcomes == {OrderStatus.FULFILLED: ORDERS}, [(o.pk, o.status, o.failure_reason) for o in finished]

    # no server was given to two orders, and each fulfilled order has its own
    by_server = Counter(o.server_id for o in finished if o.server_id is not None)
    assert all(n == 1 for n in by_server.values()), by_server
    for order in finished:
        if order.status == OrderStatus.FULFILLED:
            assert order.server_id is not None
            server = Server.objects.get(pk=order.server_id)
            assert server.status == ServerStatus.ALLOCATED
            assert Tenant.objects.filter(server=server).count() == 1
    assert (
        Server.objects.filter(pk__in=[s.pk for s in servers])
        .exclude(status__in=(ServerStatus.ALLOCATED, ServerStatus.AVAILABLE, ServerStatus.QUARANTINED))
        .count()
        == 0
    )
    # nothing was bought: no orphan server at the provider
    assert hetzner_servers(sandbox) == []

    # no step succeeded twice, and the effects that can be seen were made once
    for order in finished:
        for step in job_of(order).steps.all():
            successes = [h for h in step.history if h.get("outcome") == "succeeded"]
            assert len(successes) <= 1, (order.pk, step.name, step.history)
    records = Counter(
        r["name"].split(".", 1)[1] if r["name"].startswith("*.") else r["name"] for r in dns_records(sandbox)
    )
    for order in finished:
        expected = 2 if order.status == OrderStatus.FULFILLED else 0
        assert records.get(order.domain, 0) == expected, (order.domain, order.status, records.get(order.domain))
    for host in hosts:
        state = host.root / "etc/ufw/sandbox-state.json"
        if state.exists():
            rules = json.loads(state.read_text())["rules"]
            assert len(rules) == len(set(rules)), (host.addr, rules)
    assert all(o.domain.endswith(ZONE) for o in finished)
