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


PLANS: dict[str, Plan] = {
    "lite": Plan("lite", 8192, 4, 256, "cpx21", "RS 1000 G12", 2_000_000),
    "build": Plan("build", 16384, 8, 512, "cpx31", "RS 2000 G12", 5_000_000),
    "scale": Plan("scale", 32768, 12, 1024, "cpx41", "RS 4000 G12", 12_000_000),
    "enterprise": Plan("enterprise", 65536, 16, 2048, "cpx51", "RS 8000 G12", 30_000_000),
}
DEFAULT_PLAN = "build"
REGIONS = ("eu", "us")


@dataclass(frozen=True)
class Healthcheck:
    """Compose's healthcheck: `test` runs inside the container, so it may only use what
    the image itself carries (curl, wget, node, bash, the server's own client)."""

    test: tuple[str, ...]
    interval: str = "30s"
    timeout: str = "10s"
    retries: int = 5
    start_period: str = "60s"


def _http(url: str, *, client: str = "curl", start_period: str = "60s") -> Healthcheck:
    commands = {
        "curl": ("CMD", "curl", "-fsS", "-o", "/dev/null", url),
        "wget": ("CMD", "wget", "-q", "--spider", url),
        # Node images carry neither curl nor wget; node 18+ has fetch.
        "node": (
            "CMD",
            "node",
            "-e",
            f"fetch('{url}').then(r => process.exit(r.status < 500 ? 0 : 1)).catch(() => process.exit(1))",
        ),
    }
    return Healthcheck(commands[client], start_period=start_period)


