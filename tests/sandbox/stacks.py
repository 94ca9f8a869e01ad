"""Tool stacks laid out as provisioning writes them (one Compose project per tool at
/opt/hub/tools/<tool>/compose.yml, named after the tool; the tool's own service named
after it; database services `postgres` / `mysql` / `redis`; named volumes
`<service>-data`; credentials in the project's .env, 0600), for tests of the docker
stand-in and of the backups, which back these files up."""

from __future__ import annotations

import secrets
from pathlib import Path

DIGEST = "@sha256:" + "ab" * 32
DATA_PATHS = {"postgres": "/var/lib/postgresql/data", "mysql": "/var/lib/mysql", "redis": "/data"}
IMAGES = {"postgres": "postgres:16", "mysql": "mysql:8.0", "redis": "redis:7"}


def write_stack(root: Path, tool: str, *databases: str, tool_data: str = "/data") -> Path:
    """Write the compose file and .env of `tool` with the given database services under
    `root` (a host's HOST_ROOT); returns the compose file's path."""
    directory = root / "opt" / "hub" / "tools" / tool
    directory.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    services = [
        f"  {tool}:",
        f"    image: registry.example/{tool}:1.0{DIGEST}",
        "    restart: unless-stopped",
        "    volumes:",
        f"      - {tool}-data:{tool_data}",
    ]
    volumes = [f"  {tool}-data:"]
    for database in databases:
        services += [f"  {database}:", f"    image: {IMAGES[database]}{DIGEST}", "    restart: unless-stopped"]
        if database == "postgres":
            env.update(POSTGRES_USER=tool, POSTGRES_DB=tool, POSTGRES_PASSWORD=secrets.token_urlsafe(16))
            services += ["    env_file: .env"]
        elif database == "mysql":
            env.update(
                MYSQL_DATABASE=tool,
                MYSQL_USER=tool,
                MYSQL_PASSWORD=secrets.token_urlsafe(16),
                MYSQL_ROOT_PASSWORD=secrets.token_urlsafe(16),
            )
            services += ["    env_file: .env"]
        services += ["    volumes:", f"      - {database}-data:{DATA_PATHS[database]}"]
        volumes.append(f"  {database}-data:")
    compose = directory / "compose.yml"
    compose.write_text("\n".join([f"name: {tool}", "services:", *services, "volumes:", *volumes, ""]))
    dotenv = directory / ".env"
    dotenv.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    dotenv.chmod(0o600)
    return compose
