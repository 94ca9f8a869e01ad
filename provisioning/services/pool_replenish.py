"""Warm-pool replenishment. For each (region, tier) target, AVAILABLE + PREPARING
servers (a decided purchase is a PREPARING row) below the target is a shortfall.

Never twice for the same shortfall: the decision is taken under a Postgres lock and
its rows (a PREPARING Server and a PoolPurchase with a unique idempotency key) are
committed before the provider is called; the next decision counts them. The purchase
then buys with the key as a label, after looking for a server with that label (an
earlier attempt may have bought it), holding the purchase row locked. Netcup pools
cannot be bought through an API: a shortfall there is an alert for staff."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from hub.alerts.services import Failing, alert_raise, alert_resolve, alerts_sync
from hub.audit import audit_record
from hub.db.locks import xact_lock
from hub.models import AlertSeverity, AuditEvent
from hub.pipeline.services import job_start
from hub.pipeline.spec import PermanentStepError
from provisioning.catalog import PLANS
from provisioning.integrations import hetzner
from provisioning.models import (
    PURCHASE_OPEN_STATUSES,
    PoolPurchase,
    PurchaseStatus,
    Server,
    ServerProvider,
    ServerStatus,
)
from provisioning.pipeline_names import PREPARE_SERVER
from provisioning.services.pool import server_set_status
from provisioning.services.remote import hub_public_key

logger = logging.getLogger(__name__)

DECIDE_LOCK = "pool.replenish.decide"
POOL_COUNTED_STATUSES = (ServerStatus.AVAILABLE, ServerStatus.PREPARING)
# A pool whose purchase failed for good waits this long before buying again.
FAILED_PURCHASE_BACKOFF = timedelta(hours=1)
# A purchase that keeps failing with errors worth retrying is alerted after this many runs.
PURCHASE_ATTEMPTS_BEFORE_ALERT = 3


@dataclass(frozen=True)
class Shortfall:
    region: str
    tier: str
    target: int
    have: int

    @property
    def short(self) -> int:
        return max(0, self.target - self.have)

    @property
    def key(self) -> str:
        return f"{self.region}-{self.tier}"


def pool_shortfalls() -> list[Shortfall]:
    counts = {
        (row["region"], row["tier"]): row["n"]
        for row in Server.objects.filter(status__in=POOL_COUNTED_STATUSES)
        .values("region", "tier")
        .annotate(n=Count("id"))
        .order_by()
    }
    return [
        Shortfall(region=region, tier=tier, target=target, have=counts.get((region, tier), 0))
        for (region, tier), target in sorted(settings.POOL_TARGETS.items())
    ]


def _new_purchase_rows(shortfall: Shortfall, count: int) -> list[tuple[Server, str]]:
    rows = []
    for _ in range(count):
        key = f"pool-{shortfall.key}-{uuid.uuid4().hex[:16]}"
        server = Server(
            provider=ServerProvider.HETZNER,
            region=shortfall.region,
            tier=shortfall.tier,
            ipv4="0.0.0.0",
            ssh_port=settings.HCLOUD_SSH_PORT,
            status=ServerStatus.PREPARING,
            name=f"hub-pool-{shortfall.key}-{key[-8:]}",
            labels={"pool": shortfall.key, "replenish": key},
        )
        rows.append((server, key))
    return rows


@transaction.atomic
def pool_decide() -> dict[str, Any]:
    """Under the pool lock: count, and write the purchases that fill the Hetzner
    shortfalls (at most POOL_REPLENISH_MAX_PER_RUN); alert about Netcup shortfalls."""
    xact_lock(DECIDE_LOCK)
    now = timezone.now()
    backing_off = set(
        PoolPurchase.objects.filter(status=PurchaseStatus.FAILED, updated_at__gt=now - FAILED_PURCHASE_BACKOFF)
        .values_list("region", "tier")
        .distinct()
    )
    budget = settings.POOL_REPLENISH_MAX_PER_RUN
    netcup: dict[str, Failing] = {}
    rows: list[tuple[Server, str]] = []
    decided: dict[str, int] = {}
    capped: dict[str, int] = {}
    for shortfall in pool_shortfalls():
        if not shortfall.short:
            continue
        if (shortfall.region, shortfall.tier) in settings.POOL_NETCUP:
            plan = PLANS[shortfall.tier]
            netcup[f"pool-{shortfall.key}"] = Failing(
                AlertSeverity.MEDIUM,
                f"the {shortfall.region}/{shortfall.tier} pool has {shortfall.have} of {shortfall.target} servers: "
                f"order {shortfall.short} x Netcup {plan.netcup_plan} ({shortfall.region}) and register "
                f"{'it' if shortfall.short == 1 else 'them'} in the Hub",
            )
            continue
        if (shortfall.region, shortfall.tier) in backing_off:
            continue
        count = min(shortfall.short, budget)
        budget -= count
        if count < shortfall.short:
            capped[shortfall.key] = shortfall.short - count
        if count:
            rows += _new_purchase_rows(shortfall, count)
            decided[shortfall.key] = count
    if rows:
        servers = Server.objects.bulk_create([server for server, _ in rows])
        purchases = PoolPurchase.objects.bulk_create(
            [
                PoolPurchase(idempotency_key=key, server=server, region=server.region, tier=server.tier)
                for server, (_, key) in zip(servers, rows, strict=True)
            ]
        )
        AuditEvent.objects.bulk_create(
            [
                AuditEvent(
                    actor="monitoring",
                    action="pool.purchase_decided",
                    object_type="server",
                    object_id=str(p.server_id),
                    new=ServerStatus.PREPARING,
                    reason=f"pool {p.region}-{p.tier} short; key {p.idempotency_key}",
                )
                for p in purchases
            ]
        )
        logger.warning("pool: decided to buy %s", decided)
    alerts_sync(kind="pool_netcup_shortfall", subject_type="hub", failing=netcup)
    return {"decided": decided, "capped": capped, "netcup_short": sorted(str(k) for k in netcup)}


def pool_purchase_execute(*, purchase_id: int) -> str | None:
    """Buy one decided server (or find the one an earlier attempt bought), wait until it
    runs and start its preparation job. The purchase row stays locked meanwhile, so no
    two workers buy for it. Returns the purchase's new status (None: not ours to do)."""
    with transaction.atomic():
        purchase = (
            PoolPurchase.objects.select_for_update(skip_locked=True)
            .select_related("server")
            .filter(pk=purchase_id, status__in=PURCHASE_OPEN_STATUSES)
            .first()
        )
        if purchase is None:
            return None
        server = purchase.server
        purchase.attempts += 1
        old = purchase.status
        try:
            if purchase.status == PurchaseStatus.PENDING:
                bought = hetzner.server_buy(
                    name=server.name,
                    tier=purchase.tier,
                    region=purchase.region,
                    labels={"pool": f"{purchase.region}-{purchase.tier}", "replenish": purchase.idempotency_key},
                    ssh_public_key=hub_public_key(),
                )
                server.provider_id = bought.provider_id
                server.ipv4 = bought.ipv4 or server.ipv4
                server.labels = bought.labels
                server.save(update_fields=["provider_id", "ipv4", "labels", "updated_at"])
                purchase.status = PurchaseStatus.BOUGHT
            ready = hetzner.server_wait_ready(provider_id=server.provider_id)
            if ready.ipv4 and ready.ipv4 != server.ipv4:
                server.ipv4 = ready.ipv4
                server.save(update_fields=["ipv4", "updated_at"])
            job_start(
                pipeline=PREPARE_SERVER,
                subject_type="server",
                subject_id=server.pk,
                idempotency_key=f"prepare-server-{server.pk}-pool",
                actor="monitoring",
            )
            purchase.status = PurchaseStatus.STARTED
            purchase.error = ""
        except PermanentStepError as exc:
            purchase.status = PurchaseStatus.FAILED
            purchase.error = str(exc)[:2000]
            # Nothing bought: the row goes. Bought but unusable: staff look at it (and it
            # no longer counts towards the pool, so the shortfall is bought again).
            server_set_status(
                server,
                ServerStatus.QUARANTINED if server.provider_id else ServerStatus.DELETED,
                actor="monitoring",
                reason=f"pool purchase failed: {exc}",
            )
            alert_raise(
                subject_type="hub",
                subject_id=f"pool-{purchase.region}-{purchase.tier}",
                kind="pool_purchase_failed",
                severity=AlertSeverity.HARD,
                message=f"buying a {purchase.tier} server in {purchase.region} for the pool failed: {exc}",
            )
        except (hetzner.ProviderError, OSError) as exc:
            # Worth another try on the next run: the label finds what was bought.
            purchase.error = str(exc)[:2000]
            if purchase.attempts >= PURCHASE_ATTEMPTS_BEFORE_ALERT:
                alert_raise(
                    subject_type="hub",
                    subject_id=f"pool-{purchase.region}-{purchase.tier}",
                    kind="pool_purchase_failed",
                    severity=AlertSeverity.HARD,
                    message=(
                        f"buying a {purchase.tier} server in {purchase.region} for the pool failed "
                        f"{purchase.attempts} times (retried every run): {exc}"
                    ),
                )
        purchase.save(update_fields=["status", "attempts", "error", "updated_at"])
        if purchase.status != old:
            audit_record(
                actor="monitoring",
                action="pool.purchase",
                object_type="server",
                object_id=server.pk,
                old=old,
                new=purchase.status,
                reason=purchase.error or f"hetzner {server.provider_id} {server.ipv4}",
            )
        if purchase.status == PurchaseStatus.STARTED:
            alert_resolve(
                subject_type="hub", subject_id=f"pool-{purchase.region}-{purchase.tier}", kind="pool_purchase_failed"
            )
    return purchase.status


def pool_replenish() -> dict[str, Any]:
    summary = pool_decide()
    outcomes: dict[str, int] = {}
    open_ids = list(
        PoolPurchase.objects.filter(status__in=PURCHASE_OPEN_STATUSES).order_by("id").values_list("id", flat=True)
    )
    for purchase_id in open_ids:
        status = pool_purchase_execute(purchase_id=purchase_id)
        if status is not None:
            outcomes[status] = outcomes.get(status, 0) + 1
    return {**summary, "purchases": outcomes}
