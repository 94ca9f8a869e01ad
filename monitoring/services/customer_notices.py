"""Tenant health reaches the customer as FACTS.md says: a HARD alert at once, a MEDIUM
one once its check has failed HEALTH_CUSTOMER_MEDIUM_AFTER times in a row (the open
alert's count: a check that passes resolves it, so the count restarts), SOFT never.
One notice per episode: the notice's dedup key is the alert's id, and a new episode is
a new alert. Set-based: a constant number of queries whatever the fleet's size."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q

from hub.models import Alert, AlertSeverity, AlertStatus, CustomerNotice
from hub.notices.services import customer_notice_queue
from provisioning.models import Order
from tenants.models import Tenant

TENANT = "tenant"

# What the customer reads for each kind of check (the staff message stays internal).
CUSTOMER_WORDING: dict[str, str] = {
    "heartbeat_stale": "your server has stopped answering us",
    "disk_high": "your server's disk is nearly full",
    "memory_high": "your server is running short of memory",
    "containers_unhealthy": "some of your tools have stopped or are unhealthy",
    "tls_expiring": "the security certificate of your domain needs renewing",
    "backup_failed": "your nightly backup did not complete",
}


def health_dedup_key(alert_id: int) -> str:
    return f"health:alert:{alert_id}"


def health_notices_send() -> dict[str, Any]:
    threshold = settings.HEALTH_CUSTOMER_MEDIUM_AFTER
    due = list(
        Alert.objects.filter(subject_type=TENANT, status=AlertStatus.OPEN, kind__in=list(CUSTOMER_WORDING))
        .filter(Q(severity=AlertSeverity.HARD) | Q(severity=AlertSeverity.MEDIUM, count__gte=threshold))
        .values_list("id", "subject_id", "kind", "severity")
    )
    told = set(
        CustomerNotice.objects.filter(dedup_key__in=[health_dedup_key(row[0]) for row in due]).values_list(
            "dedup_key", flat=True
        )
    )
    due = [row for row in due if health_dedup_key(row[0]) not in told]
    tenant_ids = {int(subject) for _, subject, _, _ in due if subject.isdigit()}
    domains = dict(Tenant.objects.filter(pk__in=tenant_ids).values_list("id", "domain"))
    emails = dict(
        Order.objects.filter(tenant_id__in=tenant_ids)
        .exclude(customer_email="")
        .order_by("tenant_id", "-id")
        .distinct("tenant_id")
        .values_list("tenant_id", "customer_email")
    )
    sent = 0
    for alert_id, subject, kind, severity in due:
        tenant_id = int(subject) if subject.isdigit() else 0
        domain = domains.get(tenant_id)
        if domain is None:
            continue
        urgent = severity == AlertSeverity.HARD
        notice = customer_notice_queue(
            kind=f"health_{kind}",
            subject_type=TENANT,
            subject_id=tenant_id,
            email=emails.get(tenant_id, ""),
            subject=f"{'Urgent: ' if urgent else ''}{domain}: {CUSTOMER_WORDING[kind]}",
            body=(
                f"Hello,\n\nour monitoring noticed that {CUSTOMER_WORDING[kind]} ({domain}).\n"
                f"{'Our team is on it now.' if urgent else 'Our team has been told and is looking into it.'}\n"
                "We will write again only if you need to do something.\n"
            ),
            dedup_key=health_dedup_key(alert_id),
        )
        sent += notice is not None
    return {"due": len(due), "queued": sent}
