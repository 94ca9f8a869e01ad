"""Which release of each component an order installs: the component's current release
(its last COMPLETED rollout's, else the one staff marked as its default: the rollouts
app answers, through hub.releases),
resolved once at the start of the order and pinned in its job, so every later step and
every retry installs the same digests."""

from __future__ import annotations

from hub.releases import current_releases
from provisioning import catalog
from provisioning.services.stacks import Pin, pinned_image


def releases_resolve(tools: list[str]) -> tuple[dict[str, Pin], list[str]]:
    """(component -> its pinned release, the components that have no release)."""
    wanted = catalog.components_for(tools)
    current = current_releases(wanted)
    pins = {
        name: Pin(component=name, version=release.version, image=pinned_image(release.image))
        for name, release in current.items()
    }
    return pins, [name for name in wanted if name not in pins]
