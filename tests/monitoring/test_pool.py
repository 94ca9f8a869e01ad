"""Pool replenishment against the Hetzner emulator: a shortfall of 3 is filled with
exactly 3 servers, even when two runs start together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from hub.models import Alert, AlertSeverity, AlertStatus, Job
from monitoring.services.checks import check_execute
from provisioning.models import PoolPurchase, PurchaseStatus, Server, ServerProvider, ServerStatus
from provisioning.services.pool_replenish import pool_decide, pool_replenish
from sandbox.control import Sandbox, _http_json, free_port
from tests.monitoring.conftest import hetzner_buy

pytestmark = pytest.mark.integration


def server_creations(box: Sandbox) -> list[dict[str, Any]]:
    return [r for r in box.requests("hetzner") if r["method"] == "POST" and r["path"] == "/v1/servers"]


def at_provider(box: Sandbox, pool: str) -> list[dict[str, Any]]:
    """The emulator's own view (its control API lists every server in the account)."""
    servers = _http_json("GET", f"{box.hetzner_url}/__sandbox/servers")["servers"]
    return [s for s in servers if s["labels"].get("pool") == pool]


def together(fn: Callable[[], Any], times: int = 2) -> list[Any]:
    """Run `fn` in `times` threads released at the same moment."""
    barrier = threading.Barrier(times)
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def assert_filled(box: Sandbox, *, region: str, tier: str, count: int) -> None:
    bought = at_provider(box, f"{region}-{tier}")
    assert len(bought) == count
    assert all(s["labels"]["managed-by"] == "hub" and s["labels"]["replenish"] for s in bought)
    servers = list(Server.objects.filter(provider=ServerProvider.HETZNER, region=region, tier=tier))
    assert len(servers) == count
    assert {s.provider_id for s in servers} == {str(s["id"]) for s in bought}
    assert all(s.status == ServerStatus.PREPARING and s.ipv4 != "0.0.0.0" for s in servers)
    assert PoolPurchase.objects.filter(region=region, tier=tier, status=PurchaseStatus.STARTED).count() == count
    jobs = Job.objects.filter(pipeline="prepare_server", subject_type="server")
    assert sorted(int(j.subject_id) for j in jobs if int(j.subject_id) in {s.pk for s in servers}) == sorted(
        s.pk for s in servers
    )


@pytest.mark.django_db(transaction=True)
def test_a_shortfall_of_3_is_filled_with_exactly_3_servers_when_two_runs_start_together(
    hetzner_settings: Sandbox,
) -> None:
    box = hetzner_settings
    box.clear_requests()
    # given an eu/build pool with one server available and a target of 4
    Server.objects.create(
        provider=ServerProvider.NETCUP, region="eu", tier="build", ipv4="192.0.2.1", status=ServerStatus.AVAILABLE
    )
    with override_settings(POOL_TARGETS={("eu", "build"): 4}, POOL_NETCUP=set()):
        # when two beats start the check at the same moment
        results = together(lambda: check_execute(name="pool_replenish"))
        # and it runs again later
        check_execute(name="pool_replenish")

    # then exactly 3 servers were bought, recorded and sent to preparation
    assert len(results) == 2
    assert len(server_creations(box)) == 3
    assert_filled(box, region="eu", tier="build", count=3)


@pytest.mark.django_db(transaction=True)
def test_the_decision_lock_holds_even_without_single_flight(hetzner_settings: Sandbox) -> None:
    box = hetzner_settings
    box.clear_requests()
    with override_settings(POOL_TARGETS={("us", "build"): 3}, POOL_NETCUP=set()):
        # two runs of the service itself (as staff and beat might), not the locked check
        together(pool_replenish)
        pool_replenish()

    assert len(server_creations(box)) == 3
    assert_filled(box, region="us", tier="build", count=3)


@pytest.mark.django_db
def test_a_run_buys_at_most_its_cap(hetzner_settings: Sandbox) -> None:
    box = hetzner_settings
    box.clear_requests()
    with override_settings(POOL_TARGETS={("eu", "scale"): 3}, POOL_NETCUP=set(), POOL_REPLENISH_MAX_PER_RUN=2):
        summary = pool_replenish()
        assert summary["decided"] == {"eu-scale": 2} and summary["capped"] == {"eu-scale": 1}
        assert len(server_creations(box)) == 2
        pool_replenish()
    assert len(server_creations(box)) == 3


@pytest.mark.django_db
def test_a_purchase_whose_server_was_bought_but_not_recorded_is_not_bought_again(hetzner_settings: Sandbox) -> None:
    box = hetzner_settings
    with override_settings(POOL_TARGETS={("us", "lite"): 1}, POOL_NETCUP=set(), POOL_REPLENISH_MAX_PER_RUN=1):
        # given a decided purchase whose server the provider already has (the worker died
        # after the provider call, before the Hub recorded it)
        pool_decide()
        purchase = PoolPurchase.objects.get(region="us", tier="lite")
        hetzner_buy(
            name=purchase.server.name,
            tier="lite",
            region="us",
            labels={"pool": "us-lite", "replenish": purchase.idempotency_key},
        )
        box.clear_requests()

        # when the purchase runs
        pool_replenish()

    # then it found that server by its label instead of buying another
    assert server_creations(box) == []
    assert len(at_provider(box, "us-lite")) == 1
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.STARTED


@pytest.mark.django_db
def test_a_purchase_that_keeps_failing_is_retried_then_alerted(hetzner_settings: Sandbox) -> None:
    box = hetzner_settings
    unreachable = f"http://127.0.0.1:{free_port()}/v1"
    with override_settings(POOL_TARGETS={("eu", "lite"): 1}, POOL_NETCUP=set(), POOL_REPLENISH_MAX_PER_RUN=1):
        # Hetzner cannot be reached for three runs
        with override_settings(HCLOUD_API_ENDPOINT=unreachable):
            for _ in range(3):
                pool_replenish()
        purchase = PoolPurchase.objects.get(region="eu", tier="lite")
        assert (purchase.status, purchase.attempts) == (PurchaseStatus.PENDING, 3)
        alert = Alert.objects.get(kind="pool_purchase_failed", status=AlertStatus.OPEN)
        assert alert.subject_id == "pool-eu-lite" and alert.severity == AlertSeverity.HARD

        # the provider recovers: the same purchase buys its server, the alert resolves
        pool_replenish()
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.STARTED
    assert PoolPurchase.objects.filter(region="eu", tier="lite").count() == 1
    assert len(at_provider(box, "eu-lite")) == 1
    assert not Alert.objects.filter(kind="pool_purchase_failed", status=AlertStatus.OPEN).exists()


@pytest.mark.django_db
def test_a_purchase_the_provider_refuses_fails_alerts_and_waits_before_buying_again(hetzner_settings: Sandbox) -> None:
    box = hetzner_settings
    box.clear_requests()
    box.hetzner_fault(status=403, count=1, method="POST", path="/v1/servers", code="forbidden")
    with override_settings(POOL_TARGETS={("us", "scale"): 1}, POOL_NETCUP=set()):
        pool_replenish()
        purchase = PoolPurchase.objects.get(region="us", tier="scale")
        assert purchase.status == PurchaseStatus.FAILED, purchase.error
        assert purchase.server.status == ServerStatus.DELETED
        alert = Alert.objects.get(kind="pool_purchase_failed", status=AlertStatus.OPEN)
        assert alert.severity == AlertSeverity.HARD

        # the next run does not hammer the provider with the same refused purchase
        pool_replenish()
    assert PoolPurchase.objects.filter(region="us", tier="scale").count() == 1
    assert len(server_creations(box)) == 1
