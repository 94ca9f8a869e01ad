"""Daily provider snapshots through the real `hcloud` client against the Hetzner
emulator and the SOAP client against the Netcup SCP emulator: staggered by tenant over
the day, 3 kept, never a second image for a retried call (a lost answer, a 429 storm),
an alert when a tenant has none."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import override_settings

from hub.models import Alert, AlertStatus
from provisioning.models import Server, ServerProvider, ServerStatus, Snapshot, SnapshotState
from provisioning.services.snapshots import (
    snapshot_slot,
    snapshot_take,
    snapshots_missing,
    snapshots_run,
    tenants_due,
)
from sandbox.control import Sandbox, free_port
from sandbox.faults import HttpFault
from sandbox.netcup import NetcupEmulator
from tenants.models import Tenant
from tests.conftest import wait_for
from tests.factories import healthy_fleet
from tests.monitoring.conftest import hetzner_buy

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 12, 1, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hour, minutes=minute)


def hetzner_server(name: str) -> Server:
    bought = hetzner_buy(name=name, labels={"order": name})
    return Server.objects.create(
        provider=ServerProvider.HETZNER,
        region="eu",
        tier="build",
        ipv4=bought.ipv4,
        provider_id=bought.provider_id,
        name=bought.name,
        status=ServerStatus.ALLOCATED,
    )


def tenant_on(server: Server) -> Tenant:
    (tenant,) = healthy_fleet(1, server=server)
    return tenant


def hetzner_images(box: Sandbox, **labels: str) -> list[dict[str, Any]]:
    env = box.env
    params: dict[str, str | int] = {
        "type": "snapshot",
        "label_selector": ",".join(f"{k}={v}" for k, v in labels.items()),
        "per_page": 50,
    }
    response = requests.get(
        f"{env['HCLOUD_API_ENDPOINT']}/images",
        headers={"Authorization": f"Bearer {env['HCLOUD_TOKEN']}"},
        params=params,
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["images"]


def create_image_calls(box: Sandbox) -> list[int]:
    return [
        r["status"]
        for r in box.requests("hetzner")
        if r["method"] == "POST" and r["path"].endswith("/actions/create_image")
    ]


def test_the_day_is_staggered_by_tenant() -> None:
    server = Server.objects.create(provider=ServerProvider.HETZNER, region="eu", ipv4="203.0.113.9")
    tenants = healthy_fleet(240, server=server)
    slots = {t.pk: snapshot_slot(t.pk) for t in tenants}

    # each hour of the day picks exactly the tenants whose slot falls in it, once
    picked_by_hour = []
    for hour in range(24):
        due = tenants_due(now=at(0, hour, 59))
        picked_by_hour.append({tenant_id for tenant_id, _ in due})
        assert {t for t, _ in due} == {t for t, slot in slots.items() if hour * 60 <= slot < (hour + 1) * 60}
        Snapshot.objects.bulk_create(
            Snapshot(tenant_id=t, server=server, provider="HETZNER", day=DAY.date(), label="x", state="AVAILABLE")
            for t, _ in due
        )
    assert sorted(t for hour in picked_by_hour for t in hour) == sorted(slots)
    # spread: 10 a hour on average, no hour carries a crowd
    assert max(len(h) for h in picked_by_hour) <= 25
    # a run that was missed is caught up by the next: the next day at 05:00, every
    # tenant whose slot is before 05:00 is due at once
    assert {t for t, _ in tenants_due(now=at(1, 5))} == {t for t, slot in slots.items() if slot <= 300}


@pytest.fixture
def hetzner(hetzner_settings: Sandbox) -> Iterator[Sandbox]:
    hetzner_settings.clear_faults()
    hetzner_settings.clear_requests()
    yield hetzner_settings
    hetzner_settings.clear_faults()


def run_day(box: Sandbox, tenant: Tenant, day: int) -> None:
    """A day's runs: the snapshot is taken at its slot, then a later run sees it available."""
    snapshots_run(now=at(day, 23, 59))
    wait_for(lambda: all(i["status"] == "available" for i in hetzner_images(box, tenant=str(tenant.pk))), timeout=10)
    snapshots_run(now=at(day, 23, 59))


