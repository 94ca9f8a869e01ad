"""The tenant's Compose stacks, written on the Hub: one project per tool at
/opt/hub/tools/<tool>/compose.yml (the tool's service, the database services its
registry entry needs, named volumes, healthchecks, memory limits, the image's real
port published on 127.0.0.1 only), an nginx vhost per subdomain, and the AI stack at
/opt/hub/ai/compose.yml. Every image comes from the release pinned for the order
(name@sha256:...), and every file is checked before it leaves the Hub: against the
Compose schema (compose/spec/) and for what the schema cannot see (a `depends_on` of
an undefined service, an unset variable, an image not pinned)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from provisioning import catalog

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "compose" / "spec" / "compose-spec.json"
TOOLS_DIR = "/opt/hub/tools"
AI_COMPOSE = "/opt/hub/ai/compose.yml"
COMPONENT_LABEL = "hub.component"
# The label the agent reads a container's version from (agent/docker.py).
VERSION_LABEL = "hub.version"

PINNED_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
# Compose's interpolation: $$ is a literal $, ${NAME}, ${NAME:-default}, ${NAME:?error},
# ${NAME+alt}, $NAME; anything else after a $ is an error.
_VARIABLE_RE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<invalid>))"
)


class StackInvalid(Exception):
    """A generated compose file that Compose would refuse (or an image not pinned)."""


@dataclass(frozen=True)
class Pin:
    """The release an order installs for one component."""

    component: str
    version: str
    image: str

    def as_json(self) -> dict[str, str]:
        return {"version": self.version, "image": self.image}


def pinned_image(reference: str) -> str:
    """name@sha256:<digest> from a release's `name[:tag]@sha256:<digest>`: the digest
    alone decides what runs, a tag beside it would only mislead."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return f"{name}@{digest}"


def pins_from_json(data: Mapping[str, Mapping[str, str]]) -> dict[str, Pin]:
    return {name: Pin(component=name, version=pin["version"], image=pin["image"]) for name, pin in data.items()}


@dataclass(frozen=True)
class ToolStack:
    tool: str
    compose: str
    # The nginx server block of its subdomain ("" for a tool without one).
    vhost: str
    # The lines of its .env, without values: "NAME KIND ARG" (catalog.Secret).
    env_spec: str

    @property
    def path(self) -> str:
        return f"{TOOLS_DIR}/{self.tool}/compose.yml"


def _pin(pins: Mapping[str, Pin], component: str) -> Pin:
    pin = pins.get(component)
    if pin is None:
        raise StackInvalid(f"no release pinned for {component}")
    return pin


def _healthcheck(check: catalog.Healthcheck) -> dict[str, Any]:
    return {
        "test": list(check.test),
        "interval": check.interval,
        "timeout": check.timeout,
        "retries": check.retries,
        "start_period": check.start_period,
    }


def _service(component: catalog.Component, pin: Pin, *, host: str = "", role: str = "") -> dict[str, Any]:
    url = f"https://{host}" if host else ""
    service: dict[str, Any] = {
        "image": pin.image,
        "restart": "unless-stopped",
        "mem_limit": f"{component.ram_mb}m",
        "labels": {COMPONENT_LABEL: component.name, VERSION_LABEL: pin.version, **({"hub.role": role} if role else {})},
    }
    if component.entrypoint:
        service["entrypoint"] = list(component.entrypoint)
    if component.command:
        service["command"] = list(component.command)
    if component.environment:
        service["environment"] = {
            name: value.replace("{host}", host).replace("{url}", url) for name, value in component.environment
        }
    volumes = [f"{component.name}-data:{component.data_path}"] if component.data_path else []
    volumes += list(component.binds)
    if volumes:
        service["volumes"] = volumes
    if component.healthcheck is not None:
        service["healthcheck"] = _healthcheck(component.healthcheck)
    return service


