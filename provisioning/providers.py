"""Where servers come from. One interface, two kinds of provider: Hetzner Cloud is
bought and released through its API by the hour; Netcup servers are 12-month contracts
bought by staff (no ordering API), registered into the pool and returned to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hub.pipeline.spec import PermanentStepError
from provisioning.integrations import hetzner
from provisioning.models import Server, ServerProvider


@dataclass(frozen=True)
class Allocation:
    provider_id: str
    name: str
    ipv4: str
    labels: dict[str, str]


class ServerProviderBackend(Protocol):
    def allocate(self, *, name: str, tier: str, region: str, labels: dict[str, str], ssh_public_key: str) -> Allocation:
        """A new server for the tier and region, or the one an earlier attempt made."""

    def deallocate(self, server: Server) -> bool:
        """Give the server back to the provider; False when it was already gone."""

    def status(self, server: Server) -> str:
        """The provider's own word for the server's state ("running", "off", "missing")."""

    def snapshot(self, server: Server, *, description: str) -> str:
        """Take a snapshot (before a wipe or a move); returns its id."""


class HetznerBackend:
    def allocate(self, *, name: str, tier: str, region: str, labels: dict[str, str], ssh_public_key: str) -> Allocation:
        bought = hetzner.server_buy(name=name, tier=tier, region=region, labels=labels, ssh_public_key=ssh_public_key)
        return Allocation(bought.provider_id, bought.name, bought.ipv4, bought.labels)

    def deallocate(self, server: Server) -> bool:
        return hetzner.server_delete(provider_id=server.provider_id)

    def status(self, server: Server) -> str:
        return hetzner.server_status(provider_id=server.provider_id)

    def snapshot(self, server: Server, *, description: str) -> str:
        return hetzner.server_snapshot(provider_id=server.provider_id, description=description)


class NetcupBackend:
    """Contract servers: capacity comes from staff, so allocation is the pool's job and
    releasing one means returning it to the pool, never cancelling the contract."""

    def allocate(self, *, name: str, tier: str, region: str, labels: dict[str, str], ssh_public_key: str) -> Allocation:
        raise PermanentStepError("Netcup servers cannot be bought through an API; staff register them into the pool")

    def deallocate(self, server: Server) -> bool:
        return False

    def status(self, server: Server) -> str:
        return "running" if server.host_key else "unknown"

    def snapshot(self, server: Server, *, description: str) -> str:
        raise PermanentStepError("Netcup snapshots are taken in the customer control panel, not through the Hub")


BACKENDS: dict[str, ServerProviderBackend] = {
    ServerProvider.HETZNER: HetznerBackend(),
    ServerProvider.NETCUP: NetcupBackend(),
}


def backend_for(provider: str) -> ServerProviderBackend:
    return BACKENDS[provider]
