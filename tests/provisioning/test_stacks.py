"""The compose files the Hub writes for tenants: every tool of the registry, on every tier
it fits, validates against the Compose schema, defines the services its registry
entry needs, and runs only images pinned by digest; the checks refuse what Compose
would refuse."""

from __future__ import annotations

import hashlib
import re

import pytest
import yaml

from provisioning import catalog
from provisioning.services import stacks

DOMAIN = "acme-bar.example"


def made_up_pins() -> dict[str, stacks.Pin]:
    components = {**catalog.TOOLS, **catalog.DATABASES, **catalog.AI_STACK}
    return {
        name: stacks.Pin(
            component=name,
            version="1.0.0",
            image=f"{component.image}@sha256:{hashlib.sha256(name.encode()).hexdigest()}",
        )
        for name, component in components.items()
    }


FITS = [(tool, tier) for tier in catalog.PLANS for tool in catalog.TOOLS if catalog.tools_fit(tier, [tool])]


def test_every_tool_fits_some_tier_and_bookstack_is_in_the_registry() -> None:
    assert {tool for tool, _ in FITS} == set(catalog.TOOLS)
    assert catalog.TOOLS["bookstack"].subdomain == "wiki" and catalog.TOOLS["bookstack"].needs == ("mysql",)


@pytest.mark.parametrize(("tool", "tier"), FITS)
def test_the_stack_of_every_tool_on_every_tier_it_fits_is_valid_and_pinned(tool: str, tier: str) -> None:
    pins = made_up_pins()
    entry = catalog.TOOLS[tool]

    stack = stacks.tool_stack(tool, domain=DOMAIN, pins=pins)

    secrets = {secret.name for secret in catalog.stack_secrets(entry)}
    assert stacks.compose_errors(stack.compose, env_names=secrets) == []
    document = yaml.safe_load(stack.compose)
    assert document["name"] == tool
    services = document["services"]
    assert set(services) == {tool, *entry.needs}
    for name, service in services.items():
        assert re.fullmatch(r"[a-z0-9./-]+@sha256:[0-9a-f]{64}", service["image"]), service["image"]
        assert service["image"] == pins[name].image
        assert service["restart"] == "unless-stopped"
        component = catalog.DATABASES.get(name) or entry
        assert service["mem_limit"] == f"{component.ram_mb}m"
        assert service["labels"] == {
            "hub.component": name,
            "hub.version": "1.0.0",
            **({"hub.role": "database"} if name in catalog.DATABASES else {}),
        }
        assert ("healthcheck" in service) == (component.healthcheck is not None)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith("/") or source in document["volumes"]
    app = services[tool]
    assert app["ports"] == [f"127.0.0.1:{entry.host_port}:{entry.port}"]
    assert app.get("depends_on", {}) == {need: {"condition": "service_healthy"} for need in entry.needs}
    assert f"proxy_pass http://127.0.0.1:{entry.host_port};" in stack.vhost
    assert f"server_name {entry.subdomain}.{DOMAIN};" in stack.vhost
    # The .env holds the database credentials as the layout names them.
    if "postgres" in entry.needs:
        assert f"POSTGRES_USER value {tool}\n" in stack.env_spec and f"POSTGRES_DB value {tool}\n" in stack.env_spec
    if "mysql" in entry.needs:
        assert f"MYSQL_DATABASE value {tool}\n" in stack.env_spec and "MYSQL_ROOT_PASSWORD hex" in stack.env_spec


def test_every_tool_has_its_own_host_port_and_subdomain() -> None:
    ports = [tool.host_port for tool in catalog.TOOLS.values()]
    subdomains = [tool.subdomain for tool in catalog.TOOLS.values()]
    assert len(set(ports)) == len(ports) and all(ports)
    assert len(set(subdomains)) == len(subdomains)


def test_the_ai_stack_is_valid_and_pinned() -> None:
    pins = made_up_pins()

    document = yaml.safe_load(stacks.ai_compose(pins=pins))

    assert document["name"] == "ai"
    assert {name: s["image"] for name, s in document["services"].items()} == {
        name: pins[name].image for name in catalog.AI_STACK
    }


def test_a_component_without_a_pinned_release_gets_no_stack() -> None:
    pins = made_up_pins()
    del pins["mysql"]

    with pytest.raises(stacks.StackInvalid, match="no release pinned for mysql"):
        stacks.tool_stack("ghost", domain=DOMAIN, pins=pins)


def test_a_release_s_tag_is_dropped_and_its_digest_kept() -> None:
    digest = "sha256:" + "b" * 64
    assert (
        stacks.pinned_image(f"registry.example:5000/team/app:1.2@{digest}")
        == f"registry.example:5000/team/app@{digest}"
    )
    assert stacks.pinned_image(f"ghost@{digest}") == f"ghost@{digest}"


GOOD = "services:\n  web:\n    image: nginx@sha256:" + "a" * 64 + "\n"


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        (GOOD + "    colour: red\n", (), "colour"),
        (GOOD + "    depends_on: [db]\n", (), 'depends on undefined service "db"'),
        (GOOD + "    environment:\n      A: ${SECRET:?}\n", (), "variable SECRET is not set"),
        (GOOD + "    environment:\n      A: cost $5\n", (), "invalid interpolation"),
        ("services:\n  web:\n    image: nginx:1.27\n", (), "not pinned by digest"),
        ("services: [web]\n", (), "services"),
    ],
)
def test_the_checks_refuse_what_compose_would(text: str, env: tuple[str, ...], fragment: str) -> None:
    errors = stacks.compose_errors(text, env_names=env)

    assert any(fragment in error for error in errors), errors


def test_the_checks_accept_escapes_and_known_variables() -> None:
    text = GOOD + '    environment:\n      A: ${SECRET:?}\n      B: "$$HOME"\n'

    assert stacks.compose_errors(text, env_names=["SECRET"]) == []


def test_the_ram_check_counts_each_stack_s_own_databases() -> None:
    one = catalog.ram_needed_mb(["nextcloud"])
    two = catalog.ram_needed_mb(["nextcloud", "odoo"])

    assert one == catalog.PLATFORM_OVERHEAD_MB + 512 + catalog.DATABASES["postgres"].ram_mb
    assert two - one == 1024 + catalog.DATABASES["postgres"].ram_mb
