"""Releases for the sandbox and the demo: a default release of every component the Hub
installs (the tools, their database services, the AI stack), so orders have something
to install. The digests are made up but well formed (sha256 of the component and its
version): the sandbox's docker stand-in pulls nothing. Never for a database you keep:
production's releases come from CI and staff, with real digests."""

from __future__ import annotations

import hashlib

from provisioning import catalog
from rollouts.models import Release
from rollouts.selectors import current_releases
from rollouts.services import release_get_or_create, release_mark_default

# Upstream versions of the time, for a demo that reads like a real fleet.
VERSIONS = {
    "nextcloud": "29.0.7",
    "chatwoot": "v3.13.0",
    "ghost": "5.96.0",
    "odoo": "17.0",
    "calcom": "v4.5.0",
    "stalwart": "v0.10.2",
    "keycloak": "25.0.6",
    "listmonk": "v3.0.0",
    "nocodb": "0.250.0",
    "umami": "postgresql-v2.13.2",
    "uptime_kuma": "1.23.14",
    "portainer": "2.21.2",
    "activepieces": "0.30.0",
    "bookstack": "24.05.4",
    "postgres": "16.4",
    "mysql": "8.4.2",
    "redis": "7.4.0",
    "openclaw": "1.0.0",
    "safety-wrapper": "1.0.0",
    "secrets-proxy": "1.0.0",
}


def sandbox_components() -> dict[str, catalog.Component]:
    return {**catalog.TOOLS, **catalog.DATABASES, **catalog.AI_STACK}


def sandbox_image(component: str, version: str) -> str:
    digest = hashlib.sha256(f"sandbox:{component}:{version}".encode()).hexdigest()
    return f"{sandbox_components()[component].image}:{version}@sha256:{digest}"


def seed_releases(*, actor: str = "sandbox") -> list[Release]:
    """A default release for every component that has no current release yet; the
    ones made or marked now. Running it again changes nothing."""
    components = sandbox_components()
    current = current_releases(components)
    seeded = []
    for name in components:
        if name in current:
            continue
        version = VERSIONS.get(name, "1.0.0")
        release = release_get_or_create(
            component=name,
            version=version,
            image=sandbox_image(name, version),
            notes="sandbox release (made-up digest)",
            actor=actor,
        )
        seeded.append(release_mark_default(release_id=release.pk, actor=actor))
    return seeded
