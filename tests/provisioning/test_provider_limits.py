"""Provider calls pass through one token bucket per provider in Redis, shared by every
worker; a 429 closes it for everyone for Retry-After seconds."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from django.test import override_settings

from provisioning.integrations import hetzner
from provisioning.services import remote
from sandbox.control import Sandbox

pytestmark = [pytest.mark.integration]


def _worker(settings_values: dict[str, Any], calls: int, out: multiprocessing.Queue) -> None:
    import django

    django.setup()
    from django.test import override_settings

    from provisioning.integrations import hetzner

    hetzner._client.cache_clear()
    with override_settings(**settings_values):
        done = 0
        for _ in range(calls):
            hetzner.servers_with_labels({"storm": "test"})
            done += 1
    out.put(done)


def test_a_429_storm_is_waited_out_as_retry_after_says_and_two_workers_stay_under_the_rate(
    sandbox: Sandbox, hub_settings: dict[str, str], broker: redis.Redis
) -> None:
    # given a Hetzner bucket of 8 requests/s (burst 2) shared by two worker processes
    values = {
        "HCLOUD_API_ENDPOINT": sandbox.env["HCLOUD_API_ENDPOINT"],
        "HCLOUD_TOKEN": sandbox.env["HCLOUD_TOKEN"],
        "PROVIDER_RATE_LIMITS": {"hetzner": (8, 1.0, 2), "cloudflare": (1200, 300.0, 200)},
    }
    broker.delete("ratelimit:hetzner:bucket", "ratelimit:hetzner:closed")
    sandbox.clear_requests()
    # and the emulator answering the next 4 server listings with 429, Retry-After: 1
    sandbox.hetzner_fault(status=429, count=4, path="/v1/servers", retry_after=1)

    # when two workers list servers 12 times each
    queue: multiprocessing.Queue = multiprocessing.Queue()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(values, 12, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    done = [queue.get(timeout=90) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)

    # then every call succeeded in the end
    assert done == [12, 12]
    log = [r for r in sandbox.requests("hetzner") if r["path"].startswith("/v1/servers")]
    statuses = [r["status"] for r in log]
    assert statuses.count(429) == 4
    assert statuses.count(200) == 24
    # and once a 429 was answered, nobody asked again before its Retry-After had passed
    # (a request already in flight at that moment may arrive together with it)
    for entry in (r for r in log if r["status"] == 429):
        sent_after = [r["time"] - entry["time"] for r in log if r["time"] - entry["time"] > 0.05]
        if sent_after:
            assert min(sent_after) >= 0.9, "a request went out during Retry-After"
    # and the two together never exceeded the bucket: burst + rate in any second
    times = sorted(r["time"] for r in log)
    for start in times:
        assert len([t for t in times if start <= t < start + 1.0]) <= 2 + 8 + 1


def test_orders_buying_at_once_share_one_registration_of_the_hub_ssh_key(
    sandbox: Sandbox, hub_settings: dict[str, str]
) -> None:
    barrier = threading.Barrier(6)

    def register(_: int) -> int:
        barrier.wait(timeout=10)
        return hetzner.hub_ssh_key_id(remote.hub_public_key())

    with override_settings(HCLOUD_SSH_KEY_NAME=f"hub-race-{uuid.uuid4().hex[:8]}"):
        with ThreadPoolExecutor(max_workers=6) as pool:
            ids = list(pool.map(register, range(6)))
        keys = [key for key in hetzner.client().ssh_keys.get_all() if (key.name or "").startswith("hub-race-")]

    assert len(set(ids)) == 1, "every order got the one key"
    assert [key.id for key in keys] == ids[:1], "registered once"


@pytest.mark.django_db
def test_a_429_storm_moves_the_rate_limit_counters_in_metrics(
    sandbox: Sandbox, hub_settings: dict[str, str], broker: redis.Redis
) -> None:
    from tests.ops.test_metrics import scrape

    values = {
        "HCLOUD_API_ENDPOINT": sandbox.env["HCLOUD_API_ENDPOINT"],
        "HCLOUD_TOKEN": sandbox.env["HCLOUD_TOKEN"],
        "PROVIDER_RATE_LIMITS": {"hetzner": (100, 1.0, 20), "cloudflare": (1200, 300.0, 200)},
    }
    broker.delete("ratelimit:hetzner:bucket", "ratelimit:hetzner:closed")
    before = scrape()
    # given the emulator answering the next 3 server listings with 429, Retry-After: 1
    sandbox.hetzner_fault(status=429, count=3, path="/v1/servers", retry_after=1)

    # when the Hub lists servers (and waits the storm out)
    hetzner._client.cache_clear()
    with override_settings(**values):
        hetzner.servers_with_labels({"storm": "metrics"})
        after = scrape()
    hetzner._client.cache_clear()

    # then every 429 and every wait it caused is counted
    def delta(name: str) -> float:
        return after.value(name, provider="hetzner") - before.value(name, provider="hetzner")

    assert delta("hub_provider_rate_limited_total") == 3
    assert delta("hub_provider_rate_limit_waits_total") >= 1
    assert delta("hub_provider_rate_limit_wait_seconds_total") >= 2.5
    assert delta("hub_provider_requests_total") == 4
