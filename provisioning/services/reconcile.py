"""Reconciliation with Hetzner Cloud. Servers labeled managed-by=hub that the Hub
does not know (or has marked DELETED) are orphans: alerted at once, deleted once the
alert is older than RECONCILE_ORPHAN_GRACE_SECONDS. A server still being bought (for
an order in flight or a pool purchase not finished) is known by its label. Hub
servers the provider no longer has are alerted."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from hub.alerts.services import Failing, alerts_sync
from hub.audit import audit_record
from hub.models import Alert, AlertSeverity, AlertStatus
from provisioning.integrations import hetzner
from provisioning.models import (
    ORDER_IN_FLIGHT_STATUSES,
    PURCHASE_OPEN_STATUSES,
    Order,
    PoolPurchase,
    Server,
    ServerProvider,
    ServerStatus,
)

logger = logging.getLogger(__name__)

ORPHAN_KIND = "orphan_server"
MISSING_KIND = "server_missing_at_provider"


def orphan_subject(provider_id: str) -> str:
    return f"hetzner:{provider_id}"


def _label_ints(servers: list[hetzner.ProviderServer], label: str) -> set[int]:
    return {int(s.labels[label]) for s in servers if s.labels.get(label, "").isdigit()}


def reconcile_servers() -> dict[str, Any]:
    now = timezone.now()
    at_provider = hetzner.servers_with_labels({hetzner.MANAGED_LABEL[0]: hetzner.MANAGED_LABEL[1]})
    rows = list(
        Server.objects.filter(provider=ServerProvider.HETZNER)
        .exclude(provider_id="")
        .values_list("id", "provider_id", "status")
    )
    known = {provider_id for _, provider_id, status in rows if status != ServerStatus.DELETED}
    marked_deleted = {provider_id for _, provider_id, status in rows if status == ServerStatus.DELETED}
    orders_in_flight = set(
        Order.objects.filter(pk__in=_label_ints(at_provider, "order"), status__in=ORDER_IN_FLIGHT_STATUSES).values_list(
            "id", flat=True
        )
    )
    purchases_open = set(
        PoolPurchase.objects.filter(
            idempotency_key__in=[s.labels["replenish"] for s in at_provider if "replenish" in s.labels],
            status__in=PURCHASE_OPEN_STATUSES,
        ).values_list("idempotency_key", flat=True)
    )

    def being_bought(server: hetzner.ProviderServer) -> bool:
        order = server.labels.get("order", "")
        return (order.isdigit() and int(order) in orders_in_flight) or server.labels.get("replenish") in purchases_open

    orphans = {
        s.provider_id: s
        for s in at_provider
        if s.provider_id not in known and (s.provider_id in marked_deleted or not being_bought(s))
    }

    grace = timedelta(seconds=settings.RECONCILE_ORPHAN_GRACE_SECONDS)
    first_seen = dict(
        Alert.objects.filter(
            kind=ORPHAN_KIND,
            subject_type="server",
            status=AlertStatus.OPEN,
            subject_id__in=[orphan_subject(pid) for pid in orphans],
        ).values_list("subject_id", "first_seen_at")
    )
    deleted = []
    for provider_id, server in orphans.items():
        seen = first_seen.get(orphan_subject(provider_id))
        if seen is None or now - seen < grace:
            continue
        hetzner.server_delete(provider_id=provider_id)
        deleted.append(provider_id)
        audit_record(
            actor="monitoring",
            action="server.orphan_deleted",
            object_type="hetzner_server",
            object_id=provider_id,
            old=server.labels,
            reason=f"orphan {server.name} ({server.ipv4}) past its grace of {grace}",
        )
        logger.warning("reconcile: deleted orphan hetzner server %s (%s)", provider_id, server.name)

    orphan_failing = {
        orphan_subject(pid): Failing(
            AlertSeverity.MEDIUM,
            (
                f"Hetzner server {pid} ({s.name}, {s.ipv4 or 'no address'}) is labeled managed-by=hub but "
                f"{'the Hub marked it DELETED' if pid in marked_deleted else 'the Hub does not know it'}; "
                f"it is deleted {settings.RECONCILE_ORPHAN_GRACE_SECONDS} s after it was first seen unless claimed"
            ),
        )
        for pid, s in orphans.items()
        if pid not in deleted
    }
    orphan_result = alerts_sync(kind=ORPHAN_KIND, subject_type="server", failing=orphan_failing)

    present = {s.provider_id for s in at_provider}
    missing = {
        server_id: Failing(
            AlertSeverity.HARD,
            f"server {server_id} (Hetzner {provider_id}, {status}) no longer exists at Hetzner",
        )
        for server_id, provider_id, status in rows
        if status != ServerStatus.DELETED and provider_id not in present
    }
    missing_result = alerts_sync(kind=MISSING_KIND, subject_type="server", failing=missing)
    return {
        "at_provider": len(at_provider),
        "orphans": len(orphans),
        "deleted": deleted,
        "orphan_alerts": orphan_result.summary(),
        "missing": missing_result.summary(),
    }
