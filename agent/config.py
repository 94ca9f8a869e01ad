"""The agent's configuration: a file (JSON, or INI with an [agent] section) overridden
by HUB_AGENT_<KEY> environment variables.

The file is /etc/hub-agent/agent.conf unless HUB_AGENT_CONFIG names another; a missing
file is fine when the environment carries the settings.
"""

from __future__ import annotations

import configparser
import json
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = "/etc/hub-agent/agent.conf"
ENV_PREFIX = "HUB_AGENT_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class Config:
    hub_url: str
    state_dir: Path = Path("/var/lib/hub-agent")
    registration_token: str = ""
    registration_token_file: str = ""
    api_key_file: str = ""
    heartbeat_interval: float = 60.0
    hostname: str = field(default_factory=socket.gethostname)
    domain: str = ""
    host_root: str = ""
    proc_root: str = "/proc"
    disk_path: str = "/"
    tls_cert_path: str = ""
    backup_status_file: str = ""
    usage_file: str = ""
    usage_interval: float = 300.0
    compose_files: tuple[str, ...] = ()
    protected_containers: tuple[str, ...] = ("hub-agent",)
    docker_command: str = "docker"
    docker_timeout: float = 120.0
    pull_timeout: float = 900.0
    health_timeout: float = 120.0
    health_poll_interval: float = 2.0
    health_grace: float = 10.0
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    outbox_batch: int = 100
    outbox_max_items: int = 5000
    journal_retention_days: int = 90
    key_rotation_days: float = 30.0
    log_level: str = "INFO"

    @property
    def api_key_path(self) -> Path:
        return Path(self.api_key_file) if self.api_key_file else self.state_dir / "api_key"

    @property
    def tls_cert(self) -> Path | None:
        if self.tls_cert_path:
            return Path(self.tls_cert_path)
        if self.domain:
            return Path(f"{self.host_root}/etc/letsencrypt/live/{self.domain}/cert.pem")
        return None

    @property
    def backup_status_path(self) -> Path:
        return Path(self.backup_status_file or f"{self.host_root}/var/backups/hub/backup-status.json")

    @property
    def usage_path(self) -> Path:
        return Path(self.usage_file or f"{self.host_root}/var/lib/hub-ai/usage.json")

    def registration_token_value(self) -> str:
        if self.registration_token:
            return self.registration_token
        if self.registration_token_file:
            try:
                return Path(self.registration_token_file).read_text().strip()
            except OSError:
                return ""
        return ""


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    try:
        if kind in (float, "float"):
            return float(raw)
        if kind in (int, "int"):
            return int(raw)
        if kind in (Path, "Path"):
            return Path(str(raw))
        if kind in ("tuple[str, ...]",):
            if isinstance(raw, list | tuple):
                return tuple(str(x) for x in raw)
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {name!r}: cannot read {raw!r} as {kind}") from exc


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return data
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(f"{path}: expected JSON or an INI file with an [agent] section") from exc
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not parser.has_section("agent"):
        raise ConfigError(f"{path}: expected an [agent] section")
    return dict(parser.items("agent"))


def load_config(env: dict[str, str] | None = None) -> Config:
    """The file's values, then the environment's, checked and typed."""
    env = dict(os.environ) if env is None else env
    path = Path(env.get("HUB_AGENT_CONFIG", DEFAULT_CONFIG_PATH))
    values: dict[str, Any] = {}
    if path.exists():
        values.update(_read_file(path))
    elif "HUB_AGENT_CONFIG" in env:
        raise ConfigError(f"config file {path} does not exist")
    known = {f.name: f.type for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    for name in known:
        if ENV_PREFIX + name.upper() in env:
            values[name] = env[ENV_PREFIX + name.upper()]
    if not values.get("hub_url"):
        raise ConfigError("hub_url is required (config file or HUB_AGENT_HUB_URL)")
    typed = {name: _coerce(name, raw, known[name]) for name, raw in values.items()}
    typed["hub_url"] = typed["hub_url"].rstrip("/")
    if not typed["hub_url"].startswith(("http://", "https://")):
        raise ConfigError("hub_url must start with http:// or https://")
    config = Config(**typed)
    if config.heartbeat_interval <= 0 or config.backoff_max <= 0 or config.backoff_base <= 0:
        raise ConfigError("heartbeat_interval, backoff_base and backoff_max must be positive")
    return config