def test_three_are_kept_and_older_ones_deleted_at_hetzner(hetzner: Sandbox) -> None:
    tenant = tenant_on(hetzner_server("snap-keep"))

    for day in range(5):
        run_day(hetzner, tenant, day)

    at_hetzner = hetzner_images(hetzner, tenant=str(tenant.pk))
    days = sorted(image["labels"]["day"] for image in at_hetzner)
    assert days == [(DAY + timedelta(days=n)).date().isoformat() for n in (2, 3, 4)]
    rows = Snapshot.objects.filter(tenant=tenant)
    assert Counter(rows.values_list("state", flat=True)) == {SnapshotState.AVAILABLE: 3, SnapshotState.DELETED: 2}
    assert {r.provider_image_id for r in rows if r.state == SnapshotState.AVAILABLE} == {
        str(i["id"]) for i in at_hetzner
    }
    assert all(i["labels"]["managed-by"] == "hub" for i in at_hetzner)
    assert len(create_image_calls(hetzner)) == 5


def test_a_lost_answer_makes_no_second_image(hetzner: Sandbox) -> None:
    server = hetzner_server("snap-lost")
    tenant = tenant_on(server)
    # the emulator makes the image, then drops the connection without answering
    hetzner.hetzner_fault(
        status=201, method="POST", path=f"/v1/servers/{server.provider_id}/actions/create_image", drop_answer=True
    )

    first = snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())
    again = snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())

    images = hetzner_images(hetzner, tenant=str(tenant.pk))
    assert len(images) == 1
    assert first.provider_image_id == again.provider_image_id == str(images[0]["id"])
    assert first.state in (SnapshotState.CREATING, SnapshotState.AVAILABLE)
    assert create_image_calls(hetzner) == [201]
    assert Snapshot.objects.filter(tenant=tenant).count() == 1


def test_a_429_storm_makes_one_image(hetzner: Sandbox) -> None:
    server = hetzner_server("snap-storm")
    tenant = tenant_on(server)
    hetzner.hetzner_fault(
        status=429,
        count=3,
        method="POST",
        path=f"/v1/servers/{server.provider_id}/actions/create_image",
        retry_after=1,
    )

    snapshot = snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())

    assert create_image_calls(hetzner) == [429, 429, 429, 201]
    images = hetzner_images(hetzner, tenant=str(tenant.pk))
    assert [str(i["id"]) for i in images] == [snapshot.provider_image_id]


def test_a_failed_or_missing_snapshot_raises_an_alert(hetzner: Sandbox) -> None:
    server = hetzner_server("snap-fail")
    tenant = tenant_on(server)
    # on the test's own clock (DAY), not today's: a tenant three days old at DAY
    Tenant.objects.filter(pk=tenant.pk).update(created_at=at(-3, 0))
    hetzner.hetzner_fault(status=422, method="POST", path=f"/v1/servers/{server.provider_id}/actions/create_image")

    failed = snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())
    snapshots_missing(now=at(2, 12))

    assert failed.state == SnapshotState.FAILED and failed.error
    open_kinds = set(
        Alert.objects.filter(subject_type="tenant", subject_id=str(tenant.pk), status=AlertStatus.OPEN).values_list(
            "kind", flat=True
        )
    )
    assert open_kinds == {"snapshot_failed", "snapshot_missing"}

    # the next try works: both close once the snapshot is available
    snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())
    wait_for(lambda: hetzner_images(hetzner, tenant=str(tenant.pk))[0]["status"] == "available", timeout=10)
    snapshots_run(now=at(0, 23, 59))
    snapshots_missing(now=at(0, 23, 59))
    assert not Alert.objects.filter(subject_id=str(tenant.pk), status=AlertStatus.OPEN).exists()


# --- Netcup, through its SCP webservice -----------------------------------------------


