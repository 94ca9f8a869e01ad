"""Reconciliation against the Hetzner emulator: an orphan labeled managed-by=hub is
found, alerted and deleted after the grace period; a known server is never touched;
a Hub server Hetzner no longer has is alerted."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from hub.models import Alert, AlertSeverity, AlertStatus
from monitoring.services.checks import check_execute
from provisioning.models import OrderStatus, Server, ServerProvider, ServerStatus
from provisioning.services.reconcile import orphan_subject
from sandbox.control import Sandbox, _http_json
from tests.conftest import wait_for
from tests.factories import OrderFactory, ServerFactory
from tests.monitoring.conftest import hetzner_buy

pytestmark = [pytest.mark.django_db, pytest.mark.integration]


def provider_ids(box: Sandbox) -> set[str]:
    return {str(s["id"]) for s in _http_json("GET", f"{box.hetzner_url}/__sandbox/servers")["servers"]}


def deletions(box: Sandbox) -> list[dict[str, Any]]:
    return [r for r in box.requests("hetzner") if r["method"] == "DELETE" and r["path"].startswith("/v1/servers/")]


def open_alert(kind: str, subject_id: str) -> Alert | None:
    return Alert.objects.filter(kind=kind, subject_id=subject_id, status=AlertStatus.OPEN).first()


def test_orphans_are_alerted_then_deleted_after_the_grace_and_known_servers_never_touched(
    hetzner_settings: Sandbox,
) -> None:
    box = hetzner_settings
    # given a server the Hub knows, one it marked DELETED, one being bought for an order
    # in flight, an orphan, and a server in the account that the Hub does not manage
    known = hetzner_buy(name="known-1", labels={"pool": "eu-build"})
    ServerFactory.create(
        provider=ServerProvider.HETZNER,
        region="eu",
        tier="build",
        ipv4=known.ipv4 or "192.0.2.5",
        provider_id=known.provider_id,
        status=ServerStatus.AVAILABLE,
    )
    forgotten = hetzner_buy(name="forgotten-1", labels={"pool": "x"})
    ServerFactory.create(
        provider=ServerProvider.HETZNER,
        region="eu",
        tier="build",
        ipv4="192.0.2.6",
        provider_id=forgotten.provider_id,
        status=ServerStatus.DELETED,
    )
    order = OrderFactory.create(domain="inflight.example", status=OrderStatus.AWAITING_SERVER)
    buying = hetzner_buy(name="order-1", labels={"order": str(order.pk)})
    orphan = box.create_orphan_server(name="orphan-1", labels={"managed-by": "hub"})
    orphan_id = str(orphan["server"]["id"])
    unmanaged = box.create_orphan_server(name="someone-elses", labels={})
    unmanaged_id = str(unmanaged["server"]["id"])
    box.clear_requests()

    with override_settings(RECONCILE_ORPHAN_GRACE_SECONDS=1):
        # when reconciliation runs: the orphans are alerted, nothing is deleted yet
        summary = check_execute(name="reconcile_servers").summary
        assert summary["orphans"] == 2 and summary["deleted"] == []
        for provider_id in (orphan_id, forgotten.provider_id):
            alert = open_alert("orphan_server", orphan_subject(provider_id))
            assert alert is not None and alert.severity == AlertSeverity.MEDIUM
        alert = open_alert("orphan_server", orphan_subject(forgotten.provider_id))
        assert alert is not None
        assert "marked it DELETED" in alert.message
        assert deletions(box) == []

        # and once the grace has passed, they are deleted and their alerts resolved
        wait_for(
            lambda: check_execute(name="reconcile_servers").summary["deleted"],
            timeout=10,
            message="orphans deleted after the grace",
        )

    remaining = provider_ids(box)
    assert orphan_id not in remaining and forgotten.provider_id not in remaining
    assert {known.provider_id, buying.provider_id, unmanaged_id} <= remaining
    assert sorted(r["path"] for r in deletions(box)) == sorted(
        f"/v1/servers/{pid}" for pid in (orphan_id, forgotten.provider_id)
    )
    assert not Alert.objects.filter(kind="orphan_server", status=AlertStatus.OPEN).exists()
    assert Server.objects.get(provider_id=known.provider_id).status == ServerStatus.AVAILABLE


def test_a_hub_server_the_provider_no_longer_has_is_alerted(hetzner_settings: Sandbox) -> None:
    server = ServerFactory.create(
        provider=ServerProvider.HETZNER,
        region="eu",
        tier="build",
        ipv4="192.0.2.7",
        provider_id="99999999",
        status=ServerStatus.ALLOCATED,
    )

    check_execute(name="reconcile_servers")
    check_execute(name="reconcile_servers")

    alert = open_alert("server_missing_at_provider", str(server.pk))
    assert alert is not None and alert.severity == AlertSeverity.HARD and alert.count == 2

    Server.objects.filter(pk=server.pk).update(status=ServerStatus.DELETED)
    with override_settings(RECONCILE_ORPHAN_GRACE_SECONDS=3600):
        check_execute(name="reconcile_servers")
    assert open_alert("server_missing_at_provider", str(server.pk)) is None
