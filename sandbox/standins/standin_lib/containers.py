"""What the docker stand-in needs to keep data: named volumes as real directories where
Docker keeps them ($HOST_ROOT/var/lib/docker/volumes/<name>/_data), the data directory
of a database container (its volume, a bind mount, or the container's own layer), the
database image's first start, and `docker compose exec` running a command inside a
container: the database client tools of its image (see database.py), or sh with them
on its PATH, with the container's environment. Nothing else of an image exists."""

from __future__ import annotations

import os
import sys

from standin_lib.lean import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTAINERS_DIR = Path(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))) / "containers"
# The official images' data directories.
DATA_PATHS = {"postgres": "/var/lib/postgresql/data", "mysql": "/var/lib/mysql", "redis": "/data"}
FAMILIES = {
    "postgres": "postgres",
    "postgis": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "percona": "mysql",
    "redis": "redis",
    "valkey": "redis",
}
SHELLS = {"sh": "/bin/sh", "bash": "/bin/bash"}


class ExecError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def image_family(image: str) -> str | None:
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1].split(":", 1)[0]
    return FAMILIES.get(last)


def host_root() -> Path:
    return Path(os.environ.get("HOST_ROOT") or os.environ.get("SANDBOX_DOCKER_STATE") or "/nonexistent")


def volume_dir(name: str) -> Path:
    return host_root() / "var" / "lib" / "docker" / "volumes" / name / "_data"


def volume_mountpoint(name: str) -> str:
    """Where Docker says the volume is, as seen on the host (under HOST_ROOT here)."""
    return f"/var/lib/docker/volumes/{name}/_data"


def parse_mount(entry: Any, *, project: str, declared: dict[str, Any], service: str, workdir: str) -> dict[str, Any]:
    """One entry of a service's `volumes:` (short or long syntax) as a mount."""
    if isinstance(entry, dict):
        kind = str(entry.get("type") or "volume")
        source = str(entry.get("source") or "")
        target = str(entry.get("target") or "")
        read_only = bool(entry.get("read_only"))
    else:
        parts = str(entry).split(":")
        if len(parts) == 1:
            return {"type": "volume", "name": "", "source": "", "target": parts[0], "anonymous": True}
        source, target = parts[0], parts[1]
        read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    if kind == "bind":
        path = source if source.startswith("/") else os.path.normpath(os.path.join(workdir, source))
        if source.startswith("/"):
            path = str(host_root() / source.lstrip("/"))
        return {"type": "bind", "source": path, "target": target, "read_only": read_only}
    if source not in declared:
        raise ExecError(f'service "{service}" refers to undefined volume {source}: invalid compose project', 15)
    config = declared.get(source) or {}
    name = str(config.get("name") or f"{project}_{source}")
    return {
        "type": "volume",
        "name": name,
        "key": source,
        "external": bool(config.get("external")),
        "target": target,
        "read_only": read_only,
    }


def volume_ensure(state: dict[str, Any], mount: dict[str, Any], *, project: str, created: str) -> None:
    volumes = state.setdefault("volumes", {})
    name = mount["name"]
    if name not in volumes:
        if mount.get("external"):
            raise ExecError(f'external volume "{name}" not found', 1)
        volumes[name] = {
            "Name": name,
            "Driver": "local",
            "Labels": {
                "com.docker.compose.project": project,
                "com.docker.compose.version": "2.29.7",
                "com.docker.compose.volume": mount["key"],
            },
            "Mountpoint": volume_mountpoint(name),
            "Options": None,
            "Scope": "local",
            "CreatedAt": created,
        }
    volume_dir(name).mkdir(parents=True, exist_ok=True)


def volume_remove(state: dict[str, Any], name: str, *, force: bool = False) -> None:
    import shutil

    volumes = state.setdefault("volumes", {})
    if name not in volumes:
        if force:
            return
        raise ExecError(f"Error response from daemon: get {name}: no such volume", 1)
    users = [
        c["id"][:12] for c in state["containers"].values() if any(m.get("name") == name for m in c.get("mounts") or [])
    ]
    if users:
        raise ExecError(f"Error response from daemon: remove {name}: volume is in use - [{', '.join(users)}]", 1)
    del volumes[name]
    shutil.rmtree(str(volume_dir(name).parent), ignore_errors=True)


