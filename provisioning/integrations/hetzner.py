"""The Hetzner Cloud seam: the only module that imports `hcloud`. Every request goes
through the provider policy (shared token bucket, Retry-After, 5xx backoff), and
buying is idempotent: a server is found by its labels before one is created."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from django.conf import settings
from hcloud import APIException, Client
from hcloud.actions.domain import ActionFailedException, ActionTimeoutException
from hcloud.images import BoundImage, Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer
from hcloud.servers import Server as ServerRef
from requests import RequestException

from hub.integrations.http import ProviderAdapter
from hub.integrations.ratelimit import provider_bucket
from hub.pipeline.spec import PermanentStepError

logger = logging.getLogger(__name__)

SERVER_TYPES = {"lite": "cpx21", "build": "cpx31", "scale": "cpx41", "enterprise": "cpx51"}
LOCATIONS = {"eu": "nbg1", "us": "ash"}
IMAGE = "debian-12"
MANAGED_LABEL = ("managed-by", "hub")
# Codes the API answers that retrying will not fix.
PERMANENT_CODES = {
    "invalid_input",
    "json_error",
    "forbidden",
    "unauthorized",
    "not_found",
    "resource_limit_exceeded",
    "uniqueness_error",
    "invalid_server_type",
    "server_type_unavailable",
    "placement_error",
}


class ProviderError(Exception):
    """A provider failure worth retrying (5xx, timeout, rate limit past patience)."""


@dataclass(frozen=True)
class ProviderServer:
    provider_id: str
    name: str
    ipv4: str
    status: str
    labels: dict[str, str]


def translate(exc: APIException) -> Exception:
    message = f"hetzner: {exc.code}: {exc.message}"
    if isinstance(exc.code, str) and exc.code in PERMANENT_CODES:
        return PermanentStepError(message)
    if isinstance(exc.code, int) and 400 <= exc.code < 500 and exc.code != 429:
        return PermanentStepError(message)
    return ProviderError(message)


@lru_cache(maxsize=2)
def _client(token: str, endpoint: str) -> Client:
    client = Client(
        token=token,
        api_endpoint=endpoint,
        application_name="hub",
        timeout=(5, 30),
        poll_interval=settings.HCLOUD_POLL_INTERVAL,
        poll_max_retries=settings.HCLOUD_POLL_MAX_RETRIES,
    )
    # hcloud exposes no way to plug in a transport. Its session gets our adapter, and
    # its own retries are switched off, so one policy (ours) decides about 429/5xx.
    base = client._client
    adapter = ProviderAdapter(
        provider_bucket("hetzner"),
        server_error_retries=settings.PROVIDER_SERVER_ERROR_RETRIES,
        backoff_base=settings.PROVIDER_SERVER_ERROR_BACKOFF,
    )
    base._session.mount("http://", adapter)
    base._session.mount("https://", adapter)
    base._retry_max_retries = 0
    return client


def client() -> Client:
    return _client(settings.HCLOUD_TOKEN, settings.HCLOUD_API_ENDPOINT)


# hcloud types every attribute of its domain objects optional (one may be built from an
# id alone); an object the API returned has its id, name and status.
def _as_provider_server(server: BoundServer) -> ProviderServer:
    ipv4 = server.public_net.ipv4.ip if server.public_net and server.public_net.ipv4 else ""
    return ProviderServer(
        provider_id=str(server.id),
        name=cast(str, server.name),
        ipv4=ipv4,
        status=cast(str, server.status),
        labels=dict(server.labels or {}),
    )


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def servers_with_labels(labels: dict[str, str]) -> list[ProviderServer]:
    try:
        found = client().servers.get_all(label_selector=label_selector(labels))
    except APIException as exc:
        raise translate(exc) from exc
    return [_as_provider_server(server) for server in found]


def hub_ssh_key_id(public_key: str) -> int:
    """The Hub's public key, registered once under a fixed name."""
    # Each key here came from the API, so it has its id (see _as_provider_server).
    try:
        existing = client().ssh_keys.get_by_name(settings.HCLOUD_SSH_KEY_NAME)
        if existing is not None:
            return cast(int, existing.id)
        try:
            return cast(int, client().ssh_keys.create(name=settings.HCLOUD_SSH_KEY_NAME, public_key=public_key).id)
        except APIException as exc:
            # Two orders buying at once both found no key; the other one registered it.
            if exc.code != "uniqueness_error":
                raise
            existing = client().ssh_keys.get_by_name(settings.HCLOUD_SSH_KEY_NAME)
            if existing is None:
                raise
            return cast(int, existing.id)
    except APIException as exc:
        raise translate(exc) from exc


