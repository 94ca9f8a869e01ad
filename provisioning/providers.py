"""Where servers come from. One interface, two kinds of provider: Hetzner Cloud is
bought and released through its API by the hour; Netcup servers are 12-month contracts
bought by staff (no ordering API), registered into the pool and returned to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hub.pipeline.spec import PermanentStepError
from provisioning.integrations import hetzner, netcup
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

    def snapshot_take(self, server: Server, *, name: str, labels: dict[str, str]) -> ProviderSnapshot:
        """The server's snapshot with these labels: found when an earlier call made it,
        made otherwise. Never two for the same labels."""

    def snapshot_status(self, server: Server | None, *, image_id: str) -> str:
        """ "creating", "available" or "missing"."""

    def snapshot_delete(self, server: Server | None, *, image_id: str) -> bool:
        """Delete it; False when it was already gone."""


@dataclass(frozen=True)
class ProviderSnapshot:
    image_id: str
    status: str  # "creating", "available"


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

    def snapshot_take(self, server: Server, *, name: str, labels: dict[str, str]) -> ProviderSnapshot:
        image = hetzner.snapshot_create(provider_id=server.provider_id, description=name, labels=labels)
        return ProviderSnapshot(image.image_id, image.status)

    def snapshot_status(self, server: Server | None, *, image_id: str) -> str:
        return hetzner.snapshot_status(image_id=image_id)

    def snapshot_delete(self, server: Server | None, *, image_id: str) -> bool:
        return hetzner.snapshot_delete(image_id=image_id)


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
        return self.snapshot_take(server, name=description, labels={}).image_id

    # Snapshots go through the SCP webservice, by the vserver's name; a snapshot has a
    # name and no labels, so the Hub's label is its name (the image id here).
    @staticmethod
    def _vserver(server: Server | None) -> str:
        name = (server.provider_id or server.name) if server is not None else ""
        if not name:
            raise PermanentStepError("a Netcup server without its vserver name: set the server's provider id")
        return name

    def snapshot_take(self, server: Server, *, name: str, labels: dict[str, str]) -> ProviderSnapshot:
        description = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or name
        made = netcup.snapshot_create(vserver=self._vserver(server), name=name, description=description)
        return ProviderSnapshot(made.name, made.state)

    def snapshot_status(self, server: Server | None, *, image_id: str) -> str:
        return netcup.snapshot_state(vserver=self._vserver(server), name=image_id)

    def snapshot_delete(self, server: Server | None, *, image_id: str) -> bool:
        return netcup.snapshot_delete(vserver=self._vserver(server), name=image_id)


BACKENDS: dict[str, ServerProviderBackend] = {
    ServerProvider.HETZNER: HetznerBackend(),
    ServerProvider.NETCUP: NetcupBackend(),
}


def backend_for(provider: str) -> ServerProviderBackend:
    return BACKENDS[provider]