def _named_volumes(services: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = [
        volume.split(":", 1)[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if not volume.startswith("/")
    ]
    return {name: {} for name in names}


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)


def tool_compose(tool_name: str, *, domain: str, pins: Mapping[str, Pin]) -> str:
    tool = catalog.TOOLS[tool_name]
    host = f"{tool.subdomain}.{domain}" if tool.subdomain else domain
    service = _service(tool, _pin(pins, tool.name), host=host)
    service["ports"] = [f"127.0.0.1:{tool.host_port}:{tool.port}"]
    if tool.needs:
        service["depends_on"] = {need: {"condition": "service_healthy"} for need in tool.needs}
    services = {tool.name: service}
    for need in tool.needs:
        services[need] = _service(catalog.DATABASES[need], _pin(pins, need), role="database")
    return _dump({"name": tool.name, "services": services, "volumes": _named_volumes(services)})


def tool_vhost(tool_name: str, *, domain: str) -> str:
    tool = catalog.TOOLS[tool_name]
    if not tool.subdomain:
        return ""
    return f"""server {{
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name {tool.subdomain}.{domain};
    ssl_certificate /etc/letsencrypt/live/{domain}/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/{domain}/privkey.pem;
    client_max_body_size 512m;
    location / {{
        proxy_pass http://127.0.0.1:{tool.host_port};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto https;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
    }}
}}
"""


def env_spec(tool_name: str) -> str:
    return "".join(f"{s.name} {s.kind} {s.arg}\n" for s in catalog.stack_secrets(catalog.TOOLS[tool_name]))


def tool_stack(tool_name: str, *, domain: str, pins: Mapping[str, Pin]) -> ToolStack:
    """The tool's compose file, vhost and .env spec; StackInvalid if the file would be
    refused."""
    compose = tool_compose(tool_name, domain=domain, pins=pins)
    names = {secret.name for secret in catalog.stack_secrets(catalog.TOOLS[tool_name])}
    errors = compose_errors(compose, env_names=names)
    if errors:
        raise StackInvalid(f"the compose file of {tool_name} is invalid: {'; '.join(errors)}")
    return ToolStack(
        tool=tool_name, compose=compose, vhost=tool_vhost(tool_name, domain=domain), env_spec=env_spec(tool_name)
    )


def ai_compose(*, pins: Mapping[str, Pin]) -> str:
    services = {name: _service(component, _pin(pins, name)) for name, component in catalog.AI_STACK.items()}
    document: dict[str, Any] = {"name": "ai", "services": services}
    volumes = _named_volumes(services)
    if volumes:
        document["volumes"] = volumes
    compose = _dump(document)
    errors = compose_errors(compose, env_names=())
    if errors:
        raise StackInvalid(f"the AI stack's compose file is invalid: {'; '.join(errors)}")
    return compose


# --- checks ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA_PATH.read_text()))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def variables(text: str) -> tuple[set[str], list[str]]:
    """The variables a Compose value refers to, and its interpolation errors."""
    names, errors = set(), []
    for match in _VARIABLE_RE.finditer(text):
        if match["escaped"]:
            continue
        if match["invalid"] is not None:
            errors.append(f"invalid interpolation format for {text!r}: a lone $ (write $$ for a literal $)")
            continue
        names.add(match["braced"] or match["named"])
    return names, errors


def compose_errors(text: str, *, env_names: Iterable[str]) -> list[str]:
    """Why `docker compose` (or the Hub's own rule) would refuse this file; empty when
    it would not. `env_names` are the variables the stack's .env defines."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    if not isinstance(document, dict):
        return ["a compose file is a mapping"]
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]
    services = document.get("services") or {}
    if not isinstance(services, dict):
        return errors
    known = set(env_names)
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        depends = service.get("depends_on") or []
        for dependency in depends if isinstance(depends, list) else list(depends):
            if dependency not in services:
                errors.append(f'service "{name}" depends on undefined service "{dependency}"')
        image = service.get("image")
        if not isinstance(image, str) or not PINNED_RE.match(image):
            errors.append(f'service "{name}": image {image!r} is not pinned by digest (name@sha256:<64 hex>)')
    for value in _strings(document):
        names, problems = variables(value)
        errors += problems
        errors += [f"variable {n} is not set (not in the stack's .env)" for n in sorted(names - known)]
    return errors


def b64(text: str) -> str:
    """For the script's environment: one word, whatever the text holds ("-" for none)."""
    return base64.b64encode(text.encode()).decode() if text else "-"