def data_dir(container: dict[str, Any]) -> Path | None:
    """The directory a database container keeps its data in, on this machine."""
    family = container.get("family")
    if family not in DATA_PATHS:
        return None
    env = dict(e.partition("=")[::2] for e in container.get("env") or [])
    target = env["PGDATA"] if family == "postgres" and env.get("PGDATA") else DATA_PATHS[family]
    best: tuple[int, Path] | None = None
    for mount in container.get("mounts") or []:
        mounted = mount["target"].rstrip("/")
        if target == mounted or target.startswith(mounted + "/"):
            base = volume_dir(mount["name"]) if mount["type"] == "volume" else Path(mount["source"])
            candidate = base / target[len(mounted) :].lstrip("/") if target != mounted else base
            if best is None or len(mounted) > best[0]:
                best = (len(mounted), candidate)
    if best is not None:
        return best[1]
    # No mount: the container's own writable layer, gone with the container.
    return host_root() / "var" / "lib" / "sandbox-docker" / "layers" / container["id"] / target.lstrip("/")


def first_start(container: dict[str, Any]) -> str | None:
    """The image entrypoint's initialisation of an empty data directory; the error
    that stops the container, if any."""
    directory = data_dir(container)
    if directory is None or container.get("family") == "redis":
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        return None
    from standin_lib import database

    env = dict(e.partition("=")[::2] for e in container.get("env") or [])
    return database.initialize(container["family"], directory, env)


def parse_exec(args: list[str]) -> tuple[dict[str, Any], str, list[str]]:
    options: dict[str, Any] = {"env": [], "user": "", "workdir": "", "tty": True, "detach": False}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        name, has_value, value = arg.partition("=")
        if name in ("-e", "--env", "-u", "--user", "-w", "--workdir", "--index"):
            if not has_value:
                if i + 1 >= len(args):
                    raise ExecError(f"flag needs an argument: {arg}", 1)
                i += 1
                value = args[i]
            if name in ("-e", "--env"):
                options["env"].append(value)
            elif name in ("-u", "--user"):
                options["user"] = value
            elif name in ("-w", "--workdir"):
                options["workdir"] = value
        elif arg in ("-T", "--no-TTY", "--no-tty"):
            options["tty"] = False
        elif arg in ("-d", "--detach"):
            options["detach"] = True
        elif arg != "--privileged":
            raise ExecError(f"unknown flag: {arg}", 1)
        i += 1
    if len(args) - i < 2:
        raise ExecError("'docker compose exec' requires at least 2 arguments.", 1)
    return options, args[i], args[i + 1 :]


def run_in_container(container: dict[str, Any], options: dict[str, Any], command: list[str]) -> int:
    """Run `command` as `docker exec` would in the container: with its environment,
    only the programs its image has (the database client tools, sh) found."""
    import subprocess

    family = container.get("family") or "none"
    tools = CONTAINERS_DIR / family
    common = CONTAINERS_DIR / "common"
    program = command[0]
    name = program.rsplit("/", 1)[-1]
    if program.startswith("/") and program.rsplit("/", 1)[0] not in ("/bin", "/usr/bin", "/usr/local/bin", "/sbin"):
        name = ""
    if name in SHELLS:
        argv = [SHELLS[name], *command[1:]]
    elif name and (tools / name).exists():
        argv = [str(tools / name), *command[1:]]
    elif name and (common / name).exists():
        argv = [str(common / name), *command[1:]]
    else:
        raise ExecError(
            "OCI runtime exec failed: exec failed: unable to start container process: exec: "
            f'"{program}": executable file not found in $PATH: unknown',
            126,
        )
    env = {"PATH": f"{tools}:{common}", "HOSTNAME": container["id"][:12], "HOME": "/root"}
    env.update(dict(e.partition("=")[::2] for e in container.get("env") or []))
    for item in options["env"]:
        key, has_value, value = item.partition("=")
        if has_value:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    directory = data_dir(container)
    env.update(
        {
            "HOST_ROOT": str(host_root()),
            "SANDBOX_CONTAINER_FAMILY": family,
            "SANDBOX_CONTAINER_DATA": str(directory) if directory else "/nonexistent",
            "SANDBOX_EXEC_USER": options["user"].split(":")[0] or "root",
        }
    )
    workdir = options["workdir"]
    cwd = str(host_root() / workdir.lstrip("/")) if workdir else str(host_root())
    if not os.path.isdir(cwd):
        cwd = str(host_root())
    sys.stdout.flush()
    return subprocess.run(argv, env=env, cwd=cwd, check=False).returncode
