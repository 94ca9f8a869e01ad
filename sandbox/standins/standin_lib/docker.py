"""Sandbox stand-in for the `docker` CLI (no Docker engine runs in the sandbox).

Every call is appended as one JSON line {"cmd", "args", "time", "cwd"} to
$HOST_ROOT/var/log/sandbox/calls.jsonl. The engine's state (images, containers) lives in
$HOST_ROOT/var/lib/sandbox-docker/state.json, guarded by a file lock so concurrent
calls see a consistent engine. Without HOST_ROOT, $SANDBOX_DOCKER_STATE is used as the
directory for state.json, calls.jsonl and faults.json.

Faults ($HOST_ROOT/etc/sandbox/faults.json, read on every call):
  {"unhealthy_images": [ref or id, ...], "missing_images": [ref, ...]}
and the ones every stand-in shares: {"fail": {"docker pull": 1}, "sleep": {"docker pull": 2}}.
An image whose reference contains "unhealthy" is unhealthy after start as well; every
other running container reports "healthy".
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from standin_lib import containers, lean
from standin_lib.lean import Path

# A heartbeat's `docker ps` needs none of these: hashlib (OpenSSL), datetime, re and
# typing are imported where they are used, as a stand-in starts dozens of times per setup.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Any

VERSION = "27.3.1-sandbox"
COMPOSE_VERSION = "v2.29.7-sandbox"


class DockerError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Paths:
    def __init__(self) -> None:
        host_root = os.environ.get("HOST_ROOT")
        fallback = os.environ.get("SANDBOX_DOCKER_STATE")
        if host_root:
            root = Path(host_root)
            self.state = root / "var/lib/sandbox-docker/state.json"
            self.calls = root / "var/log/sandbox/calls.jsonl"
            self.faults = root / "etc/sandbox/faults.json"
        elif fallback:
            base = Path(fallback)
            self.state = base / "state.json"
            self.calls = base / "calls.jsonl"
            self.faults = base / "faults.json"
        else:
            raise DockerError("sandbox docker: set HOST_ROOT (or SANDBOX_DOCKER_STATE) to the sandbox root", 125)
        self.state.parent.mkdir(parents=True, exist_ok=True)
        self.calls.parent.mkdir(parents=True, exist_ok=True)


def record_call(paths: Paths, args: list[str], **extra: object) -> None:
    line = lean.dumps({"cmd": "docker", "args": args, "time": time.time(), "cwd": os.getcwd(), **extra})
    with open(paths.calls, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(line + "\n")


def apply_generic_faults(paths: Paths, args: list[str]) -> None:
    """The faults every stand-in shares (see _standin.py): {"fail": {"docker pull": 2}}
    fails the next two matching calls, {"sleep": {"docker pull": 5}} slows each down; a
    key names the calls lean.fault_key_matches says it does."""
    if not paths.faults.exists():
        return
    words = ["docker", *args]
    failing, pause = None, 0.0
    with open(paths.faults, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        try:
            data = lean.loads(fh.read() or "{}")
        except ValueError:
            return
        for key, remaining in list((data.get("fail") or {}).items()):
            if isinstance(remaining, int) and remaining > 0 and lean.fault_key_matches(key, words):
                data["fail"][key] = remaining - 1
                failing = key
                break
        for key, seconds in (data.get("sleep") or {}).items():
            if lean.fault_key_matches(key, words):
                pause = float(seconds)
                break
        if failing is not None:
            fh.seek(0)
            fh.truncate()
            fh.write(lean.dumps(data, indent=2, sort_keys=True))
    if pause:
        # Outside every lock: other calls go on meanwhile, as with a slow registry.
        time.sleep(min(pause, 600.0))
    if failing is not None:
        record_call(paths, args, injected_fault=failing, exit_code=1)
        raise DockerError(f"docker: injected failure (sandbox fault '{failing}')", 1)


def load_faults(paths: Paths) -> dict[str, Any]:
    try:
        data = lean.loads(paths.faults.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- image references -------------------------------------------------------------


def normalize_ref(ref: str) -> str:
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def split_ref(ref: str) -> tuple[str, str]:
    ref = normalize_ref(ref)
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, digest
    repo, tag = ref.rsplit(":", 1)
    return repo, tag


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def image_id(ref: str) -> str:
    return "sha256:" + _sha256(normalize_ref(ref))


# --- state ------------------------------------------------------------------------


class Engine:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.faults = load_faults(paths)
        self.lock_fh = open(str(paths.state) + ".lock", "a")  # noqa: SIM115 - held for the process
        fcntl.flock(self.lock_fh, fcntl.LOCK_EX)
        try:
            self.state = lean.loads(paths.state.read_text())
        except (OSError, ValueError):
            self.state = {}
        self.state.setdefault("images", {})
        self.state.setdefault("containers", {})
        self.state.setdefault("volumes", {})
        self.out: list[str] = []
        self.released = False

    def release(self) -> None:
        """Let other calls at the engine while this one runs a command in a container;
        this call changes the engine no more."""
        self.lock_fh.close()
        self.released = True

    def save(self) -> None:
        if self.released:
            return
        tmp = self.paths.state.with_suffix(".tmp")
        tmp.write_text(lean.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.paths.state)

    def print(self, text: str) -> None:
        self.out.append(text)

    # images
    def find_image(self, ref: str) -> dict[str, Any] | None:
        """By reference, full id, or an id prefix of at least 12 hex digits (as docker does)."""
        images = self.state["images"]
        if normalize_ref(ref) in images:
            return images[normalize_ref(ref)]
        short = ref.removeprefix("sha256:")
        for image in images.values():
            if image["id"] == ref or (len(short) >= 12 and image["id"].removeprefix("sha256:").startswith(short)):
                return image
        return None

    def pull(self, ref: str) -> dict[str, Any]:
        norm = normalize_ref(ref)
        missing = {normalize_ref(m) for m in self.faults.get("missing_images", [])}
        if norm in missing:
            raise DockerError(
                f"Error response from daemon: manifest for {norm} not found: manifest unknown: manifest unknown"
            )
        existing = self.state["images"].get(norm)
        repo, tag = split_ref(norm)
        if existing:
            self.print(
                f"{tag}: Pulling from {repo}\nDigest: {existing['id']}\nStatus: Image is up to date for {norm}\n{norm}"
            )
            return existing
        image = {"ref": norm, "repository": repo, "tag": tag, "id": image_id(norm), "created": now_iso()}
        self.state["images"][norm] = image
        self.print(
            f"{tag}: Pulling from {repo}\nDigest: {image['id']}\nStatus: Downloaded newer image for {norm}\n{norm}"
        )
        return image

    def image_unhealthy(self, image: dict[str, Any]) -> bool:
        listed = set(self.faults.get("unhealthy_images", []))
        listed |= {normalize_ref(x) for x in listed if not x.startswith("sha256:")}
        return "unhealthy" in image["ref"] or image["ref"] in listed or image["id"] in listed

    # containers
    def container(self, key: str) -> dict[str, Any]:
        key = key.lstrip("/")
        containers = self.state["containers"]
        if key in containers:
            return containers[key]
        for c in containers.values():
            if len(key) >= 6 and c["id"].startswith(key):
                return c
        raise DockerError(f"Error response from daemon: No such container: {key}")

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec["name"]
        if name in self.state["containers"]:
            existing = self.state["containers"][name]["id"]
            raise DockerError(
                f'docker: Error response from daemon: Conflict. The container name "/{name}" is already in use by '
                f'container "{existing}". You have to remove (or rename) that container to be able to reuse that name.',
                125,
            )
        image = self.find_image(spec["image"])
        if image is None:
            try:
                image = self.pull(spec["image"])
            except DockerError as exc:
                raise DockerError(f"Unable to find image '{spec['image']}' locally\ndocker: {exc}", 125) from exc
        container = {
            "id": _sha256(f"{name}-{now_iso()}-{os.getpid()}"),
            "name": name,
            "image": normalize_ref(spec["image"]) if "@" not in spec["image"] else spec["image"],
            "image_id": image["id"],
            "state": "created",
            "health": "",
            "labels": spec.get("labels", {}),
            "env": spec.get("env", []),
            "binds": spec.get("binds", []),
            "ports": spec.get("ports", []),
            "restart": spec.get("restart", "no"),
            "network": spec.get("network", "bridge"),
            "command": spec.get("command", []),
            "mounts": spec.get("mounts", []),
            "family": containers.image_family(spec["image"]),
            "created": now_iso(),
            "started_at": "",
            "finished_at": "",
            "exit_code": 0,
        }
        self.state["containers"][name] = container
        return container

    def start(self, container: dict[str, Any]) -> None:
        if container["state"] == "running":
            return
        image = self.find_image(container["image_id"]) or {"ref": container["image"], "id": container["image_id"]}
        container["state"] = "running"
        container["health"] = "unhealthy" if self.image_unhealthy(image) else "healthy"
        container["started_at"] = now_iso()
        container["exit_code"] = 0
        # A database image initialises its empty data directory, or stops at once.
        failure = containers.first_start(container)
        if failure:
            container.update(state="exited", health="", exit_code=1, finished_at=now_iso(), log=failure)

    def stop(self, container: dict[str, Any]) -> None:
        if container["state"] != "running":
            return
        container["state"] = "exited"
        container["finished_at"] = now_iso()
        container["exit_code"] = 0


# --- output shapes ----------------------------------------------------------------


def labels_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def status_text(c: dict[str, Any]) -> str:
    if c["state"] == "running":
        return f"Up 1 minute ({c['health']})" if c["health"] else "Up 1 minute"
    if c["state"] == "created":
        return "Created"
    return f"Exited ({c['exit_code']}) 1 minute ago"


def ports_text(c: dict[str, Any]) -> str:
    out = []
    for p in c["ports"]:
        host = f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}->" if p.get("host_port") else ""
        out.append(f"{host}{p['container_port']}/{p['proto']}")
    return ", ".join(out)


def ps_row(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "Command": lean.dumps(" ".join(c["command"])),
        "CreatedAt": c["created"],
        "ID": c["id"][:12],
        "Image": c["image"],
        "Labels": labels_string(c["labels"]),
        "LocalVolumes": "0",
        "Mounts": ",".join(b.split(":")[0] for b in c["binds"]),
        "Names": c["name"],
        "Networks": c["network"],
        "Ports": ports_text(c),
        "RunningFor": "1 minute ago",
        "Size": "0B",
        "State": c["state"],
        "Status": status_text(c),
    }


def compose_row(c: dict[str, Any]) -> dict[str, Any]:
    row = ps_row(c)
    row.update(
        {
            "Name": c["name"],
            "Project": c["labels"].get("com.docker.compose.project", ""),
            "Service": c["labels"].get("com.docker.compose.service", ""),
            "Health": c["health"] if c["state"] == "running" else "",
            "ExitCode": c["exit_code"],
            "Publishers": [],
        }
    )
    return row


def inspect_container(c: dict[str, Any]) -> dict[str, Any]:
    port_bindings: dict[str, list[dict[str, str]]] = {}
    for p in c["ports"]:
        port_bindings.setdefault(f"{p['container_port']}/{p['proto']}", []).append(
            {"HostIp": p.get("host_ip", ""), "HostPort": p.get("host_port", "")}
        )
    health = None
    if c["health"]:
        health = {"Status": c["health"], "FailingStreak": 0, "Log": []}
        if c["health"] == "unhealthy":
            health["FailingStreak"] = 3
    state = {
        "Status": c["state"],
        "Running": c["state"] == "running",
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 4242 if c["state"] == "running" else 0,
        "ExitCode": c["exit_code"],
        "Error": "",
        "StartedAt": c["started_at"] or "0001-01-01T00:00:00Z",
        "FinishedAt": c["finished_at"] or "0001-01-01T00:00:00Z",
    }
    if health:
        state["Health"] = health
    return {
        "Id": c["id"],
        "Created": c["created"],
        "Path": c["command"][0] if c["command"] else "",
        "Args": c["command"][1:],
        "State": state,
        "Image": c["image_id"],
        "Name": "/" + c["name"],
        "RestartCount": 0,
        "HostConfig": {
            "Binds": c["binds"] or None,
            "NetworkMode": c["network"],
            "PortBindings": port_bindings,
            "RestartPolicy": {"Name": c["restart"].split(":")[0], "MaximumRetryCount": 0},
        },
        "Mounts": [
            {"Type": "bind", "Source": b.split(":")[0], "Destination": b.split(":")[1] if ":" in b else b}
            for b in c["binds"]
            if not c.get("mounts")
        ]
        + [
            {
                "Type": m["type"],
                "Name": m.get("name", ""),
                "Source": containers.volume_mountpoint(m["name"]) if m["type"] == "volume" else m["source"],
                "Destination": m["target"],
                "RW": not m.get("read_only"),
            }
            for m in c.get("mounts") or []
        ],
        "Config": {
            "Hostname": c["id"][:12],
            "Env": c["env"],
            "Cmd": c["command"] or None,
            "Image": c["image"],
            "Labels": c["labels"],
        },
        "NetworkSettings": {"Networks": {c["network"]: {}}},
    }


def inspect_image(image: dict[str, Any]) -> dict[str, Any]:
    return {
        "Id": image["id"],
        "RepoTags": [image["ref"]],
        "RepoDigests": [f"{image['repository']}@{image['id']}"],
        "Created": image["created"],
        "Config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": None,
            "Labels": {},
        },
        "Size": 1024,
    }


def render_format(fmt: str, obj: Any) -> str:
    """Go-template subset: `json .`, `{{json .A.B}}`, `{{.A.B}}`, and `json` alone."""
    if fmt in ("json", "{{json .}}"):
        return lean.dumps(obj)
    import re

    def resolve(path: str) -> Any:
        value = obj
        for part in [p for p in path.split(".") if p]:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def repl(match: re.Match[str]) -> str:
        is_json, path = match.group(1), match.group(2)
        value = resolve(path)
        if is_json:
            return lean.dumps(value)
        if value is None:
            return "<no value>"
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else lean.dumps(value)

    return re.sub(r"\{\{\s*(json\s+)?(\.[\w.]*)\s*\}\}", repl, fmt)


# --- argument parsing -------------------------------------------------------------

# The `docker run` options that take a value (the rest are flags).
RUN_VALUE_FLAGS = set(
    [
        "--name",
        "-e",
        "--env",
        "-l",
        "--label",
        "-v",
        "--volume",
        "-p",
        "--publish",
        "--restart",
        "--network",
        "--net",
        "--health-cmd",
        "--health-interval",
        "--health-timeout",
        "--health-retries",
        "--health-start-period",
        "-w",
        "--workdir",
        "-u",
        "--user",
        "--entrypoint",
        "--env-file",
        "--hostname",
        "-h",
        "--memory",
        "-m",
        "--cpus",
        "--log-driver",
        "--log-opt",
        "--mount",
        "--add-host",
        "--cap-add",
        "--cap-drop",
        "--platform",
        "--pull",
        "--stop-timeout",
        "--label-file",
        "--ulimit",
        "--shm-size",
    ]
)


def parse_port(spec: str) -> dict[str, str]:
    proto = "tcp"
    if "/" in spec:
        spec, proto = spec.rsplit("/", 1)
    parts = spec.split(":")
    if len(parts) == 1:
        return {"host_ip": "", "host_port": "", "container_port": parts[0], "proto": proto}
    if len(parts) == 2:
        return {"host_ip": "", "host_port": parts[0], "container_port": parts[1], "proto": proto}
    return {"host_ip": parts[0], "host_port": parts[1], "container_port": parts[2], "proto": proto}


def parse_run(args: list[str]) -> tuple[dict[str, Any], bool]:
    spec: dict[str, Any] = {"labels": {}, "env": [], "binds": [], "ports": []}
    detach = False
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        if "=" in arg and arg.startswith("--"):
            flag, value = arg.split("=", 1)
        elif arg in RUN_VALUE_FLAGS:
            if i + 1 >= len(args):
                raise DockerError(f"flag needs an argument: {arg}", 125)
            flag, value = arg, args[i + 1]
            i += 1
        else:
            flag, value = arg, ""
        i += 1
        if flag in ("-d", "--detach"):
            detach = True
        elif flag == "--name":
            spec["name"] = value
        elif flag in ("-e", "--env"):
            spec["env"].append(value if "=" in value else f"{value}={os.environ.get(value, '')}")
        elif flag in ("-l", "--label"):
            key, _, val = value.partition("=")
            spec["labels"][key] = val
        elif flag in ("-v", "--volume"):
            spec["binds"].append(value)
        elif flag in ("-p", "--publish"):
            spec["ports"].append(parse_port(value))
        elif flag == "--restart":
            spec["restart"] = value
        elif flag in ("--network", "--net"):
            spec["network"] = value
    if i >= len(args):
        raise DockerError('"docker run" requires at least 1 argument.', 125)
    spec["image"] = args[i]
    spec["command"] = args[i + 1 :]
    return spec, detach


# --- compose: files loaded as `docker compose` loads them ----------------------------

# The Compose schema the Hub vendors (compose/spec/), from this file's own checkout.
COMPOSE_SCHEMA = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "compose",
    "spec",
    "compose-spec.json",
)
# The stand-ins run without site-packages (-IS); loading a compose file takes Debian's
# python3-yaml and python3-jsonschema, and only then.
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
# Sandbox policy standing for the Hub's own rule: an image is pinned by digest.
PINNED_IMAGE = r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$"
# The commands that pull or start images.
IMAGE_COMMANDS = ("up", "create", "pull", "run")


def _dist_packages() -> None:
    if DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)


class _Interpolation:
    """Compose's variable syntax: $$ is a literal $; ${NAME}, $NAME, ${NAME:-default},
    ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, ${NAME+alt}."""

    def __init__(self, env: dict[str, str]) -> None:
        import re

        self.env = env
        self.pattern = re.compile(
            r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
            r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<invalid>))"
        )
        self.unset: list[str] = []

    def value(self, text: str, where: str) -> str:
        if "$" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            if match["escaped"]:
                return "$"
            if match["invalid"] is not None:
                raise DockerError(
                    f'invalid interpolation format for {where}: "{text}"; you may need to escape any $ with another $',
                    15,
                )
            name = match["braced"] or match["named"]
            op, arg = match["op"] or "", match["arg"] or ""
            current = self.env.get(name)
            if op in (":?", "?") and (current is None or (op == ":?" and not current)):
                raise DockerError(f"required variable {name} is missing a value" + (f": {arg}" if arg else ""), 15)
            if op in (":-", "-"):
                return current if current is not None and (current or op == "-") else arg
            if op in (":+", "+"):
                return arg if (current if op == ":+" else current is not None) else ""
            if current is None:
                self.unset.append(name)
                return ""
            return current

        return self.pattern.sub(replace, text)

    def walk(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return self.value(value, where)
        if isinstance(value, list):
            return [self.walk(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self.walk(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        return value


def _schema_errors(document: Any) -> list[str]:
    _dist_packages()
    import jsonschema

    validator = jsonschema.Draft7Validator(lean.loads(Path(COMPOSE_SCHEMA).read_text()))
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'} {_compose_words(e)}" for e in errors]


def _compose_words(error: Any) -> str:
    """Compose's wording where it differs from jsonschema's: an unknown key."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return str(error.message)
    import re

    known = error.schema.get("properties") or {}
    patterns = error.schema.get("patternProperties") or {}
    extra = [k for k in error.instance if k not in known and not any(re.search(p, str(k)) for p in patterns)]
    return f"Additional property {extra[0]} is not allowed" if extra else str(error.message)


