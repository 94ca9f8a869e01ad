"""The worker keeps one verified SSH connection per server between steps: checked here
in this process, with run_on_server against real sandbox hosts, by counting the
handshakes each host's sshd accepted."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import paramiko
import pytest

from provisioning.integrations import ssh
from provisioning.models import Server
from provisioning.services import remote
from sandbox.control import Sandbox, free_port
from tests.provisioning.conftest import pool_server

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def accepted_connections(host: Any) -> int:
    log = Path(host.root).parent / "sshd.log"
    return log.read_text().count("Accepted publickey")


def drop_connections_on_the_host(host: Any) -> None:
    """The host ends every established session, as a rebooted or restarted sshd does."""
    listener = json.loads((Path(host.root).parent / "host.json").read_text())["pid"]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == listener:
                os.kill(int(entry.name), signal.SIGTERM)


def run(server: Server, script: str = "hostname -I\n") -> list[str]:
    return remote.run_on_server(server, name="check", script=script, env={}, log=lambda line: None)


def known_server(host: Any) -> Server:
    """A pool server on `host` whose host key was recorded by a first contact."""
    server = pool_server(host)
    remote.probe(server, log=lambda line: None)
    server.refresh_from_db()
    return server


def test_steps_on_a_server_share_one_connection(
    sandbox: Sandbox, fresh_hosts: Any, hub_settings: dict[str, str]
) -> None:
    (host,) = fresh_hosts(1)
    server = known_server(host)
    outputs = [run(server) for _ in range(3)]

    assert server.host_key.startswith("ssh-"), "first contact recorded the host key"
    assert outputs == [[host.addr]] * 3
    assert accepted_connections(host) == 1


def test_a_connection_the_host_closed_is_replaced_without_failing_the_step(
    sandbox: Sandbox, fresh_hosts: Any, hub_settings: dict[str, str]
) -> None:
    (host,) = fresh_hosts(1)
    server = known_server(host)

    drop_connections_on_the_host(host)

    assert run(server) == [host.addr]
    assert accepted_connections(host) == 2


def test_a_changed_host_key_is_refused_even_with_a_connection_kept(
    sandbox: Sandbox, fresh_hosts: Any, hub_settings: dict[str, str]
) -> None:
    (host,) = fresh_hosts(1)
    server = known_server(host)
    impostor = paramiko.Ed25519Key.from_private_key_file(sandbox.env["HUB_SSH_PRIVATE_KEY_PATH"])
    Server.objects.filter(pk=server.pk).update(host_key=f"{impostor.get_name()} {impostor.get_base64()}")
    server.refresh_from_db()

    with pytest.raises(ssh.HostKeyMismatch):
        run(server, script="touch should-not-exist\n")

    assert not (Path(host.root) / "root" / "should-not-exist").exists()


def test_a_connection_sends_each_packet_at_once_and_a_closed_port_is_a_retryable_error(
    sandbox: Sandbox, fresh_hosts: Any, hub_settings: dict[str, str]
) -> None:
    (host,) = fresh_hosts(1)
    target = ssh.Target(host.addr, host.port)

    # Nagle's algorithm off: a script's end of input does not wait on the host's
    # delayed acknowledgement of its body.
    with ssh.connect(target, private_key=remote.hub_private_key(), known_host_key=None) as client:
        transport = client.get_transport()
        assert transport is not None and transport.is_active()
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1

    closed_port = ssh.Target(host.addr, free_port(host.addr))
    key = remote.hub_private_key()
    with pytest.raises(ssh.SshError, match="refused"), ssh.connect(closed_port, private_key=key, known_host_key=None):
        pass
