"""Sandbox hosts: real sshd, sessions that see HOST_ROOT and the stand-ins, recorded
calls, injected step failures and a host that stops answering."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from hcloud import Client

from sandbox.control import Sandbox, SandboxHost
from tests.conftest import wait_for
from tests.sandbox.helpers import public_ipv4, ssh_connect, ssh_run

SETUP_SCRIPT = """\
set -euo pipefail
apt-get update
apt-get install -y -o Dpkg::Options::=--force-confold nginx fail2ban
install -d "${HOST_ROOT:-}/etc/nginx/sites-enabled"
cat > "${HOST_ROOT:-}/etc/nginx/sites-enabled/hub.conf" <<'CONF'
server { listen 80; }
CONF
systemctl enable --now nginx
ufw allow 22/tcp
ufw --force enable
echo done
"""


@pytest.fixture
def host(sandbox: Sandbox) -> Iterator[SandboxHost]:
    host = sandbox.hosts[0]
    host.clear_faults()
    yield host
    host.clear_faults()


@pytest.fixture
def ssh(sandbox: Sandbox, host: SandboxHost) -> Iterator[paramiko.SSHClient]:
    client = ssh_connect(sandbox, host.addr, host.port)
    yield client
    client.close()


def test_sessions_see_host_root_and_the_stand_ins(ssh: paramiko.SSHClient, host: SandboxHost) -> None:
    code, out, _ = ssh_run(ssh, 'echo "$HOST_ROOT"; command -v apt-get systemctl ufw certbot; echo "$HOME"')
    lines = out.split()
    assert code == 0
    assert lines[0] == str(host.root)
    assert all("/sandbox/standins/" in path for path in lines[1:5])
    assert lines[5] == str(host.root / "root")

    code, out, _ = ssh_run(ssh, "bash -s", stdin='echo "$HOST_ROOT"; command -v systemctl')
    assert out.split() == [str(host.root), lines[2]]


def test_a_real_script_runs_under_bash_and_its_calls_are_recorded(ssh: paramiko.SSHClient, host: SandboxHost) -> None:
    code, out, err = ssh_run(ssh, "bash -s", stdin=SETUP_SCRIPT)
    assert code == 0, err
    assert out.strip().endswith("done")
    assert (host.root / "etc" / "nginx" / "sites-enabled" / "hub.conf").read_text().strip() == "server { listen 80; }"
    calls = host.calls()
    assert [(c["cmd"], c["args"]) for c in calls[-5:]] == [
        ("apt-get", ["update"]),
        ("apt-get", ["install", "-y", "-o", "Dpkg::Options::=--force-confold", "nginx", "fail2ban"]),
        ("systemctl", ["enable", "--now", "nginx"]),
        ("ufw", ["allow", "22/tcp"]),
        ("ufw", ["--force", "enable"]),
    ]
    assert all({"cmd", "args", "time", "cwd"} <= set(c) for c in calls)

    code, out, _ = ssh_run(ssh, "systemctl is-active nginx; dpkg -s fail2ban >/dev/null && echo installed")
    assert out.split() == ["active", "installed"]
    installed = json.loads((host.root / "var" / "lib" / "sandbox-apt" / "installed.json").read_text())
    assert set(installed) == {"nginx", "fail2ban"}


def test_a_step_fails_n_times_then_succeeds(ssh: paramiko.SSHClient, host: SandboxHost) -> None:
    host.fail("apt-get install", 2)
    results = [ssh_run(ssh, "bash -s", stdin=SETUP_SCRIPT) for _ in range(3)]
    assert [code for code, _, _ in results] == [1, 1, 0]
    assert "injected failure" in results[0][2]
    faults = json.loads((host.root / "etc" / "sandbox" / "faults.json").read_text())
    assert faults["fail"]["apt-get install"] == 0
    assert len([c for c in host.calls("apt-get") if c.get("injected_fault")]) == 2


def test_a_frozen_host_stops_answering_until_thawed(sandbox: Sandbox) -> None:
    host = sandbox.hosts[1]
    host.freeze()
    try:
        started = time.monotonic()
        with pytest.raises((paramiko.SSHException, OSError)):
            ssh_connect(sandbox, host.addr, host.port, timeout=1.0)
        assert time.monotonic() - started < 5
    finally:
        host.thaw()
    client = ssh_connect(sandbox, host.addr, host.port)
    assert ssh_run(client, "true")[0] == 0
    client.close()


def test_a_wrong_key_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=10)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    host = sandbox.hosts[0]
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            host.addr,
            port=host.port,
            username="root",
            key_filename=str(other),
            timeout=5,
            allow_agent=False,
            look_for_keys=False,
        )


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def test_detached_daemons_are_frozen_with_their_host_and_stopped_with_it(
    sandbox: Sandbox, hcloud_client: Client
) -> None:
    # given a server with a daemon that left the session (as the agent does)
    orphan = sandbox.create_orphan_server(name=f"daemon-{uuid.uuid4().hex[:6]}", host=True)
    server = hcloud_client.servers.get_by_id(orphan["server"]["id"])
    hcloud_client.actions.get_by_id(orphan["action"]["id"]).wait_until_finished(max_retries=100)
    addr = public_ipv4(server)
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"
    client = ssh_connect(sandbox, addr, int(sandbox.env["HCLOUD_SSH_PORT"]))
    ssh_run(client, f"setsid nohup sleep {marker} </dev/null >/dev/null 2>&1 &")
    client.close()
    daemon = wait_for(lambda: _processes_with(f"sleep\0{marker}"), timeout=5, message="daemon")[0]

    # when the host is frozen, the daemon stops too
    host = sandbox.host(addr)
    host.freeze()
    wait_for(lambda: _state(daemon) == "T", timeout=5, message="daemon to stop")
    host.thaw()
    wait_for(lambda: _state(daemon) != "T", timeout=5, message="daemon to resume")

    # and deleting the server ends it
    hcloud_client.servers.delete(server)
    wait_for(lambda: not _processes_with(f"sleep\0{marker}"), timeout=5, message="daemon to end")


def test_sessions_start_in_the_hosts_own_home_and_sftp_works(ssh: paramiko.SSHClient, host: SandboxHost) -> None:
    code, out, _ = ssh_run(ssh, "pwd; echo hi > relative.txt; exit 3")
    assert code == 3
    assert out.strip() == str(host.root / "root")
    assert (host.root / "root" / "relative.txt").read_text() == "hi\n"

    sftp = ssh.open_sftp()
    try:
        assert sftp.normalize(".") == str(host.root / "root")
        with sftp.open(f"{host.root}/tmp/uploaded.sh", "w") as remote:
            remote.write("echo uploaded\n")
    finally:
        sftp.close()
    assert ssh_run(ssh, 'bash "$HOST_ROOT/tmp/uploaded.sh"')[1] == "uploaded\n"
