"""A simulated fleet for benchmarks, load tests and demos: ACTIVE tenants on
placeholder servers, each with a registered agent and its API key, made in bulk."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub.audit import audit_record
from provisioning.models import Server, ServerProvider, ServerStatus
from tenants.models import AgentCredential, Tenant, TenantStatus
from tenants.secrets import api_key_generate

# Placeholder addresses from the benchmarking range (RFC 2544): never a real host.
PLACEHOLDER_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
BATCH = 2000


@dataclass(frozen=True)
class SimulatedAgent:
    tenant_id: int
    api_key: str


@transaction.atomic
def fleet_simulate(
    *, count: int, region: str = "eu", plan: str = "build", internal: int = 0, actor: str = "simulate_fleet"
) -> list[SimulatedAgent]:
    """`count` ACTIVE tenants with registered agents; the first `internal` of them are
    internal (rollout canaries). Returns every tenant id with its plaintext API key."""
    run = secrets.token_hex(4)
    now = timezone.now()
    first_host = int(PLACEHOLDER_NETWORK.network_address) + 1
    hosts = PLACEHOLDER_NETWORK.num_addresses - 2
    servers = Server.objects.bulk_create(
        [
            Server(
                provider=ServerProvider.NETCUP,
                region=region,
                tier=plan,
                ipv4=str(ipaddress.IPv4Address(first_host + i % hosts)),
                status=ServerStatus.ALLOCATED,
                provider_id=f"sim-{run}-{i}",
                name=f"sim-{run}-{i}",
                labels={"simulated": True, "run": run},
            )
            for i in range(count)
        ],
        batch_size=BATCH,
    )
    tenants = Tenant.objects.bulk_create(
        [
            Tenant(
                domain=f"t{i:06d}-{run}.sim.test",
                status=TenantStatus.ACTIVE,
                server=server,
                plan=plan,
                region=region,
                is_internal=i < internal,
                agent_hostname=f"sim-{run}-{i}",
                agent_version="simulated",
                registered_at=now,
                heartbeat_interval=settings.AGENT_HEARTBEAT_INTERVAL,
            )
            for i, server in enumerate(servers)
        ],
        batch_size=BATCH,
    )
    keys = [api_key_generate() for _ in tenants]
    AgentCredential.objects.bulk_create(
        [
            AgentCredential(tenant=tenant, key_prefix=key.prefix, key_hash=key.digest)
            for tenant, key in zip(tenants, keys, strict=True)
        ],
        batch_size=BATCH,
    )
    audit_record(
        actor=actor,
        action="fleet.simulate",
        object_type="fleet",
        object_id=run,
        new={"tenants": count, "region": region, "plan": plan, "first_tenant": tenants[0].pk if tenants else None},
    )
    return [SimulatedAgent(tenant_id=t.pk, api_key=k.plaintext) for t, k in zip(tenants, keys, strict=True)]
