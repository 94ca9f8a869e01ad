"""`python manage.py sandbox up|down` as a person or `make demo` runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import requests

from sandbox.hosts import wait_for_banner

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["SANDBOX_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "manage.py", "sandbox", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_up_writes_the_settings_and_down_stops_everything(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env_file = tmp_path / "sandbox.env"
    env_file.write_text("DATABASE_URL=postgres://keep-me\nHCLOUD_TOKEN=stale\n")
    ports = ["--ssh-port", "0", "--hetzner-port", "0", "--cloudflare-port", "0"]

    up = manage("up", "--hosts", "2", "--env-file", str(env_file), *ports, state_dir=state_dir)
    try:
        assert up.returncode == 0, up.stderr
        lines = env_file.read_text().splitlines()
        settings = dict(line.split("=", 1) for line in lines)
        assert settings["DATABASE_URL"] == "postgres://keep-me"
        assert lines.count(f"HCLOUD_TOKEN={settings['HCLOUD_TOKEN']}") == 1 and settings["HCLOUD_TOKEN"] != "stale"
        hosts = [endpoint.rsplit(":", 1) for endpoint in settings["SANDBOX_HOSTS"].split(",")]
        assert len(hosts) == 2
        assert all(wait_for_banner(addr, int(port), timeout=1) for addr, port in hosts)
        # The off-site backup target is a host of its own, kept outside the state directory.
        target = (settings["BACKUP_TARGET_HOST"], settings["BACKUP_TARGET_PORT"])
        assert target not in hosts and wait_for_banner(target[0], int(target[1]), timeout=1)
        assert settings["BACKUP_TARGET_HOST_KEY"].startswith('"ssh-ed25519 '), "quoted: it has a space"
        target_dir = (state_dir / "hosts" / target[0]).resolve()
        assert target_dir.is_relative_to("/run/hub-sandbox")
        assert Path(settings["HUB_SSH_PRIVATE_KEY_PATH"]).exists()
        servers = requests.get(
            f"{settings['HCLOUD_API_ENDPOINT']}/servers",
            headers={"Authorization": f"Bearer {settings['HCLOUD_TOKEN']}"},
            timeout=5,
        )
        assert servers.json()["servers"] == []
        records = requests.get(
            f"{settings['CLOUDFLARE_API_BASE']}/zones/{settings['CLOUDFLARE_ZONE_ID']}/dns_records",
            headers={"Authorization": f"Bearer {settings['CLOUDFLARE_API_TOKEN']}"},
            timeout=5,
        )
        assert records.json()["success"] is True

        # the operator adds a customer's zone, the customer delegates its nameservers
        added = manage("add-zone", "acme-cmd.example", "pending", state_dir=state_dir)
        assert added.returncode == 0, added.stderr
        assert added.stdout.split("\t")[:2] == ["acme-cmd.example", "pending"]
        assert manage("delegate", "acme-cmd.example", state_dir=state_dir).returncode == 0
        zones = dict(line.split("\t")[:2] for line in manage("zones", state_dir=state_dir).stdout.splitlines())
        assert zones == {"hub-sandbox.test": "active", "acme-cmd.example": "active"}

        status = manage("status", state_dir=state_dir)
        assert "running" in status.stdout
    finally:
        down = manage("down", state_dir=state_dir)
    assert down.returncode == 0, down.stderr
    assert not any(wait_for_banner(addr, int(port), timeout=0.5) for addr, port in [*hosts, target])
    assert not target_dir.exists()
    hetzner_port = int(settings["HCLOUD_API_ENDPOINT"].rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", hetzner_port)) != 0
    assert "not running" in manage("status", state_dir=state_dir).stdout


def test_up_prints_the_settings_without_an_env_file(tmp_path: Path) -> None:
    ports = ["--ssh-port", "0", "--hetzner-port", "0", "--cloudflare-port", "0"]
    up = manage("up", "--hosts", "1", *ports, state_dir=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        keys = [line.split("=", 1)[0] for line in up.stdout.splitlines()]
        assert keys == [
            "HCLOUD_API_ENDPOINT",
            "HCLOUD_TOKEN",
            "HCLOUD_SSH_PORT",
            "CLOUDFLARE_API_BASE",
            "CLOUDFLARE_API_TOKEN",
            "CLOUDFLARE_ZONE_ID",
            "CLOUDFLARE_ZONE_NAME",
            "CLOUDFLARE_ACCOUNT_ID",
            "HUB_SSH_PRIVATE_KEY_PATH",
            "SANDBOX_HOSTS",
            "SANDBOX_DIR",
            "BACKUP_TARGET_HOST",
            "BACKUP_TARGET_PORT",
            "BACKUP_TARGET_USER",
            "BACKUP_TARGET_BASE_PATH",
            "BACKUP_TARGET_HOST_KEY",
        ]
    finally:
        assert manage("down", state_dir=tmp_path).returncode == 0
