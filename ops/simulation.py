"""A simulated fleet for benchmarks, load tests and demos: ACTIVE tenants on
placeholder servers, each with a registered agent and its API key, made in bulk."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from hub.audit import audit_record
from hub.db.bulksql import copy_model_rows, ids_reserve
from provisioning.models import Server, ServerProvider, ServerStatus
from tenants.models import AgentCredential, Tenant, TenantStatus
from tenants.secrets import api_key_generate

# Placeholder addresses from the benchmarking range (RFC 2544): never a real host.
PLACEHOLDER_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")


@dataclass(frozen=True)
class SimulatedAgent:
    tenant_id: int
    api_key: str


@transaction.atomic
def fleet_simulate(
    *, count: int, region: str = "eu", plan: str = "build", internal: int = 0, actor: str = "simulate_fleet"
) -> list[SimulatedAgent]:
    """`count` ACTIVE tenants with registered agents; the first `internal` of them are
    internal (rollout canaries). Returns every tenant id with its plaintext API key.
    Written with COPY (hub.db.bulksql): 100,000 tenants in seconds."""
    run = secrets.token_hex(4)
    now = timezone.now()
    first_host = int(PLACEHOLDER_NETWORK.network_address) + 1
    hosts = PLACEHOLDER_NETWORK.num_addresses - 2
    server_ids = ids_reserve(Server, count)
    tenant_ids = ids_reserve(Tenant, count)
    labels = Jsonb({"simulated": True, "run": run})
    copy_model_rows(
        Server,
        columns=("provider", "region", "tier", "ipv4", "status", "provider_id", "name", "labels"),
        ids=server_ids,
        rows=(
            (
                ServerProvider.NETCUP.value,
                region,
                plan,
                str(ipaddress.IPv4Address(first_host + i % hosts)),
                ServerStatus.ALLOCATED.value,
                f"sim-{run}-{i}",
                f"sim-{run}-{i}",
                labels,
            )
            for i in range(count)
        ),
    )
    copy_model_rows(
        Tenant,
        columns=(
            "domain",
            "status",
            "server_id",
            "plan",
            "region",
            "is_internal",
            "agent_hostname",
            "agent_version",
            "registered_at",
            "heartbeat_interval",
        ),
        ids=tenant_ids,
        rows=(
            (
                f"t{i:06d}-{run}.sim.test",
                TenantStatus.ACTIVE.value,
                server_id,
                plan,
                region,
                i < internal,
                f"sim-{run}-{i}",
                "simulated",
                now,
                settings.AGENT_HEARTBEAT_INTERVAL,
            )
            for i, server_id in enumerate(server_ids)
        ),
    )
    keys = [api_key_generate() for _ in range(count)]
    copy_model_rows(
        AgentCredential,
        columns=("tenant_id", "key_prefix", "key_hash"),
        rows=((tenant_id, key.prefix, key.digest) for tenant_id, key in zip(tenant_ids, keys, strict=True)),
    )
    audit_record(
        actor=actor,
        action="fleet.simulate",
        object_type="fleet",
        object_id=run,
        new={"tenants": count, "region": region, "plan": plan, "first_tenant": tenant_ids[0] if tenant_ids else None},
    )
    return [SimulatedAgent(tenant_id=t, api_key=k.plaintext) for t, k in zip(tenant_ids, keys, strict=True)]
