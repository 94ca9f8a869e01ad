"""A tenant's DNS: its records go in the Cloudflare zone of its own domain.

The zone is the account's zone whose name is the longest suffix of the domain. A
domain in no zone of the account gets one (added by the Hub, recorded on the order
so a rollback deletes it), and the order waits in DNS_PENDING, holding its job's
deadline, until the customer has delegated the domain to the two nameservers
Cloudflare assigned (they are told once, by email), or rolls back past
DNS_NAMESERVER_DEADLINE_SECONDS with a notice to the customer and an alert to staff."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from hub.alerts.services import alert_raise
from hub.audit import audit_record
from hub.models import AlertSeverity
from hub.pipeline.context import StepContext
from hub.pipeline.spec import PermanentStepError, StepDeferred
from provisioning import catalog
from provisioning.integrations import cloudflare
from provisioning.integrations.cloudflare import DnsProviderError, Zone
from provisioning.models import Order, OrderStatus, Server
from provisioning.services.orders import order_set_status

WAITING_FOR_NAMESERVERS = "waiting for the customer's nameservers"
ACME_CHALLENGE_LABEL = "_acme-challenge"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} hours" if seconds >= 3600 else f"{seconds:g} seconds"


def wildcard_allowed(zone_name: str) -> bool:
    refused = settings.DNS_NO_WILDCARD_ZONES
    return "*" not in refused and zone_name not in refused


def record_names(*, domain: str, tools: list[str], wildcard: bool = True) -> list[str]:
    """The A records a tenant gets: its domain and `*.domain`, or, in a zone that allows
    no wildcard, its domain and one name per subdomain of its tools."""
    if wildcard:
        return [domain, f"*.{domain}"]
    subdomains = dict.fromkeys(catalog.TOOLS[name].subdomain for name in tools if name in catalog.TOOLS)
    return [domain, *(f"{sub}.{domain}" for sub in subdomains if sub)]


def names_to_remove(*, domain: str, tools: list[str]) -> list[str]:
    """Every A record name the Hub may have written for the domain, whatever the
    wildcard setting was then: a rollback or a deprovisioning removes these, and only
    these, from the customer's zone."""
    names = record_names(domain=domain, tools=tools)
    if settings.DNS_NO_WILDCARD_ZONES:
        names += record_names(domain=domain, tools=tools, wildcard=False)
    return list(dict.fromkeys(names))


# --- the order's zone ---------------------------------------------------------------


def _locked(order_id: int) -> Order:
    return Order.objects.select_for_update().get(pk=order_id)


@transaction.atomic
def order_dns_zone_set(*, order_id: int, zone: Zone | None, name: str, created: bool) -> Order:
    """Record the order's zone (`zone` None: the Hub is about to add `name`, so that an
    attempt that dies after Cloudflare made it still knows the zone is its own)."""
    order = _locked(order_id)
    fields = ["dns_zone_id", "dns_zone_name", "dns_nameservers", "dns_zone_created", "updated_at"]
    if zone is not None and list(zone.name_servers) != order.dns_nameservers:
        # Other nameservers than the customer was told (a zone added again after a
        # rollback and a retry): they are told again, and again if it runs out.
        order.nameservers_notice_sent_at = order.nameservers_expired_notice_sent_at = None
        fields += ["nameservers_notice_sent_at", "nameservers_expired_notice_sent_at"]
    order.dns_zone_id = zone.id if zone else ""
    order.dns_zone_name = zone.name if zone else name
    order.dns_nameservers = list(zone.name_servers) if zone else []
    order.dns_zone_created = created
    order.save(update_fields=fields)
    return order


@transaction.atomic
def order_wait_begin(*, order_id: int, reason: str) -> datetime:
    """The order waits on the outside world; returns since when (kept across checks)."""
    order = _locked(order_id)
    if order.waiting_reason != reason or order.waiting_since is None:
        audit_record(
            actor="provisioning",
            action="order.waiting",
            object_type="order",
            object_id=order.pk,
            old=order.waiting_reason,
            new=reason,
        )
        order.waiting_reason = reason
        order.waiting_since = order.waiting_since or timezone.now()
        order.save(update_fields=["waiting_reason", "waiting_since", "updated_at"])
    assert order.waiting_since is not None
    return order.waiting_since