@pytest.fixture(scope="module")
def netcup_emulator() -> Iterator[NetcupEmulator]:
    emulator = NetcupEmulator(("127.0.0.1", free_port()), login="200000", password="ws-secret")
    emulator.serve_in_thread()
    yield emulator
    emulator.shutdown()
    emulator.server_close()


@pytest.fixture
def netcup(netcup_emulator: NetcupEmulator) -> Iterator[NetcupEmulator]:
    netcup_emulator.faults.clear()
    with override_settings(
        NETCUP_SCP_ENDPOINT=netcup_emulator.endpoint,
        NETCUP_SCP_LOGIN="200000",
        NETCUP_SCP_PASSWORD="ws-secret",
        # not about the rate limit: the bucket must never make these tests wait
        PROVIDER_RATE_LIMITS={**settings.PROVIDER_RATE_LIMITS, "netcup": (100_000, 1.0, 10_000)},
    ):
        yield netcup_emulator


def netcup_server(emulator: NetcupEmulator, name: str) -> Server:
    requests.post(f"{emulator.endpoint.rsplit('/', 1)[0]}/__sandbox/vservers", json={"name": name}, timeout=5)
    return Server.objects.create(
        provider=ServerProvider.NETCUP,
        region="eu",
        ipv4="192.0.2.40",
        provider_id=name,
        name=f"netcup-{name}",
        status=ServerStatus.ALLOCATED,
    )


def netcup_snapshots(emulator: NetcupEmulator, vserver: str) -> list[str]:
    with emulator.lock:
        return sorted(emulator.vservers[vserver].snapshots)


def test_netcup_keeps_three_and_a_lost_answer_makes_no_second(netcup: NetcupEmulator) -> None:
    server = netcup_server(netcup, "v2202612011234567890")
    tenant = tenant_on(server)
    # createSnapshot is served, its answer lost
    netcup.faults.add(HttpFault(status=200, count=1, method="POST", code="createSnapshot", drop_answer=True))

    first = snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())
    again = snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())

    assert first.state == again.state == SnapshotState.AVAILABLE
    assert netcup_snapshots(netcup, server.provider_id) == [first.provider_image_id] == [again.provider_image_id]
    assert netcup.faults.pending() == []

    for day in range(5):
        snapshots_run(now=at(day, 23, 59))

    names = netcup_snapshots(netcup, server.provider_id)
    assert names == [f"hub-tenant-{tenant.pk}-{(DAY + timedelta(days=n)):%Y%m%d}" for n in (2, 3, 4)]
    assert Counter(Snapshot.objects.filter(tenant=tenant).values_list("state", flat=True)) == {
        SnapshotState.AVAILABLE: 3,
        SnapshotState.DELETED: 2,
    }


def test_netcup_refuses_a_wrong_login(netcup: NetcupEmulator) -> None:
    server = netcup_server(netcup, "v2202612019999999999")
    tenant = tenant_on(server)
    with override_settings(NETCUP_SCP_PASSWORD="the-panel-password"):
        failed = snapshot_take(tenant_id=tenant.pk, server_id=server.pk, day=DAY.date())
    assert failed.state == SnapshotState.FAILED
    assert "login failed" in failed.error
    assert netcup_snapshots(netcup, server.provider_id) == []


def test_the_tenants_admin_page_lists_its_snapshots_read_only(client: Any) -> None:
    from django.contrib.auth import get_user_model

    server = Server.objects.create(provider=ServerProvider.HETZNER, region="eu", ipv4="203.0.113.7")
    tenant = tenant_on(server)
    Snapshot.objects.create(
        tenant=tenant,
        server=server,
        provider="HETZNER",
        day=DAY.date(),
        label="hub-tenant-x",
        provider_image_id="987654",
        state=SnapshotState.AVAILABLE,
    )
    staff = get_user_model().objects.create_superuser("snapadmin", "s@example.com", "pw")
    client.force_login(staff)

    page = client.get(f"/admin/tenants/tenant/{tenant.pk}/change/")

    assert page.status_code == 200
    body = page.content.decode()
    assert "provider snapshots" in body.lower() and "987654" in body
    assert 'name="snapshots-0-provider_image_id"' not in body, "read-only: no form field"