def load_compose_file(path: Path, env: dict[str, str]) -> dict[str, Any]:
    """One compose file as Compose loads it: YAML, variables interpolated, then the
    Compose schema; a DockerError with Compose's words when it refuses."""
    _dist_packages()
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DockerError(f"yaml: {exc}", 15) from exc
    if document is None:
        raise DockerError(f"empty compose file: {path.resolve()}", 15)
    if not isinstance(document, dict):
        raise DockerError(f"Top-level object must be a mapping: {path.resolve()}", 15)
    interpolation = _Interpolation(env)
    document = interpolation.walk(document, "")
    for name in dict.fromkeys(interpolation.unset):
        sys.stderr.write(f'WARN[0000] The "{name}" variable is not set. Defaulting to a blank string.\n')
    errors = _schema_errors(document)
    if errors:
        raise DockerError(f"validating {path.resolve()}: {errors[0]}", 15)
    return document


_PROJECT_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


class ComposeProject:
    def __init__(self, files: list[str], project: str | None) -> None:
        if not files:
            for candidate in ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"):
                if Path(candidate).exists():
                    files = [candidate]
                    break
        if not files:
            raise DockerError("no configuration file provided: not found", 14)
        first = Path(files[0]).resolve()
        env = dict(os.environ)
        dotenv = first.parent / ".env"
        if dotenv.exists():
            for line in dotenv.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    k, _, v = line.partition("=")
                    env.setdefault(k.strip(), v.strip().strip("\"'"))
        self.services: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, Any] = {}
        doc_name = None
        for f in files:
            path = Path(f)
            if not path.exists():
                raise DockerError(f"open {path.resolve()}: no such file or directory", 14)
            doc = load_compose_file(path, env)
            doc_name = doc.get("name") or doc_name
            for svc, conf in (doc.get("services") or {}).items():
                self.services.setdefault(svc, {}).update(conf or {})
            self.volumes.update(doc.get("volumes") or {})
        raw = project or env.get("COMPOSE_PROJECT_NAME") or doc_name or first.parent.name
        self.name = "".join(c for c in raw.lower() if c in _PROJECT_NAME_CHARACTERS) or "default"
        self.files = [str(Path(f).resolve()) for f in files]
        self.workdir = str(first.parent)
        self._check_references()

    def _check_references(self) -> None:
        """What the schema cannot see and Compose refuses all the same."""
        for svc, conf in self.services.items():
            for dependency in self.dependencies(svc):
                if dependency not in self.services:
                    raise DockerError(
                        f'service "{svc}" depends on undefined service "{dependency}": invalid compose project', 15
                    )
            for volume in conf.get("volumes") or []:
                if isinstance(volume, dict):
                    source = str(volume.get("source") or "") if volume.get("type", "volume") == "volume" else ""
                else:
                    source = volume.split(":", 1)[0] if ":" in volume else ""
                if source and not source.startswith(("/", ".", "~")) and source not in self.volumes:
                    raise DockerError(
                        f'service "{svc}" refers to undefined volume {source}: invalid compose project', 15
                    )

    def dependencies(self, svc: str) -> list[str]:
        depends = self.services[svc].get("depends_on") or []
        return list(depends) if isinstance(depends, list | dict) else []

    def with_dependencies(self, services: list[str]) -> list[str]:
        """The services and everything they depend on, dependencies first (as `up`)."""
        ordered: list[str] = []

        def visit(svc: str, path: tuple[str, ...]) -> None:
            if svc in ordered:
                return
            if svc in path:
                raise DockerError(f"dependency cycle detected: {' -> '.join([*path, svc])}", 15)
            for dependency in self.dependencies(svc):
                visit(dependency, (*path, svc))
            ordered.append(svc)

        for svc in services:
            visit(svc, ())
        return ordered

    def require_pinned(self, services: list[str]) -> None:
        import re

        for svc in services:
            image = str(self.services[svc].get("image") or "")
            if image and not re.match(PINNED_IMAGE, image):
                raise DockerError(
                    f'service "{svc}" refers to image "{image}", which is not pinned by digest '
                    "(sandbox policy, the Hub's rule: name@sha256:<64 hex>)",
                    15,
                )

    def container_name(self, svc: str) -> str:
        return self.services[svc].get("container_name") or f"{self.name}-{svc}-1"

    def spec(self, svc: str) -> dict[str, Any]:
        conf = self.services[svc]
        if not conf.get("image"):
            raise DockerError(
                f"service {svc!r} has neither an image nor a build context specified: invalid compose project", 15
            )
        labels = conf.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(str(x).partition("=")[::2] for x in labels)
        env = conf.get("environment") or []
        if isinstance(env, dict):
            env = [f"{k}={'' if v is None else v}" for k, v in env.items()]
        env = self.env_file(conf.get("env_file")) + [str(e) for e in env]
        labels = {str(k): str(v) for k, v in labels.items()}
        labels.update(
            {
                "com.docker.compose.project": self.name,
                "com.docker.compose.service": svc,
                "com.docker.compose.project.config_files": ",".join(self.files),
                "com.docker.compose.project.working_dir": self.workdir,
                "com.docker.compose.container-number": "1",
            }
        )
        command = conf.get("command") or []
        if isinstance(command, str):
            command = command.split()
        return {
            "name": self.container_name(svc),
            "image": str(conf["image"]),
            "labels": labels,
            "env": [str(e) for e in env],
            "binds": [str(v) for v in conf.get("volumes") or [] if isinstance(v, str)],
            "mounts": [
                containers.parse_mount(v, project=self.name, declared=self.volumes, service=svc, workdir=self.workdir)
                for v in conf.get("volumes") or []
            ],
            "ports": [parse_port(str(p)) for p in conf.get("ports") or []],
            "restart": str(conf.get("restart") or "no"),
            "network": f"{self.name}_default",
            "command": [str(c) for c in command],
        }

    def env_file(self, value: Any) -> list[str]:
        """A service's env_file entries, as KEY=VALUE lines, relative to the project."""
        entries = value if isinstance(value, list) else [value] if value else []
        lines: list[str] = []
        for entry in entries:
            path = str(entry.get("path") if isinstance(entry, dict) else entry)
            full = Path(path if path.startswith("/") else f"{self.workdir}/{path}")
            if not full.exists():
                if isinstance(entry, dict) and entry.get("required") is False:
                    continue
                raise DockerError(f"env file {full} not found: stat {full}: no such file or directory", 1)
            for line in full.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    key, _, val = line.partition("=")
                    lines.append(f"{key.strip()}={val.strip().strip(chr(34) + chr(39))}")
        return lines