def _tcp(port: int) -> Healthcheck:
    """For images with bash and no HTTP client: the port accepts a connection."""
    return Healthcheck(("CMD", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"))


@dataclass(frozen=True)
class Secret:
    """One line of a stack's .env, made on the server the first time (never by the Hub,
    never logged): `hex` is `openssl rand -hex <arg>`, `laravel` a Laravel APP_KEY of
    <arg> random bytes, `value` the literal <arg> (a name, not a secret)."""

    name: str
    kind: str
    arg: str


@dataclass(frozen=True)
class Component:
    """Something the Hub installs from an image. The image is a name without tag or
    digest: which version runs is a release's (rollouts), never the catalog's."""

    name: str
    image: str
    ram_mb: int
    # The port the image listens on inside the container.
    port: int | None = None
    healthcheck: Healthcheck | None = None
    # A named volume `<name>-data` is mounted here.
    data_path: str = ""
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    # Compose `environment`; {host} and {url} are the tool's own name and https URL,
    # ${NAME:?...} the stack's .env.
    environment: tuple[tuple[str, str], ...] = ()
    secrets: tuple[Secret, ...] = ()
    # Extra bind mounts ("host:container[:mode]").
    binds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool(Component):
    disk_gb: int = 1
    # The database services of its stack (DATABASES).
    needs: tuple[str, ...] = ()
    subdomain: str = ""
    # Where nginx reaches it: 127.0.0.1:<host_port>, one port per tool on a server.
    host_port: int = 0


def _required(name: str) -> str:
    return f"${{{name}:?set in the stack's .env}}"


def _postgres_env(tool: str) -> tuple[Secret, ...]:
    return (
        Secret("POSTGRES_USER", "value", tool),
        Secret("POSTGRES_DB", "value", tool),
        Secret("POSTGRES_PASSWORD", "hex", "24"),
    )


def _mysql_env(tool: str) -> tuple[Secret, ...]:
    return (
        Secret("MYSQL_DATABASE", "value", tool),
        Secret("MYSQL_USER", "value", tool),
        Secret("MYSQL_PASSWORD", "hex", "24"),
        Secret("MYSQL_ROOT_PASSWORD", "hex", "24"),
    )


# The database services a stack may need. Each tool's stack runs its own (one Compose
# project per tool), so each costs its memory limit once per tool that needs it.
# Limits: PostgreSQL 16 with its default 128 MB shared_buffers stays well under 256 MB
# for one small tool; MySQL 8.4 idles at 350-450 MB (performance schema on), so 512;
# Redis holding a tool's queues and cache, 128.
DATABASES: dict[str, Component] = {
    component.name: component
    for component in (
        Component(
            "postgres",
            "postgres",
            256,
            port=5432,
            data_path="/var/lib/postgresql/data",
            healthcheck=Healthcheck(
                ("CMD-SHELL", 'pg_isready -U "$${POSTGRES_USER}" -d "$${POSTGRES_DB}"'), start_period="30s"
            ),
            environment=(
                ("POSTGRES_USER", _required("POSTGRES_USER")),
                ("POSTGRES_DB", _required("POSTGRES_DB")),
                ("POSTGRES_PASSWORD", _required("POSTGRES_PASSWORD")),
            ),
        ),
        Component(
            "mysql",
            "mysql",
            512,
            port=3306,
            data_path="/var/lib/mysql",
            # mysqladmin ping answers 0 once the server runs, even when it refuses the login.
            healthcheck=Healthcheck(("CMD", "mysqladmin", "ping", "-h", "127.0.0.1", "--silent"), start_period="60s"),
            environment=(
                ("MYSQL_DATABASE", _required("MYSQL_DATABASE")),
                ("MYSQL_USER", _required("MYSQL_USER")),
                ("MYSQL_PASSWORD", _required("MYSQL_PASSWORD")),
                ("MYSQL_ROOT_PASSWORD", _required("MYSQL_ROOT_PASSWORD")),
            ),
        ),
        Component(
            "redis",
            "redis",
            128,
            port=6379,
            data_path="/data",
            command=("redis-server", "--appendonly", "yes"),
            healthcheck=Healthcheck(("CMD", "redis-cli", "ping"), start_period="10s"),
        ),
    )
}
DATABASE_SECRETS = {"postgres": _postgres_env, "mysql": _mysql_env}

# The AI stack (/opt/hub/ai, Compose project `ai`), part of the platform's overhead.
# The business's own images: their health endpoints are not described here, so the
# agent judges them by their staying up.
AI_STACK: dict[str, Component] = {
    component.name: component
    for component in (
        Component("openclaw", "ghcr.io/hub/openclaw", 256),
        Component("safety-wrapper", "ghcr.io/hub/safety-wrapper", 128),
        Component("secrets-proxy", "ghcr.io/hub/secrets-proxy", 64),
    )
}
PLATFORM_OVERHEAD_MB = 640

# FACTS.md's tool registry. RAM is the container's memory limit; the port is the one
# the image listens on; the environment is what the tool needs to reach its database
# and to know its own address. Bookstack (FACTS.md names it only as wiki -> bookstack):
# PHP-FPM and nginx in one linuxserver.io container, 256 MB and 2 GB like the small
# PHP tools here, with MySQL as upstream supports.
TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "nextcloud",
            "nextcloud",
            512,
            port=80,
            disk_gb=10,
            needs=("postgres",),
            subdomain="files",
            host_port=8081,
            data_path="/var/www/html",
            healthcheck=_http("http://127.0.0.1/status.php"),
            environment=(
                ("POSTGRES_HOST", "postgres"),
                ("POSTGRES_DB", _required("POSTGRES_DB")),
                ("POSTGRES_USER", _required("POSTGRES_USER")),
                ("POSTGRES_PASSWORD", _required("POSTGRES_PASSWORD")),
                ("NEXTCLOUD_TRUSTED_DOMAINS", "{host}"),
                ("OVERWRITEHOST", "{host}"),
                ("OVERWRITEPROTOCOL", "https"),
                ("TRUSTED_PROXIES", "172.16.0.0/12"),
            ),
        ),
        Tool(
            "chatwoot",
            "chatwoot/chatwoot",
            768,
            port=3000,
            disk_gb=5,
            needs=("postgres", "redis"),
            subdomain="chat",
            host_port=8082,
            data_path="/app/storage",
            entrypoint=("docker/entrypoints/rails.sh",),
            command=(
                "sh",
                "-c",
                "bundle exec rails db:chatwoot_prepare && exec bundle exec rails s -p 3000 -b 0.0.0.0",
            ),
            healthcheck=_http("http://127.0.0.1:3000/api", client="wget", start_period="120s"),
            environment=(
                ("RAILS_ENV", "production"),
                ("NODE_ENV", "production"),
                ("INSTALLATION_ENV", "docker"),
                ("FRONTEND_URL", "{url}"),
                ("SECRET_KEY_BASE", _required("SECRET_KEY_BASE")),
                ("POSTGRES_HOST", "postgres"),
                ("POSTGRES_DATABASE", _required("POSTGRES_DB")),
                ("POSTGRES_USERNAME", _required("POSTGRES_USER")),
                ("POSTGRES_PASSWORD", _required("POSTGRES_PASSWORD")),
                ("REDIS_URL", "redis://redis:6379"),
                ("ACTIVE_STORAGE_SERVICE", "local"),
            ),
            secrets=(Secret("SECRET_KEY_BASE", "hex", "64"),),
        ),
        Tool(
            "ghost",
            "ghost",
            256,
            port=2368,
            disk_gb=3,
            needs=("mysql",),
            subdomain="blog",
            host_port=8083,
            data_path="/var/lib/ghost/content",
            healthcheck=_http("http://127.0.0.1:2368/ghost/api/admin/site/", client="node"),
            environment=(
                ("url", "{url}"),
                ("database__client", "mysql"),
                ("database__connection__host", "mysql"),
                ("database__connection__user", _required("MYSQL_USER")),
                ("database__connection__password", _required("MYSQL_PASSWORD")),
                ("database__connection__database", _required("MYSQL_DATABASE")),
            ),
        ),
        Tool(
            "odoo",
            "odoo",
            1024,
            port=8069,
            disk_gb=10,
            needs=("postgres",),
            subdomain="erp",
            host_port=8084,
            data_path="/var/lib/odoo",
            healthcheck=_http("http://127.0.0.1:8069/web/health"),
            environment=(
                ("HOST", "postgres"),
                ("USER", _required("POSTGRES_USER")),
                ("PASSWORD", _required("POSTGRES_PASSWORD")),
            ),
        ),
        Tool(
            "calcom",
            "calcom/cal.com",
            256,
            port=3000,
            disk_gb=2,
            needs=("postgres",),
            subdomain="cal",
            host_port=8085,
            healthcheck=_http("http://127.0.0.1:3000/", client="node", start_period="120s"),
            environment=(
                (
                    "DATABASE_URL",
                    "postgresql://${POSTGRES_USER:?}:${POSTGRES_PASSWORD:?}@postgres:5432/${POSTGRES_DB:?}",
                ),
                ("NEXT_PUBLIC_WEBAPP_URL", "{url}"),
                ("NEXTAUTH_URL", "{url}/api/auth"),
                ("NEXTAUTH_SECRET", _required("NEXTAUTH_SECRET")),
                ("CALENDSO_ENCRYPTION_KEY", _required("CALENDSO_ENCRYPTION_KEY")),
            ),
            secrets=(Secret("NEXTAUTH_SECRET", "hex", "32"), Secret("CALENDSO_ENCRYPTION_KEY", "hex", "16")),
        ),
        Tool(
            "stalwart",
            "stalwartlabs/stalwart",
            256,
            # The web admin and JMAP over HTTP; the mail ports are not published yet.
            port=8080,
            disk_gb=5,
            subdomain="mail",
            host_port=8086,
            data_path="/opt/stalwart",
            healthcheck=_tcp(8080),
        ),
        Tool(
            "keycloak",
            "quay.io/keycloak/keycloak",
            512,
            port=8080,
            disk_gb=2,
            needs=("postgres",),
            subdomain="auth",
            host_port=8087,
            command=("start",),
            # The image has bash and no HTTP client; health answers on the management port.
            healthcheck=Healthcheck(
                (
                    "CMD",
                    "bash",
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/9000 && printf 'GET /health/ready HTTP/1.0\\r\\n\\r\\n' >&3 "
                    "&& grep -q '\"UP\"' <&3",
                ),
                start_period="120s",
            ),
            environment=(
                ("KC_DB", "postgres"),
                ("KC_DB_URL", "jdbc:postgresql://postgres:5432/${POSTGRES_DB:?}"),
                ("KC_DB_USERNAME", _required("POSTGRES_USER")),
                ("KC_DB_PASSWORD", _required("POSTGRES_PASSWORD")),
                ("KC_HOSTNAME", "{url}"),
                ("KC_PROXY_HEADERS", "xforwarded"),
                ("KC_HTTP_ENABLED", "true"),
                ("KC_HEALTH_ENABLED", "true"),
                ("KC_BOOTSTRAP_ADMIN_USERNAME", "admin"),
                ("KC_BOOTSTRAP_ADMIN_PASSWORD", _required("KC_BOOTSTRAP_ADMIN_PASSWORD")),
            ),
            secrets=(Secret("KC_BOOTSTRAP_ADMIN_PASSWORD", "hex", "16"),),
        ),
        Tool(
            "listmonk",
            "listmonk/listmonk",
            256,
            port=9000,
            disk_gb=2,
            needs=("postgres",),
            subdomain="lists",
            host_port=8088,
            data_path="/listmonk/uploads",
            command=(
                "sh",
                "-c",
                "./listmonk --install --idempotent --yes --config '' && ./listmonk --upgrade --yes --config '' "
                "&& exec ./listmonk --config ''",
            ),
            healthcheck=_http("http://127.0.0.1:9000/api/health", client="wget"),
            environment=(
                ("LISTMONK_app__address", "0.0.0.0:9000"),
                ("LISTMONK_app__root_url", "{url}"),
                ("LISTMONK_db__host", "postgres"),
                ("LISTMONK_db__port", "5432"),
                ("LISTMONK_db__user", _required("POSTGRES_USER")),
                ("LISTMONK_db__password", _required("POSTGRES_PASSWORD")),
                ("LISTMONK_db__database", _required("POSTGRES_DB")),
                ("LISTMONK_db__ssl_mode", "disable"),
            ),
        ),
        Tool(
            "nocodb",
            "nocodb/nocodb",
            256,
            port=8080,
            disk_gb=2,
            subdomain="db",
            host_port=8089,
            # Without NC_DB it keeps its data in SQLite under /usr/app/data.
            data_path="/usr/app/data",
            healthcheck=_http("http://127.0.0.1:8080/api/v1/health", client="wget"),
            environment=(("NC_PUBLIC_URL", "{url}"), ("NC_AUTH_JWT_SECRET", _required("NC_AUTH_JWT_SECRET"))),
            secrets=(Secret("NC_AUTH_JWT_SECRET", "hex", "32"),),
        ),
        Tool(
            "umami",
            "ghcr.io/umami-software/umami",
            192,
            port=3000,
            disk_gb=1,
            needs=("postgres",),
            subdomain="stats",
            host_port=8090,
            healthcheck=_http("http://127.0.0.1:3000/api/heartbeat"),
            environment=(
                (
                    "DATABASE_URL",
                    "postgresql://${POSTGRES_USER:?}:${POSTGRES_PASSWORD:?}@postgres:5432/${POSTGRES_DB:?}",
                ),
                ("DATABASE_TYPE", "postgresql"),
                ("APP_SECRET", _required("APP_SECRET")),
            ),
            secrets=(Secret("APP_SECRET", "hex", "32"),),
        ),
        Tool(
            "uptime_kuma",
            "louislam/uptime-kuma",
            128,
            port=3001,
            disk_gb=1,
            subdomain="status",
            host_port=8091,
            data_path="/app/data",
            # The image's own check (its Dockerfile's HEALTHCHECK).
            healthcheck=Healthcheck(("CMD", "extra/healthcheck"), start_period="180s"),
        ),
        Tool(
            "portainer",
            "portainer/portainer-ce",
            128,
            port=9000,
            disk_gb=1,
            subdomain="portainer",
            host_port=8092,
            data_path="/data",
            binds=("/var/run/docker.sock:/var/run/docker.sock",),
            # None: the image is built FROM scratch (no shell, no client to check with);
            # the agent judges it by its staying up.
        ),
        Tool(
            "activepieces",
            "activepieces/activepieces",
            384,
            port=80,
            disk_gb=3,
            needs=("postgres",),
            subdomain="flows",
            host_port=8093,
            data_path="/usr/src/app/cache",
            healthcheck=_http("http://127.0.0.1/api/v1/health", client="node", start_period="90s"),
            environment=(
                ("AP_ENVIRONMENT", "prod"),
                ("AP_FRONTEND_URL", "{url}"),
                ("AP_DB_TYPE", "POSTGRES"),
                ("AP_POSTGRES_HOST", "postgres"),
                ("AP_POSTGRES_PORT", "5432"),
                ("AP_POSTGRES_DATABASE", _required("POSTGRES_DB")),
                ("AP_POSTGRES_USERNAME", _required("POSTGRES_USER")),
                ("AP_POSTGRES_PASSWORD", _required("POSTGRES_PASSWORD")),
                # The registry gives it no Redis: its queue runs in memory.
                ("AP_REDIS_TYPE", "MEMORY"),
                ("AP_EXECUTION_MODE", "UNSANDBOXED"),
                ("AP_ENCRYPTION_KEY", _required("AP_ENCRYPTION_KEY")),
                ("AP_JWT_SECRET", _required("AP_JWT_SECRET")),
            ),
            secrets=(Secret("AP_ENCRYPTION_KEY", "hex", "16"), Secret("AP_JWT_SECRET", "hex", "32")),
        ),
        Tool(
            "bookstack",
            "lscr.io/linuxserver/bookstack",
            256,
            port=80,
            disk_gb=2,
            needs=("mysql",),
            subdomain="wiki",
            host_port=8094,
            data_path="/config",
            healthcheck=_http("http://127.0.0.1/status"),
            environment=(
                ("PUID", "1000"),
                ("PGID", "1000"),
                ("APP_URL", "{url}"),
                ("APP_KEY", _required("APP_KEY")),
                ("DB_HOST", "mysql"),
                ("DB_PORT", "3306"),
                ("DB_USERNAME", _required("MYSQL_USER")),
                ("DB_PASSWORD", _required("MYSQL_PASSWORD")),
                ("DB_DATABASE", _required("MYSQL_DATABASE")),
            ),
            secrets=(Secret("APP_KEY", "laravel", "32"),),
        ),
    )
}


