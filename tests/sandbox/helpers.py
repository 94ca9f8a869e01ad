"""SSH helpers for the sandbox tests: paramiko with the Hub's sandbox key."""

from __future__ import annotations

import paramiko
from hcloud.servers import BoundServer

from sandbox.control import Sandbox


def public_ipv4(server: BoundServer) -> str:
    """The address a server's sshd answers on: every server the emulator makes has one."""
    assert server.public_net is not None and server.public_net.ipv4 is not None
    return server.public_net.ipv4.ip


def ssh_connect(sandbox: Sandbox, addr: str, port: int, *, timeout: float = 5.0) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        addr,
        port=port,
        username="root",
        key_filename=sandbox.env["HUB_SSH_PRIVATE_KEY_PATH"],
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def ssh_run(client: paramiko.SSHClient, command: str, *, stdin: str | None = None) -> tuple[int, str, str]:
    """Run a command over the session; return its exit code, stdout and stderr."""
    channel_in, channel_out, channel_err = client.exec_command(command, timeout=30)
    if stdin is not None:
        channel_in.write(stdin)
        channel_in.channel.shutdown_write()
    out = channel_out.read().decode()
    err = channel_err.read().decode()
    return channel_out.channel.recv_exit_status(), out, err