def compose_exec(engine: Engine, proj: ComposeProject, rest: list[str]) -> int:
    options, service, command = containers.parse_exec(rest)
    if service not in proj.services:
        raise DockerError(f"no such service: {service}", 1)
    container = engine.state["containers"].get(proj.container_name(service))
    if container is None or container["state"] != "running":
        raise DockerError(f'service "{service}" is not running', 1)
    engine.release()
    return containers.run_in_container(container, options, command)


def volume(engine: Engine, args: list[str]) -> int:
    """docker volume ls | inspect | create | rm, on the engine's named volumes."""
    sub, rest = (args[0], args[1:]) if args else ("ls", [])
    volumes = engine.state["volumes"]
    if sub in ("ls", "list"):
        fmt = option_value(rest, "--format")
        filters = [rest[i + 1] for i, a in enumerate(rest) if a in ("-f", "--filter") and i + 1 < len(rest)]
        rows = []
        for name in sorted(volumes):
            info = volumes[name]
            ok = True
            for flt in filters:
                key, _, val = flt.partition("=")
                if key == "name":
                    ok = ok and val in name
                elif key == "label":
                    label, has_eq, wanted = val.partition("=")
                    ok = ok and label in info["Labels"] and (not has_eq or info["Labels"][label] == wanted)
                elif key == "dangling":
                    used = any(
                        any(m.get("name") == name for m in c.get("mounts") or [])
                        for c in engine.state["containers"].values()
                    )
                    ok = ok and (used != (val in ("true", "1")))
            if ok:
                rows.append(
                    {
                        "Driver": info["Driver"],
                        "Name": name,
                        "Labels": labels_string(info["Labels"]),
                        "Mountpoint": info["Mountpoint"],
                        "Scope": "local",
                    }
                )
        if "-q" in rest or "--quiet" in rest:
            engine.print("\n".join(r["Name"] for r in rows)) if rows else None
        elif fmt:
            for row in rows:
                engine.print(render_format(fmt, row))
        else:
            engine.print("DRIVER    VOLUME NAME")
            for row in rows:
                engine.print(f"local     {row['Name']}")
        return 0
    if sub == "inspect":
        fmt = option_value(rest, "--format", "-f")
        names = positional(rest, ("--format", "-f"))
        found = [volumes[n] for n in names if n in volumes]
        for info in found:
            if fmt:
                engine.print(render_format(fmt, info))
        if not fmt:
            engine.print(lean.dumps(found, indent=4))
        missing = [n for n in names if n not in volumes]
        if missing:
            raise DockerError(f"Error response from daemon: get {missing[0]}: no such volume", 1)
        return 0
    if sub == "create":
        labels = dict(
            v.partition("=")[::2] for v in [rest[i + 1] for i, a in enumerate(rest) if a in ("-l", "--label")]
        )
        names = positional(rest, ("-l", "--label", "-d", "--driver", "-o", "--opt"))
        name = names[0] if names else _sha256(now_iso())
        mount = {"name": name, "key": name}
        containers.volume_ensure(engine.state, mount, project="", created=now_iso())
        engine.state["volumes"][name]["Labels"] = labels
        engine.print(name)
        return 0
    if sub in ("rm", "remove"):
        force = "-f" in rest or "--force" in rest
        for name in positional(rest):
            containers.volume_remove(engine.state, name, force=force)
            engine.print(name)
        return 0
    raise DockerError(f"docker: 'volume {sub}' is not a docker command (sandbox stand-in).", 1)