@transaction.atomic
def order_wait_end(*, order_id: int) -> None:
    order = _locked(order_id)
    if not order.waiting_reason and order.waiting_since is None:
        return
    audit_record(
        actor="provisioning", action="order.waiting", object_type="order", object_id=order.pk, old=order.waiting_reason
    )
    order.waiting_reason = ""
    order.waiting_since = None
    order.save(update_fields=["waiting_reason", "waiting_since", "updated_at"])


def _order_zone(ctx: StepContext, order: Order) -> Zone:
    """The zone the order's records go in: the one recorded, the account's zone of the
    domain, or one the Hub adds now."""
    if order.dns_zone_id:
        zone = cloudflare.zone_get(zone_id=order.dns_zone_id)
        if zone is not None:
            return zone
        ctx.log(f"zone {order.dns_zone_name} ({order.dns_zone_id}) is gone from the account; looking again")
    # A cached "no zone" must not make the Hub add a zone the operator just added.
    zone = cloudflare.zone_for_domain(order.domain) or cloudflare.zone_for_domain(order.domain, fresh=True)
    created = order.dns_zone_created and zone is not None and zone.name == order.dns_zone_name
    if zone is None:
        order_dns_zone_set(order_id=order.pk, zone=None, name=order.domain, created=True)
        zone = cloudflare.zone_create(name=order.domain)
        created = True
        ctx.log(f"{order.domain} is in no zone of the account: added zone {zone.id} ({zone.status})")
    else:
        ctx.log(f"{order.domain} is in zone {zone.name} ({zone.id}, {zone.status})")
    order_dns_zone_set(order_id=order.pk, zone=zone, name=zone.name, created=created)
    return zone


def _wait_for_nameservers(ctx: StepContext, order: Order, zone: Zone) -> None:
    since = order_wait_begin(order_id=order.pk, reason=WAITING_FOR_NAMESERVERS)
    waited = (timezone.now() - since).total_seconds()
    limit = settings.DNS_NAMESERVER_DEADLINE_SECONDS
    servers = ", ".join(zone.name_servers)
    if waited >= limit:
        nameservers_expired(order_id=order.pk)
        raise PermanentStepError(
            f"{order.domain} was not delegated to Cloudflare's nameservers ({servers}) within {_duration(limit)}"
        )
    nameservers_notice_send(order_id=order.pk)
    ctx.log(f"zone {zone.name} is {zone.status}: {WAITING_FOR_NAMESERVERS} ({servers}), {waited:.0f}s so far")
    delay = max(1.0, min(settings.DNS_NAMESERVER_CHECK_SECONDS, limit - waited))
    raise StepDeferred(f"{WAITING_FOR_NAMESERVERS} ({servers})", delay=delay, hold_deadline=True)


# --- the step and its undo ----------------------------------------------------------


def a_records_point(
    *, zone: Zone, domain: str, names: list[str], ipv4: str, log: Callable[[str], None]
) -> list[cloudflare.DnsRecord]:
    """Point the names at ipv4 in the zone: one read, one batch. The batch is all or
    nothing and answers with the records it wrote, so what it answered, with the records
    the read found right, is what the zone holds: done only when that is each name at
    ipv4 and nothing else."""
    written = cloudflare.a_records_ensure(zone_id=zone.id, domain=domain, names=names, ipv4=ipv4)
    for record in written:
        log(f"A {record.name} -> {record.content} in zone {zone.name} ({record.id})")
    missing = sorted(set(names) - {record.name for record in written if record.content == ipv4})
    if missing:
        raise DnsProviderError(f"A {', '.join(missing)} in zone {zone.name}: not at {ipv4} after the batch")
    return written


def create_dns(ctx: StepContext) -> dict[str, Any]:
    order = Order.objects.select_related("server").get(pk=int(ctx.subject_id))
    server: Server | None = order.server
    if server is None:
        raise PermanentStepError(f"order {order.pk} has no server")
    with transaction.atomic():
        order_set_status(_locked(order.pk), OrderStatus.DNS_PENDING)
    zone = _order_zone(ctx, order)
    if not zone.active:
        _wait_for_nameservers(ctx, order, zone)
    order_wait_end(order_id=order.pk)
    names = record_names(domain=order.domain, tools=list(order.tools), wildcard=wildcard_allowed(zone.name))
    written = a_records_point(zone=zone, domain=order.domain, names=names, ipv4=server.ipv4, log=ctx.log)
    with transaction.atomic():
        order_set_status(_locked(order.pk), OrderStatus.DNS_READY)
    return {"dns_zone_id": zone.id, "dns_names": names, "dns_record_ids": [r.id for r in written]}