def server_buy(*, name: str, tier: str, region: str, labels: dict[str, str], ssh_public_key: str) -> ProviderServer:
    """Buy a server, or find the one an earlier attempt already bought (by labels)."""
    labels = {**labels, MANAGED_LABEL[0]: MANAGED_LABEL[1]}
    existing = servers_with_labels(labels)
    if existing:
        logger.info("hetzner: reusing server %s bought earlier for %s", existing[0].provider_id, labels)
        return existing[0]
    try:
        response = client().servers.create(
            name=name,
            server_type=ServerType(name=SERVER_TYPES[tier]),
            image=Image(name=IMAGE),
            location=Location(name=LOCATIONS[region]),
            ssh_keys=[client().ssh_keys.get_by_id(hub_ssh_key_id(ssh_public_key))],
            labels=labels,
        )
    except APIException as exc:
        raise translate(exc) from exc
    return _as_provider_server(response.server)


def server_wait_ready(*, provider_id: str) -> ProviderServer:
    """Wait for the create action and for the server to run."""
    try:
        server = client().servers.get_by_id(int(provider_id))
        for action in client().servers.get_actions(server, status=["running"]):
            action.wait_until_finished()
        server.reload()
    except (ActionFailedException, ActionTimeoutException) as exc:
        raise ProviderError(f"hetzner: server {provider_id} did not come up: {exc}") from exc
    except APIException as exc:
        raise translate(exc) from exc
    if server.status != "running":
        raise ProviderError(f"hetzner: server {provider_id} is {server.status}")
    return _as_provider_server(server)


def server_delete(*, provider_id: str) -> bool:
    """Delete the server; a server that is already gone counts as deleted."""
    try:
        server = client().servers.get_by_id(int(provider_id))
        client().servers.delete(server)
    except APIException as exc:
        if exc.code == "not_found":
            return False
        raise translate(exc) from exc
    return True


def server_status(*, provider_id: str) -> str:
    try:
        server = client().servers.get_by_id(int(provider_id))
    except APIException as exc:
        if exc.code == "not_found":
            return "missing"
        raise translate(exc) from exc
    return str(server.status)


def server_snapshot(*, provider_id: str, description: str) -> str:
    try:
        server = client().servers.get_by_id(int(provider_id))
        response = client().servers.create_image(server, description=description, type="snapshot")
    except APIException as exc:
        raise translate(exc) from exc
    return str(response.image.id)


@dataclass(frozen=True)
class ProviderImage:
    image_id: str
    status: str  # "creating", "available", or "missing"
    labels: dict[str, str]


def _as_provider_image(image: BoundImage) -> ProviderImage:
    return ProviderImage(image_id=str(image.id), status=str(image.status), labels=dict(image.labels or {}))


def snapshots_with_labels(labels: dict[str, str]) -> list[ProviderImage]:
    try:
        found = client().images.get_all(label_selector=label_selector(labels), type=["snapshot"])
    except APIException as exc:
        raise translate(exc) from exc
    except RequestException as exc:
        raise ProviderError(f"hetzner: {type(exc).__name__}: {exc}") from exc
    return [_as_provider_image(image) for image in found]


def snapshot_create(*, provider_id: str, description: str, labels: dict[str, str]) -> ProviderImage:
    """The server's snapshot carrying these labels: the one an earlier call made (found
    by its labels, so a retry after a lost answer makes no second image), else a new one."""
    labels = {**labels, MANAGED_LABEL[0]: MANAGED_LABEL[1]}
    existing = snapshots_with_labels(labels)
    if existing:
        return existing[0]
    try:
        response = client().servers.create_image(
            ServerRef(id=int(provider_id)), description=description, type="snapshot", labels=labels
        )
    except APIException as exc:
        raise translate(exc) from exc
    except RequestException as exc:
        # The answer may be lost after the image was made: look once more before failing.
        logger.warning("hetzner: create_image for server %s got no answer (%s); looking it up", provider_id, exc)
        existing = snapshots_with_labels(labels)
        if existing:
            return existing[0]
        raise ProviderError(f"hetzner: {type(exc).__name__}: {exc}") from exc
    return _as_provider_image(response.image)


def snapshot_status(*, image_id: str) -> str:
    try:
        image = client().images.get_by_id(int(image_id))
    except APIException as exc:
        if exc.code == "not_found":
            return "missing"
        raise translate(exc) from exc
    except RequestException as exc:
        raise ProviderError(f"hetzner: {type(exc).__name__}: {exc}") from exc
    return str(image.status)


def snapshot_delete(*, image_id: str) -> bool:
    """Delete the snapshot; one already gone counts as deleted (False)."""
    try:
        client().images.delete(Image(id=int(image_id)))
    except APIException as exc:
        if exc.code == "not_found":
            return False
        raise translate(exc) from exc
    except RequestException as exc:
        raise ProviderError(f"hetzner: {type(exc).__name__}: {exc}") from exc
    return True