# Options of `compose exec` and `compose run` that take a value.
_EXEC_VALUE_FLAGS = (
    "-e",
    "--env",
    "-u",
    "--user",
    "-w",
    "--workdir",
    "--index",
    "--name",
    "--entrypoint",
    "-p",
    "--publish",
    "-v",
    "--volume",
    "-l",
    "--label",
)


def _target_service(rest: list[str]) -> tuple[str, list[str]]:
    i = 0
    while i < len(rest) and rest[i].startswith("-"):
        i += 2 if rest[i] in _EXEC_VALUE_FLAGS else 1
    if i >= len(rest):
        raise DockerError('"docker compose exec" requires at least 2 arguments.', 1)
    return rest[i], rest[i + 1 :]


def compose(engine: Engine, args: list[str]) -> int:
    files: list[str] = []
    project = None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-f", "--file"):
            files.append(args[i + 1])
            i += 2
        elif args[i] in ("-p", "--project-name"):
            project = args[i + 1]
            i += 2
        elif args[i].startswith("--file="):
            files.append(args[i].split("=", 1)[1])
            i += 1
        elif args[i] == "--project-directory" or args[i] == "--env-file":
            i += 2
        else:
            i += 1
    if i >= len(args):
        raise DockerError("Usage:  docker compose [OPTIONS] COMMAND", 1)
    sub, rest = args[i], args[i + 1 :]
    if sub == "version":
        engine.print(f"Docker Compose version {COMPOSE_VERSION}")
        return 0
    proj = ComposeProject(files, project)
    if sub == "exec":
        return compose_exec(engine, proj, rest)
    if sub == "run":
        service, command = _target_service(rest)
        if service not in proj.services:
            raise DockerError(f"no such service: {service}", 1)
        proj.require_pinned([service])
        raise DockerError(f"sandbox docker compose: run runs no command in the sandbox (no engine): {command}", 1)
    if sub == "config" and ("--services" in rest or "--volumes" in rest):
        engine.print("\n".join(proj.services if "--services" in rest else proj.volumes))
        return 0
    flags = [a for a in rest if a.startswith("-")]
    named = [a for a in rest if not a.startswith("-") and a not in ("json", "table")]
    unknown = [s for s in named if s not in proj.services]
    if sub in ("up", "pull", "stop", "start", "restart", "rm", "ps", "create") and unknown:
        raise DockerError(f"no such service: {unknown[0]}", 1)
    services = named or list(proj.services)
    if sub in ("up", "create"):
        services = proj.with_dependencies(services)
    if sub in IMAGE_COMMANDS:
        proj.require_pinned(services)
    mine = {
        name: c
        for name, c in engine.state["containers"].items()
        if c["labels"].get("com.docker.compose.project") == proj.name
    }
    if sub == "config":
        if "-q" not in flags and "--quiet" not in flags:
            _dist_packages()
            import yaml

            engine.print(yaml.safe_dump({"name": proj.name, "services": proj.services}, sort_keys=True).rstrip("\n"))
        return 0
    if sub == "pull":
        for svc in services:
            engine.pull(proj.spec(svc)["image"])
        return 0
    if sub in ("up", "create"):
        for svc in services:
            spec = proj.spec(svc)
            for mount in spec["mounts"]:
                if mount["type"] == "volume" and mount["name"]:
                    containers.volume_ensure(engine.state, mount, project=proj.name, created=now_iso())
            current = engine.state["containers"].get(spec["name"])
            if current and normalize_ref(current["image"]) != normalize_ref(spec["image"]):
                engine.stop(current)
                del engine.state["containers"][spec["name"]]
                current = None
            if current is None:
                current = engine.create(spec)
            if "--no-start" in flags:
                engine.print(f" Container {spec['name']}  Created")
                continue
            if sub == "create":
                continue
            depends = proj.services[svc].get("depends_on") or {}
            for dependency, condition in depends.items() if isinstance(depends, dict) else []:
                dep = engine.state["containers"].get(proj.container_name(dependency))
                wanted = (condition or {}).get("condition", "service_started")
                if wanted == "service_healthy" and dep is not None and dep["health"] == "unhealthy":
                    engine.save()
                    raise DockerError(f"dependency failed to start: container {dep['name']} is unhealthy", 1)
            engine.start(current)
            engine.print(f" Container {spec['name']}  Started")
        return 0
    if sub in ("stop", "start", "restart"):
        for c in mine.values():
            if c["labels"].get("com.docker.compose.service") in services:
                if sub in ("stop", "restart"):
                    engine.stop(c)
                if sub in ("start", "restart"):
                    engine.start(c)
        return 0
    if sub in ("down", "rm"):
        for name, c in list(mine.items()):
            if sub == "down" or c["labels"].get("com.docker.compose.service") in services:
                engine.stop(c)
                del engine.state["containers"][name]
        if sub == "down" and ("-v" in flags or "--volumes" in flags):
            for key, config in proj.volumes.items():
                config = config or {}
                if not config.get("external"):
                    containers.volume_remove(engine.state, str(config.get("name") or f"{proj.name}_{key}"), force=True)
        return 0
    if sub == "ps":
        show_all = "-a" in flags or "--all" in flags
        rows = [
            compose_row(c)
            for c in sorted(mine.values(), key=lambda c: c["name"])
            if (show_all or c["state"] == "running") and c["labels"].get("com.docker.compose.service") in services
        ]
        if "json" in rest or "--format=json" in rest:
            for row in rows:
                engine.print(lean.dumps(row))
        elif "-q" in flags or "--quiet" in flags:
            for row in rows:
                engine.print(row["ID"])
        else:
            engine.print("NAME\tIMAGE\tSERVICE\tSTATUS")
            for row in rows:
                engine.print(f"{row['Name']}\t{row['Image']}\t{row['Service']}\t{row['Status']}")
        return 0
    raise DockerError(f"sandbox docker compose: unsupported command {sub!r}", 1)


