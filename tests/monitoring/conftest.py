"""Fixtures of the monitoring tests: a Hetzner emulator and the seam's purchase, for
the pool and reconciliation checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from provisioning.integrations import hetzner
from provisioning.integrations.hetzner import ProviderServer
from provisioning.services.remote import hub_public_key
from sandbox.control import Sandbox, free_port
from tests.conftest import queues_taken_from_session_worker


def hetzner_buy(*, name: str, labels: dict[str, str], tier: str = "build", region: str = "eu") -> ProviderServer:
    """Buy a server through the seam, as the provisioning pipeline does."""
    return hetzner.server_buy(name=name, tier=tier, region=region, labels=labels, ssh_public_key=hub_public_key())


@pytest.fixture(scope="module")
def hetzner_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The Hetzner Cloud emulator (no sandbox hosts of its own)."""
    box = Sandbox(
        state_dir=tmp_path_factory.mktemp("sandbox"),
        hosts_count=0,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=0.1,
    ).up()
    yield box
    box.down()


@pytest.fixture
def hetzner_settings(hetzner_emulator: Sandbox) -> Iterator[Sandbox]:
    env = hetzner_emulator.env
    with override_settings(
        HCLOUD_API_ENDPOINT=env["HCLOUD_API_ENDPOINT"],
        HCLOUD_TOKEN=env["HCLOUD_TOKEN"],
        HCLOUD_SSH_PORT=int(env["HCLOUD_SSH_PORT"]),
        HCLOUD_POLL_INTERVAL=0.1,
        HUB_SSH_PRIVATE_KEY_PATH=env["HUB_SSH_PRIVATE_KEY_PATH"],
        # The shared bucket lives in the test Redis across runs; these tests are not
        # about the rate limit (provisioning's are), so it must never make them wait.
        PROVIDER_RATE_LIMITS={**settings.PROVIDER_RATE_LIMITS, "hetzner": (100_000, 1.0, 10_000)},
    ):
        yield hetzner_emulator


@pytest.fixture(scope="module", autouse=True)
def monitoring_queues_to_ourselves() -> Iterator[None]:
    """The session worker, if an earlier module started it, must not run the
    preparation jobs a replenishment starts (their rows are truncated under it)."""
    with queues_taken_from_session_worker(["monitoring", "provisioning"], purge=True):
        yield
