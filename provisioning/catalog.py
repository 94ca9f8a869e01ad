"""What can be ordered: plans (tiers), regions and the tool registry (FACTS.md), and
the checks an order must pass before anything is bought."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Plan:
    tier: str
    ram_mb: int
    cores: int
    disk_gb: int
    hetzner_type: str
    netcup_plan: str
    # AI tokens included per billing period.
    token_pool: int


@dataclass(frozen=True)
class Tool:
    name: str
    ram_mb: int
    disk_gb: int
    needs: tuple[str, ...] = ()
    subdomain: str = ""
    image: str = ""
    port: int = 8080


PLANS: dict[str, Plan] = {
    "lite": Plan("lite", 8192, 4, 256, "cpx21", "RS 1000 G12", 2_000_000),
    "build": Plan("build", 16384, 8, 512, "cpx31", "RS 2000 G12", 5_000_000),
    "scale": Plan("scale", 32768, 12, 1024, "cpx41", "RS 4000 G12", 12_000_000),
    "enterprise": Plan("enterprise", 65536, 16, 2048, "cpx51", "RS 8000 G12", 30_000_000),
}
DEFAULT_PLAN = "build"
REGIONS = ("eu", "us")

# RAM a shared database service costs once per server when any tool needs it.
DATABASE_RAM_MB = {"postgres": 512, "mysql": 384, "redis": 128}
PLATFORM_OVERHEAD_MB = 640

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("nextcloud", 512, 10, ("postgres",), "files", "nextcloud:29", 8081),
        Tool("chatwoot", 768, 5, ("postgres", "redis"), "chat", "chatwoot/chatwoot:v3", 8082),
        Tool("ghost", 256, 3, ("mysql",), "blog", "ghost:5", 8083),
        Tool("odoo", 1024, 10, ("postgres",), "erp", "odoo:17", 8084),
        Tool("calcom", 256, 2, ("postgres",), "cal", "calcom/cal.com:v4", 8085),
        Tool("stalwart", 256, 5, (), "mail", "stalwartlabs/mail-server:v0.10", 8086),
        Tool("keycloak", 512, 2, ("postgres",), "auth", "quay.io/keycloak/keycloak:25", 8087),
        Tool("listmonk", 256, 2, ("postgres",), "lists", "listmonk/listmonk:v3", 8088),
        Tool("nocodb", 256, 2, (), "db", "nocodb/nocodb:0.250", 8089),
        Tool("umami", 192, 1, ("postgres",), "stats", "ghcr.io/umami-software/umami:postgresql-v2", 8090),
        Tool("uptime_kuma", 128, 1, (), "status", "louislam/uptime-kuma:1", 8091),
        Tool("portainer", 128, 1, (), "portainer", "portainer/portainer-ce:2.21", 8092),
        Tool("activepieces", 384, 3, ("postgres",), "flows", "activepieces/activepieces:0.30", 8093),
    )
}

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+[a-z]{{2,63}}$")


def plan(tier: str) -> Plan:
    return PLANS[tier]


def token_pool(tier: str) -> int:
    return int(getattr(settings, "PLAN_TOKEN_POOLS", {}).get(tier, PLANS[tier].token_pool))


def ram_needed_mb(tools: list[str]) -> int:
    chosen = [TOOLS[name] for name in tools]
    databases = {need for tool in chosen for need in tool.needs}
    return PLATFORM_OVERHEAD_MB + sum(t.ram_mb for t in chosen) + sum(DATABASE_RAM_MB.get(d, 0) for d in databases)


def tools_fit(tier: str, tools: list[str]) -> bool:
    chosen = PLANS[tier]
    return ram_needed_mb(tools) <= chosen.ram_mb and sum(TOOLS[t].disk_gb for t in tools) <= chosen.disk_gb


def validate_domain(domain: str) -> str | None:
    if not isinstance(domain, str) or not domain:
        return "domain is required"
    if len(domain) > 253 or domain != domain.lower() or not DOMAIN_RE.match(domain):
        return f"{domain!r} is not a valid domain name (lower-case letters, digits, hyphens, dots)"
    return None


def parse_tools(raw: str | list[str] | None) -> list[str]:
    if raw is None:
        return []
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return [item.strip() for item in items if item and item.strip()]


def validate_order_request(plan: str, region: str, domain: str, tools: list[str]) -> list[str]:
    """Every reason the order cannot be provisioned; empty when it can. (Whether the
    domain is already taken is a question for the database: see orders.)"""
    errors: list[str] = []
    if plan not in PLANS:
        errors.append(f"unknown plan {plan!r}; choose one of {', '.join(PLANS)}")
    if region not in REGIONS:
        errors.append(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
    domain_error = validate_domain(domain)
    if domain_error:
        errors.append(domain_error)
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        errors.append(f"unknown tools: {', '.join(unknown)}")
    if len(set(tools)) != len(tools):
        errors.append("a tool is listed twice")
    if not unknown and plan in PLANS and not tools_fit(plan, tools):
        errors.append(
            f"tools need {ram_needed_mb(tools)} MB of RAM with the platform; "
            f"the {plan} plan has {PLANS[plan].ram_mb} MB"
        )
    return errors