# --- the commands -----------------------------------------------------------------


def option_value(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        if a in names and i + 1 < len(args):
            return args[i + 1]
        for n in names:
            if n.startswith("--") and a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def positional(args: list[str], value_flags: tuple[str, ...] = ()) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in value_flags:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def ps(engine: Engine, args: list[str]) -> int:
    show_all = "-a" in args or "--all" in args
    fmt = option_value(args, "--format")
    filters = [args[i + 1] for i, a in enumerate(args) if a in ("-f", "--filter") and i + 1 < len(args)]
    rows = []
    for c in sorted(engine.state["containers"].values(), key=lambda c: c["name"]):
        if not show_all and c["state"] != "running":
            continue
        ok = True
        for flt in filters:
            key, _, val = flt.partition("=")
            if key == "name":
                ok = ok and val in c["name"]
            elif key == "label":
                lk, has_eq, lv = val.partition("=")
                ok = ok and lk in c["labels"] and (not has_eq or c["labels"][lk] == lv)
            elif key == "status":
                ok = ok and c["state"] == val
        if ok:
            rows.append(ps_row(c))
    if "-q" in args or "--quiet" in args:
        for row in rows:
            engine.print(row["ID"])
    elif fmt:
        for row in rows:
            engine.print(render_format(fmt, row))
    else:
        engine.print("CONTAINER ID\tIMAGE\tSTATUS\tNAMES")
        for row in rows:
            engine.print(f"{row['ID']}\t{row['Image']}\t{row['Status']}\t{row['Names']}")
    return 0


def main(argv: list[str]) -> int:
    paths = Paths()
    record_call(paths, argv)
    apply_generic_faults(paths, argv)
    engine = Engine(paths)
    # Global options before the command (-H, --context) mean nothing here.
    while argv and argv[0] in ("-H", "--host", "--context", "--config", "-l", "--log-level"):
        argv = argv[2:]
    if not argv:
        raise DockerError("Usage:  docker [OPTIONS] COMMAND", 1)
    cmd, args = argv[0], argv[1:]
    if cmd == "container" and args:
        cmd, args = args[0], args[1:]
        cmd = {"ls": "ps", "list": "ps"}.get(cmd, cmd)
    elif cmd == "image" and args:
        sub, args = args[0], args[1:]
        cmd = {"pull": "pull", "ls": "images", "list": "images", "rm": "rmi", "inspect": "image-inspect"}.get(
            sub, "image " + sub
        )
    rc = 0
    changed = True
    if cmd == "version":
        fmt = option_value(args, "--format", "-f")
        data = {
            "Client": {"Version": VERSION, "ApiVersion": "1.47"},
            "Server": {"Version": VERSION, "ApiVersion": "1.47"},
        }
        engine.print(
            render_format(fmt, data) if fmt else f"Client:\n Version: {VERSION}\n\nServer:\n Version: {VERSION}"
        )
        changed = False
    elif cmd == "info":
        engine.print(f"Server Version: {VERSION}\nContainers: {len(engine.state['containers'])}")
        changed = False
    elif cmd == "pull":
        refs = positional(args, ("--platform",))
        if not refs:
            raise DockerError('"docker pull" requires exactly 1 argument.', 1)
        engine.pull(refs[0])
    elif cmd == "images":
        fmt = option_value(args, "--format")
        for image in sorted(engine.state["images"].values(), key=lambda i: i["ref"]):
            row = {
                "Containers": "N/A",
                "CreatedAt": image["created"],
                "CreatedSince": "1 minute ago",
                "Digest": "<none>",
                "ID": image["id"].removeprefix("sha256:")[:12],
                "Repository": image["repository"],
                "SharedSize": "N/A",
                "Size": "1kB",
                "Tag": image["tag"],
                "UniqueSize": "N/A",
                "VirtualSize": "1kB",
            }
            engine.print(render_format(fmt, row) if fmt else f"{row['Repository']}\t{row['Tag']}\t{row['ID']}")
        changed = False
    elif cmd == "ps":
        ps(engine, args)
        changed = False
    elif cmd in ("inspect", "image-inspect"):
        fmt = option_value(args, "--format", "-f")
        kind = option_value(args, "--type")
        names = positional(args, ("--format", "-f", "--type"))
        results, missing = [], []
        for name in names:
            obj = None
            if kind != "image" and cmd == "inspect":
                try:
                    obj = inspect_container(engine.container(name))
                except DockerError:
                    obj = None
            if obj is None and kind != "container":
                image = engine.find_image(name)
                obj = inspect_image(image) if image else None
            if obj is None:
                missing.append(name)
            else:
                results.append(obj)
        if fmt:
            for obj in results:
                engine.print(render_format(fmt, obj))
        else:
            engine.print(lean.dumps(results, indent=4))
        changed = False
        if missing:
            raise DockerError(f"Error: No such object: {missing[0]}", 1)
    elif cmd in ("run", "create"):
        spec, detach = parse_run(args)
        spec.setdefault("name", f"sandbox_{_sha256(now_iso())[:8]}")
        container = engine.create(spec)
        if cmd == "run":
            engine.start(container)
        if detach or cmd == "create":
            engine.print(container["id"])
    elif cmd in ("stop", "start", "restart", "kill"):
        targets = positional(args, ("-t", "--time", "-s", "--signal"))
        if not targets:
            raise DockerError(f'"docker {cmd}" requires at least 1 argument.', 1)
        errors = []
        for name in targets:
            try:
                c = engine.container(name)
            except DockerError as exc:
                errors.append(str(exc))
                continue
            if cmd in ("stop", "restart", "kill"):
                engine.stop(c)
            if cmd in ("start", "restart"):
                engine.start(c)
            engine.print(name)
        if errors:
            engine.save()
            raise DockerError("\n".join(errors), 1)
    elif cmd == "rename":
        old, new = positional(args)[:2]
        c = engine.container(old)
        if new in engine.state["containers"]:
            raise DockerError(f'Error response from daemon: Conflict. The container name "/{new}" is already in use', 1)
        del engine.state["containers"][c["name"]]
        c["name"] = new
        engine.state["containers"][new] = c
    elif cmd == "rm":
        force = "-f" in args or "--force" in args
        for name in positional(args):
            c = engine.container(name)
            if c["state"] == "running" and not force:
                raise DockerError(
                    f'Error response from daemon: cannot remove container "/{c["name"]}": container is running: '
                    "stop the container before removing or force remove",
                    1,
                )
            del engine.state["containers"][c["name"]]
            engine.print(name)
    elif cmd == "rmi":
        force = "-f" in args or "--force" in args
        for ref in positional(args):
            image = engine.find_image(ref)
            if image is None:
                raise DockerError(f"Error response from daemon: No such image: {ref}", 1)
            users = [c["name"] for c in engine.state["containers"].values() if c["image_id"] == image["id"]]
            if users and not force:
                raise DockerError(
                    f'Error response from daemon: conflict: unable to remove repository reference "{ref}" '
                    f"(must force) - container {users[0]} is using its referenced image {image['id'][7:19]}",
                    1,
                )
            del engine.state["images"][image["ref"]]
            engine.print(f"Untagged: {image['ref']}\nDeleted: {image['id']}")
    elif cmd == "logs":
        engine.container(positional(args, ("--tail", "-n", "--since"))[0])
        engine.print("sandbox: no logs")
        changed = False
    elif cmd == "compose":
        rc = compose(engine, args)
    elif cmd == "volume":
        rc = volume(engine, args)
    else:
        raise DockerError(f"docker: '{cmd}' is not a docker command (sandbox stand-in).\nSee 'docker --help'", 1)
    if changed:
        engine.save()
    if engine.out:
        sys.stdout.write("\n".join(engine.out) + "\n")
    return rc


def run() -> int:
    """The entry point of the `docker` launcher: a DockerError is docker's own message and exit code."""
    try:
        return main(sys.argv[1:])
    except (DockerError, containers.ExecError) as exc:
        sys.stderr.write(str(exc) + "\n")
        return exc.code
