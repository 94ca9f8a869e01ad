"""A real sandbox for the whole session (its own state directory and ports, so a
developer's running sandbox is left alone), and SSH helpers. No database is used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hcloud import Client

from sandbox.control import Sandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(
        state_dir=tmp_path_factory.mktemp("sandbox"),
        hosts_count=2,
        ssh_port=0,
        hetzner_port=0,
        cloudflare_port=0,
        action_seconds=0.3,
        exit_with_parent=True,
    ).up(timeout=30)
    yield box
    box.down()


@pytest.fixture
def hcloud_client(sandbox: Sandbox) -> Client:
    return Client(
        token=sandbox.env["HCLOUD_TOKEN"],
        api_endpoint=sandbox.env["HCLOUD_API_ENDPOINT"],
        poll_interval=0.1,
        poll_max_retries=100,
        timeout=5,
    )
