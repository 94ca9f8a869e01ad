"""certbot's DNS-01 challenges, answered for a tenant's server without any Cloudflare
credential on it: the server's hook asks the Hub (with its agent's key), the Hub
checks the name is under that tenant's domain and writes the `_acme-challenge` TXT
value in the domain's zone itself."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hub.errors import DomainError
from provisioning.integrations import cloudflare
from provisioning.services.dns import ACME_CHALLENGE_LABEL
from tenants.models import TENANT_LIVE_STATUSES, Tenant

logger = logging.getLogger(__name__)


class ChallengeForbidden(Exception):
    """The name is not under the asking tenant's domain."""


@dataclass(frozen=True)
class Challenge:
    name: str
    value: str
    zone: str


def _challenge(*, tenant_id: int, domain: str) -> tuple[str, cloudflare.Zone]:
    tenant = Tenant.objects.filter(pk=tenant_id, status__in=TENANT_LIVE_STATUSES).only("domain").first()
    domain = domain.lower().rstrip(".").removeprefix("*.")
    if tenant is None or not (domain == tenant.domain or domain.endswith("." + tenant.domain)):
        raise ChallengeForbidden("the name is not under this tenant's domain")
    zone = cloudflare.zone_for_domain(tenant.domain)
    if zone is None:
        raise DomainError(f"{tenant.domain} is in no zone of the account", code="no_zone")
    return f"{ACME_CHALLENGE_LABEL}.{domain}", zone


def acme_challenge_put(*, tenant_id: int, domain: str, validation: str) -> Challenge:
    """Add the value at `_acme-challenge.<domain>` beside any there (the root and the
    wildcard ask for two). Cloudflare's answer to the write is the record as it now
    stands in the zone, so nothing is read back: a read would cost one more call of the
    account's 1,200 per 5 minutes and prove nothing more (what the CA sees is the
    nameservers, which no API read shows)."""
    with cloudflare.short_waits():
        name, zone = _challenge(tenant_id=tenant_id, domain=domain)
        cloudflare.txt_record_add(zone_id=zone.id, name=name, content=validation)
    logger.info("tenant %s: DNS-01 value put at %s in zone %s", tenant_id, name, zone.name)
    return Challenge(name=name, value=validation, zone=zone.name)


def acme_challenge_remove(*, tenant_id: int, domain: str, validation: str) -> int:
    """Delete this value at `_acme-challenge.<domain>`, and only this one."""
    with cloudflare.short_waits():
        name, zone = _challenge(tenant_id=tenant_id, domain=domain)
        removed = cloudflare.txt_record_delete(zone_id=zone.id, name=name, content=validation)
    logger.info("tenant %s: DNS-01 value removed from %s in zone %s (%d)", tenant_id, name, zone.name, removed)
    return removed