def stack_secrets(tool: Tool) -> tuple[Secret, ...]:
    """Every line of the tool's .env: its databases' credentials, then its own secrets."""
    lines: list[Secret] = []
    for need in tool.needs:
        lines += DATABASE_SECRETS[need](tool.name) if need in DATABASE_SECRETS else ()
    return (*lines, *tool.secrets)


def components_for(tools: list[str]) -> list[str]:
    """Every component an order with these tools installs: the tools, their database
    services and the AI stack, each once."""
    wanted = [*tools, *(need for name in tools for need in TOOLS[name].needs), *AI_STACK]
    return list(dict.fromkeys(wanted))


_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+[a-z]{{2,63}}$")


def plan(tier: str) -> Plan:
    return PLANS[tier]


def token_pool(tier: str) -> int:
    return int(getattr(settings, "PLAN_TOKEN_POOLS", {}).get(tier, PLANS[tier].token_pool))


def ram_needed_mb(tools: list[str]) -> int:
    """The platform's overhead plus every container's memory limit: each tool and each
    database service of its own stack."""
    chosen = [TOOLS[name] for name in tools]
    databases = sum(DATABASES[need].ram_mb for tool in chosen for need in tool.needs)
    return PLATFORM_OVERHEAD_MB + sum(t.ram_mb for t in chosen) + databases


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