def delete_dns(ctx: StepContext) -> None:
    """Undo create_dns: the tenant's records leave the zone; a zone the Hub added for
    this order goes altogether."""
    order = Order.objects.get(pk=int(ctx.subject_id))
    if order.dns_zone_created:
        zone_id = order.dns_zone_id
        if not zone_id:
            found = cloudflare.zone_named(order.dns_zone_name, fresh=True)
            zone_id = found.id if found else ""
        if zone_id and cloudflare.zone_delete(zone_id=zone_id):
            ctx.log(f"deleted zone {order.dns_zone_name} ({zone_id}), added for this order, with its records")
        order_dns_zone_set(order_id=order.pk, zone=None, name="", created=False)
        return
    if not order.dns_zone_id:
        ctx.log("no zone was recorded: no records were written")
        return
    names = list(ctx.context.get("dns_names") or ()) or names_to_remove(domain=order.domain, tools=list(order.tools))
    deleted = cloudflare.records_delete(zone_id=order.dns_zone_id, names=names)
    deleted += cloudflare.records_delete(
        zone_id=order.dns_zone_id, names=[f"{ACME_CHALLENGE_LABEL}.{order.domain}"], type_="TXT"
    )
    ctx.log(f"deleted {deleted} DNS records from zone {order.dns_zone_name}")


# --- notices ------------------------------------------------------------------------


def nameservers_notice_send(*, order_id: int) -> bool:
    """Tell the customer, once, which two nameservers to delegate the domain to."""
    with transaction.atomic():
        order = _locked(order_id)
        if order.nameservers_notice_sent_at is not None or not order.customer_email:
            return False
        within = _duration(settings.DNS_NAMESERVER_DEADLINE_SECONDS)
        servers = "".join(f"    {ns}\n" for ns in order.dns_nameservers)
        send_mail(
            subject=f"Action needed: point {order.domain} to Cloudflare's nameservers",
            message=(
                f"To finish setting up your server for {order.domain}, set the nameservers of\n"
                f"{order.domain} at your domain registrar to these two:\n\n{servers}\n"
                "Replace any other nameservers listed there. We check regularly and go on by\n"
                f"ourselves as soon as they are in place. If they are not within {within},\n"
                "the order is cancelled and nothing is kept.\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[order.customer_email],
        )
        order.nameservers_notice_sent_at = timezone.now()
        order.save(update_fields=["nameservers_notice_sent_at", "updated_at"])
    return True


def nameservers_expired(*, order_id: int) -> None:
    """The customer never delegated the domain: staff are alerted and the customer is
    told, once, that the order is rolled back."""
    with transaction.atomic():
        order = _locked(order_id)
        within = _duration(settings.DNS_NAMESERVER_DEADLINE_SECONDS)
        alert_raise(
            subject_type="order",
            subject_id=order.pk,
            kind="dns_nameservers_not_delegated",
            severity=AlertSeverity.MEDIUM,
            message=(
                f"order {order.pk}: {order.domain} was not delegated to {', '.join(order.dns_nameservers)} "
                f"within {within}; the order is rolled back"
            ),
        )
        if order.nameservers_expired_notice_sent_at is not None or not order.customer_email:
            return
        send_mail(
            subject=f"Your order for {order.domain} was cancelled",
            message=(
                f"We could not set up your server for {order.domain}: the domain's nameservers were\n"
                f"not set to {' and '.join(order.dns_nameservers)} within {within}.\n"
                "The order is cancelled and everything prepared for it removed. Reply to this email,\n"
                "or order again once the nameservers are in place.\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[order.customer_email],
        )
        order.nameservers_expired_notice_sent_at = timezone.now()
        order.save(update_fields=["nameservers_expired_notice_sent_at", "updated_at"])
