"""The Hetzner emulator driven by the unmodified hcloud client; a server bought through
it is a real sandbox host reachable over SSH."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest
import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import CreateServerResponse
from hcloud.ssh_keys import SSHKey

from sandbox.control import Sandbox
from tests.sandbox.helpers import public_ipv4, ssh_connect, ssh_run


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_server(client: Client, name: str, labels: dict[str, str]) -> CreateServerResponse:
    return client.servers.create(
        name=name,
        server_type=ServerType(name="cpx31"),
        image=Image(name="debian-12"),
        location=Location(name="nbg1"),
        labels=labels,
    )


def test_created_server_is_a_sandbox_host_that_runs_real_scripts(sandbox: Sandbox, hcloud_client: Client) -> None:
    # given the Hub's key registered in the account
    public_key = Path(sandbox.env["HUB_SSH_PRIVATE_KEY_PATH"] + ".pub").read_text()
    key = hcloud_client.ssh_keys.create(name=unique("hub"), public_key=public_key, labels={"managed-by": "hub"})
    assert key.fingerprint is not None
    assert len(key.fingerprint.split(":")) == 16

    # when the Hub buys a server and waits for its actions
    server_type = hcloud_client.server_types.get_by_name("cpx31")
    image = hcloud_client.images.get_by_name_and_architecture("debian-12", "x86")
    assert server_type is not None and image is not None
    created = hcloud_client.servers.create(
        name=unique("hub-eu-build"),
        server_type=server_type,
        image=image,
        location=hcloud_client.locations.get_by_name("nbg1"),
        ssh_keys=[SSHKey(id=key.id)],
        labels={"managed-by": "hub", "order-id": "1001"},
        user_data="#cloud-config\n",
    )
    assert created.action.status == "running"
    assert [a.command for a in created.next_actions] == ["start_server"]
    created.action.wait_until_finished(max_retries=100)
    for action in created.next_actions:
        action.wait_until_finished(max_retries=100)

    # then it is running at a loopback address where a real sshd answers
    assert created.server.id is not None
    server = hcloud_client.servers.get_by_id(created.server.id)
    assert server.status == "running"
    addr = public_ipv4(server)
    assert addr.startswith("127.") and addr != "127.0.0.1"
    port = int(sandbox.env["HCLOUD_SSH_PORT"])
    ssh = ssh_connect(sandbox, addr, port)
    try:
        code, out, _ = ssh_run(ssh, "apt-get install -y nginx")
        assert code == 0 and "nginx" in out
        script = 'set -euo pipefail\nmkdir -p "${HOST_ROOT:-}/etc/hub"\necho hub > "${HOST_ROOT:-}/etc/hub/id"\n'
        code, _, err = ssh_run(ssh, "bash -s", stdin=script)
        assert code == 0, err
    finally:
        ssh.close()
    host = sandbox.host(addr)
    assert [c["args"] for c in host.calls("apt-get")] == [["install", "-y", "nginx"]]
    assert (host.root / "etc" / "hub" / "id").exists()

    # and deleting the server stops its host
    hcloud_client.servers.delete(server)
    assert server.id is not None
    with pytest.raises(APIException) as missing:
        hcloud_client.servers.get_by_id(server.id)
    assert missing.value.code == "not_found"
    assert not host.alive()


def test_label_selector_and_name_filters(hcloud_client: Client, sandbox: Sandbox) -> None:
    batch = unique("batch")
    for index in range(3):
        sandbox.create_orphan_server(name=f"{batch}-{index}", labels={"batch": batch, "idx": str(index)})
    sandbox.create_orphan_server(name=f"{batch}-other", labels={"batch": "unrelated"})

    matching = hcloud_client.servers.get_all(label_selector=f"batch={batch}")
    assert sorted(s.name or "" for s in matching) == [f"{batch}-0", f"{batch}-1", f"{batch}-2"]
    assert [s.name for s in hcloud_client.servers.get_all(label_selector=f"batch={batch},idx in (0,2)")] == [
        f"{batch}-0",
        f"{batch}-2",
    ]
    one = hcloud_client.servers.get_by_name(f"{batch}-1")
    assert one is not None
    assert one.labels == {"batch": batch, "idx": "1"}

    page = hcloud_client.servers.get_list(label_selector=f"batch={batch}", page=1, per_page=2)
    assert len(page.servers) == 2
    assert page.meta.pagination is not None
    assert page.meta.pagination.total_entries == 3
    assert page.meta.pagination.next_page == 2
    assert page.meta.pagination.last_page == 2


def test_errors_have_the_real_codes_and_statuses(hcloud_client: Client, sandbox: Sandbox) -> None:
    name = unique("dup")
    sandbox.create_orphan_server(name=name)
    with pytest.raises(APIException) as duplicate:
        create_server(hcloud_client, name, {})
    assert duplicate.value.code == "uniqueness_error"

    with pytest.raises(APIException) as invalid:
        create_server(hcloud_client, "bad_name!", {})
    assert invalid.value.code == "invalid_input"

    base = sandbox.env["HCLOUD_API_ENDPOINT"]
    unauthorized = requests.get(f"{base}/servers", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == "unauthorized"

    auth = {"Authorization": f"Bearer {sandbox.env['HCLOUD_TOKEN']}"}
    missing = requests.get(f"{base}/servers/424242", headers=auth, timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "not_found", "message": "server with ID '424242' not found", "details": {}}
    }


def test_rate_limit_headers_and_an_empty_bucket(sandbox: Sandbox) -> None:
    base = sandbox.env["HCLOUD_API_ENDPOINT"]
    auth = {"Authorization": f"Bearer {sandbox.env['HCLOUD_TOKEN']}"}
    first = requests.get(f"{base}/servers", headers=auth, timeout=5)
    assert first.headers["RateLimit-Limit"] == "3600"
    remaining = int(first.headers["RateLimit-Remaining"])
    assert int(first.headers["RateLimit-Reset"]) >= int(time.time())
    second = requests.get(f"{base}/locations", headers=auth, timeout=5)
    assert int(second.headers["RateLimit-Remaining"]) <= remaining

    sandbox.set_rate_limit("hetzner", capacity=2, refill_per_second=0.5)
    try:
        answers = [requests.get(f"{base}/servers", headers=auth, timeout=5) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["error"]["code"] == "rate_limit_exceeded"
        assert answers[2].headers["RateLimit-Remaining"] == "0"
        assert int(answers[2].headers["Retry-After"]) >= 1
    finally:
        sandbox.set_rate_limit("hetzner", capacity=3600, refill_per_second=1.0)


def test_injected_429_is_retried_by_hcloud_and_500_is_not(sandbox: Sandbox, hcloud_client: Client) -> None:
    sandbox.clear_requests()
    sandbox.hetzner_fault(status=429, count=1, method="GET", path="/v1/locations", retry_after=1)
    # hcloud retries rate_limit_exceeded itself (its own backoff, about a second).
    location = hcloud_client.locations.get_by_name("fsn1")
    assert location is not None
    assert location.name == "fsn1"
    log = [(r["path"], r["status"]) for r in sandbox.requests("hetzner")]
    assert log == [("/v1/locations", 429), ("/v1/locations", 200)]

    sandbox.hetzner_fault(status=500, count=1, path="/v1/server_types")
    with pytest.raises(APIException) as failure:
        hcloud_client.server_types.get_by_name("cpx31")
    assert failure.value.code == "server_error"
    server_type = hcloud_client.server_types.get_by_name("cpx31")
    assert server_type is not None
    assert server_type.cores == 4

    sandbox.hetzner_fault(status=429, count=1, path="/v1/images", retry_after=7)
    answer = requests.get(
        f"{sandbox.env['HCLOUD_API_ENDPOINT']}/images",
        headers={"Authorization": f"Bearer {sandbox.env['HCLOUD_TOKEN']}"},
        timeout=5,
    )
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"


def test_poweroff_makes_the_host_stop_answering(sandbox: Sandbox, hcloud_client: Client) -> None:
    created = create_server(hcloud_client, unique("power"), {"managed-by": "hub"})
    created.action.wait_until_finished(max_retries=100)
    server = created.server
    assert server.id is not None
    addr, port = public_ipv4(server), int(sandbox.env["HCLOUD_SSH_PORT"])
    try:
        hcloud_client.servers.power_off(server).wait_until_finished(max_retries=100)
        assert hcloud_client.servers.get_by_id(server.id).status == "off"
        with pytest.raises((paramiko.SSHException, OSError)):
            ssh_connect(sandbox, addr, port, timeout=1.0)
        hcloud_client.servers.power_on(server).wait_until_finished(max_retries=100)
        ssh_connect(sandbox, addr, port).close()
    finally:
        hcloud_client.servers.delete(server)


def test_servers_bought_at_once_get_hosts_of_their_own(sandbox: Sandbox, hcloud_client: Client) -> None:
    batch = unique("parallel")
    with ThreadPoolExecutor(max_workers=5) as pool:
        created = list(pool.map(lambda i: create_server(hcloud_client, f"{batch}-{i}", {"batch": batch}), range(5)))
    try:
        for response in created:
            response.action.wait_until_finished(max_retries=100)
        addrs = [public_ipv4(response.server) for response in created]
        assert len(set(addrs)) == 5
        assert all(sandbox.host(addr).alive() for addr in addrs)
    finally:
        for response in created:
            hcloud_client.servers.delete(response.server)
    assert hcloud_client.servers.get_all(label_selector=f"batch={batch}") == []
