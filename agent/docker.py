"""The agent's only way to the containers: the `docker` CLI, run as a subprocess with a
timeout. (In the sandbox, `docker` is the stand-in in sandbox/standins/.)

How containers map to what the Hub calls components and versions:
- component: the label `hub.component`, else the Compose service
  (`com.docker.compose.service`), else the container name;
- version: the label `hub.version`, else the image tag (`registry/app:4.1` -> `4.1`).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PREVIOUS_SUFFIX = "-hub-previous"
COMPONENT_LABEL = "hub.component"
VERSION_LABEL = "hub.version"
ROLE_LABEL = "hub.role"


class DockerError(Exception):
    """A docker command failed; the message carries its stderr."""


def image_tag(image: str) -> str:
    if "@" in image:
        return image.split("@", 1)[1][:19]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def image_repository(image: str) -> str:
    """The image reference without its tag or digest."""
    if "@" in image:
        return image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    name = last.split(":", 1)[0]
    return f"{head}/{name}" if head else name


def parse_labels(raw: Any) -> dict[str, str]:
    """`docker ps` prints labels as "k=v,k=v"; a value may itself hold commas (Compose's
    config_files list), so a piece without "=" belongs to the previous value."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    labels: dict[str, str] = {}
    last = None
    for piece in str(raw or "").split(","):
        if "=" in piece:
            key, _, value = piece.partition("=")
            labels[key] = value
            last = key
        elif last is not None:
            labels[last] += "," + piece
    return labels


def _health_from_status(status: str) -> str:
    for marker, health in (("(healthy)", "healthy"), ("(unhealthy)", "unhealthy"), ("(health: starting)", "starting")):
        if marker in status:
            return health
    return ""


@dataclass(frozen=True)
class Container:
    name: str
    state: str
    health: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def component(self) -> str:
        return self.labels.get(COMPONENT_LABEL) or self.labels.get("com.docker.compose.service") or self.name

    @property
    def version(self) -> str:
        return self.labels.get(VERSION_LABEL) or image_tag(self.image)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Container:
        name = row.get("Name") or str(row.get("Names", "")).split(",")[0]
        health = row.get("Health")
        if health is None:
            health = _health_from_status(str(row.get("Status", "")))
        return cls(
            name=str(name),
            state=str(row.get("State", "")).lower(),
            health=str(health or ""),
            image=str(row.get("Image", "")),
            labels=parse_labels(row.get("Labels")),
        )


def parse_json_rows(text: str) -> list[dict[str, Any]]:
    """Docker prints one JSON object per line; older Compose printed one JSON array."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        data = json.loads(text)
        return [row for row in data if isinstance(row, dict)]
    return [row for row in (json.loads(line) for line in text.splitlines() if line.strip()) if isinstance(row, dict)]


class Docker:
    def __init__(self, command: str = "docker", *, timeout: float = 120.0, pull_timeout: float = 900.0) -> None:
        self.argv = shlex.split(command)
        self.timeout = timeout
        self.pull_timeout = pull_timeout

    def run(self, *args: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                [*self.argv, *args], capture_output=True, text=True, timeout=timeout or self.timeout, check=False
            )
        except FileNotFoundError as exc:
            raise DockerError(f"{self.argv[0]} not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise DockerError(f"docker {args[0]} timed out after {exc.timeout:.0f}s") from exc
        if check and done.returncode != 0:
            raise DockerError(f"docker {' '.join(args[:2])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def containers(self, compose_files: tuple[str, ...] = (), *, with_previous: bool = False) -> list[Container]:
        """Every container: from `docker compose ps` of the given files, or else from
        `docker ps -a` (a tenant runs one Compose project per tool; one call sees all).
        A previous container an update keeps for its rollback is left out unless asked."""
        if compose_files:
            rows: list[dict[str, Any]] = []
            for file in compose_files:
                rows += parse_json_rows(self.run("compose", "-f", file, "ps", "-a", "--format", "json").stdout)
        else:
            rows = parse_json_rows(self.run("ps", "-a", "--no-trunc", "--format", "json").stdout)
        found = [Container.from_row(row) for row in rows]
        return [c for c in found if with_previous or not c.name.endswith(PREVIOUS_SUFFIX)]

    def inspect(self, name: str) -> dict[str, Any] | None:
        done = self.run("inspect", "--type", "container", name, check=False)
        if done.returncode != 0:
            return None
        data = json.loads(done.stdout or "[]")
        return data[0] if data else None

    def image_inspect(self, ref: str) -> dict[str, Any] | None:
        done = self.run("image", "inspect", ref, check=False)
        if done.returncode != 0:
            return None
        data = json.loads(done.stdout or "[]")
        return data[0] if data else None

    def pull(self, image: str) -> None:
        self.run("pull", image, timeout=self.pull_timeout)

    def stop(self, name: str) -> None:
        self.run("stop", name)

    def start(self, name: str) -> None:
        self.run("start", name)

    def restart(self, name: str) -> None:
        self.run("restart", name)

    def remove(self, name: str, *, force: bool = False) -> None:
        self.run("rm", *(["-f"] if force else []), name)

    def rename(self, old: str, new: str) -> None:
        self.run("rename", old, new)

    def remove_image(self, ref: str) -> bool:
        return self.run("rmi", ref, check=False).returncode == 0

    def version(self) -> str:
        return self.run("version", "--format", "{{.Server.Version}}", check=False).stdout.strip()

    def run_like(self, current: dict[str, Any], *, name: str, image: str, labels: dict[str, str]) -> None:
        """Start `image` as `name` with the settings of the container `current` was
        inspected from, as Watchtower does: what the old image itself set (its env,
        labels and command) is left for the new image to set."""
        old_image = self.image_inspect(str(current.get("Image", ""))) or {}
        self.run(*run_arguments(current, old_image, name=name, image=image, labels=labels))


def run_arguments(
    current: dict[str, Any], old_image: dict[str, Any], *, name: str, image: str, labels: dict[str, str]
) -> list[str]:
    config = current.get("Config") or {}
    host = current.get("HostConfig") or {}
    image_config = old_image.get("Config") or {}
    args = ["run", "-d", "--name", name]
    restart = (host.get("RestartPolicy") or {}).get("Name") or ""
    if restart and restart != "no":
        args += ["--restart", restart]
    network = host.get("NetworkMode") or ""
    if network and network not in ("default", "bridge"):
        args += ["--network", network]
    image_env = set(image_config.get("Env") or [])
    for item in config.get("Env") or []:
        if item not in image_env:
            args += ["-e", item]
    image_labels = image_config.get("Labels") or {}
    merged = {k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v}
    merged.update(labels)
    for key, value in sorted(merged.items()):
        args += ["--label", f"{key}={value}"]
    for bind in host.get("Binds") or []:
        args += ["-v", bind]
    for port, bindings in sorted((host.get("PortBindings") or {}).items()):
        for binding in bindings or [{}]:
            host_ip, host_port = binding.get("HostIp") or "", binding.get("HostPort") or ""
            prefix = f"{host_ip}:" if host_ip else ""
            args += ["-p", f"{prefix}{host_port}:{port}" if host_port else port]
    args.append(image)
    cmd = config.get("Cmd") or []
    if cmd and cmd != (image_config.get("Cmd") or []):
        args += list(cmd)
    return args
