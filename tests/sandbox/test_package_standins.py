"""apt-get, dpkg and systemctl stand-ins refuse what Debian 12 refuses: a package apt
cannot locate, a repository whose key is missing, a unit no installed package ships.
They run as a sandbox session runs them (HOST_ROOT set, the stand-ins first on PATH),
without sshd: what is tested is the command, not the session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from provisioning.services.remote import step_script

STANDINS = Path(__file__).resolve().parents[2] / "sandbox" / "standins"
DOCKER_LIST = (
    "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian bookworm stable\n"
)


def run(root: Path, *command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOST_ROOT": str(root), "HOME": str(root / "root"), "PATH": f"{STANDINS}:{os.environ['PATH']}"}
    return subprocess.run(command, capture_output=True, text=True, env=env, input=stdin, timeout=120, check=False)


def docker_key() -> str:
    """Docker's release key as 02-docker.sh carries it."""
    script = step_script("02-docker")
    return script.split("<<'KEY'\n", 1)[1].split("\nKEY\n", 1)[0] + "\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path


def test_apt_get_refuses_a_package_debian_does_not_know_and_installs_nothing(root: Path) -> None:
    refused = run(root, "apt-get", "install", "-y", "-qq", "nginx", "nginx-ultra-hub")

    assert refused.returncode == 100
    assert "E: Unable to locate package nginx-ultra-hub" in refused.stderr
    assert run(root, "dpkg", "-s", "nginx").returncode == 1, "apt installs all or nothing"
    installed = run(root, "apt-get", "install", "-y", "-qq", "nginx", "restic=0.14.0-1+b5", "jq:amd64")
    assert installed.returncode == 0, installed.stderr
    assert run(root, "dpkg", "-s", "nginx", "restic", "jq").returncode == 0


def test_docker_packages_exist_only_once_dockers_repository_is_added_signed_and_fetched(root: Path) -> None:
    # Debian 12 ships no compose plugin: the install the old 02-docker.sh made.
    assert (
        "E: Unable to locate package docker-compose-plugin"
        in run(root, "apt-get", "install", "-y", "docker.io", "docker-compose-plugin").stderr
    )
    sources = root / "etc" / "apt" / "sources.list.d"
    sources.mkdir(parents=True)
    (sources / "docker.list").write_text(DOCKER_LIST)

    # The list without its key: apt refuses the unsigned repository.
    unsigned = run(root, "apt-get", "update", "-qq")
    assert unsigned.returncode == 100
    assert "NO_PUBKEY 7EA0A9C3F273FCD8" in unsigned.stderr and "is not signed" in unsigned.stderr
    keyrings = root / "etc" / "apt" / "keyrings"
    keyrings.mkdir(parents=True)
    (keyrings / "docker.asc").write_text(docker_key())
    # Listed and signed, but not fetched yet: apt still cannot locate it.
    assert run(root, "apt-get", "install", "-y", "docker-ce").returncode == 100

    assert run(root, "apt-get", "update", "-qq").returncode == 0
    assert run(root, "apt-get", "install", "-y", "-qq", "docker-ce", "docker-compose-plugin").returncode == 0
    assert run(root, "systemctl", "enable", "--now", "docker").returncode == 0
    assert run(root, "systemctl", "is-active", "containerd").stdout.strip() == "inactive"


def test_apt_get_update_refuses_a_repository_the_sandbox_cannot_know(root: Path) -> None:
    sources = root / "etc" / "apt" / "sources.list.d"
    sources.mkdir(parents=True)
    (sources / "vendor.sources").write_text(
        "Types: deb\nURIs: https://apt.vendor.example/debian\nSuites: bookworm\nComponents: main\n"
    )

    result = run(root, "apt-get", "update")

    assert result.returncode == 100
    assert "https://apt.vendor.example/debian bookworm InRelease" in result.stderr


def test_systemctl_refuses_a_unit_never_installed_as_systemd_does(root: Path) -> None:
    enable = run(root, "systemctl", "enable", "--now", "nginx")
    restart = run(root, "systemctl", "restart", "cron")
    status = run(root, "systemctl", "status", "hub-agent")

    assert (enable.returncode, enable.stderr.strip()) == (
        1,
        "Failed to enable unit: Unit file nginx.service does not exist.",
    )
    assert (restart.returncode, restart.stderr.strip()) == (
        5,
        "Failed to restart cron.service: Unit cron.service not found.",
    )
    assert (status.returncode, status.stderr.strip()) == (4, "Unit hub-agent.service could not be found.")
    assert run(root, "systemctl", "is-active", "nginx").stdout.strip() == "inactive"


def test_systemctl_knows_units_of_installed_packages_and_unit_files_written(root: Path) -> None:
    # ssh ships with the base image; nginx once installed; the agent once its file is written.
    assert run(root, "systemctl", "reload", "ssh").returncode == 0
    assert run(root, "systemctl", "reload", "sshd").returncode == 0
    assert run(root, "apt-get", "install", "-y", "-qq", "nginx", "certbot").returncode == 0
    assert run(root, "systemctl", "enable", "--now", "nginx").returncode == 0
    assert run(root, "systemctl", "enable", "--now", "certbot.timer").returncode == 0
    unit = root / "etc" / "systemd" / "system" / "hub-agent.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\nDescription=test\n[Service]\nExecStart=/bin/true\n")
    assert run(root, "systemctl", "enable", "hub-agent").returncode == 0
    assert run(root, "apt-get", "remove", "-y", "nginx").returncode == 0
    assert run(root, "systemctl", "restart", "nginx").returncode == 5


def test_the_units_map_agrees_with_dpkg_for_the_packages_this_machine_has() -> None:
    import sys

    sys.path.insert(0, str(STANDINS))
    from standin_lib import packages

    checked = []
    for package, units in packages.UNITS.items():
        shipped = packages._dpkg_units(package)
        if shipped is None:
            continue
        aliases = {"sshd.service"}  # made by `systemctl enable ssh`, in no package
        assert set(units) - aliases <= set(shipped), package
        checked.append(package)
    assert "openssh-server" in checked and "apt" in checked


def test_the_setup_scripts_before_the_tenant_pass_on_a_fresh_host(root: Path) -> None:
    # What the pool preparation runs (06 and 09 need a tenant): the scripts, not the
    # stand-ins, must be right; a second run changes nothing and passes too.
    env = "export HUB_DOMAIN=pool-1.invalid HUB_ADMIN_EMAIL=ops@example.com\n"
    scripts = ("01-system", "02-docker", "03-nginx", "04-firewall", "05-ssh-hardening", "07-backups", "08-hardening")
    for _ in range(2):
        for name in scripts:
            result = run(root, "bash", "-s", stdin=env + step_script(name))
            assert result.returncode == 0, f"{name}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    assert run(root, "dpkg", "-s", "docker-ce", "docker-compose-plugin", "restic", "cron").returncode == 0


@pytest.mark.parametrize("command", ["systemctl", "certbot", "apt-get"])
def test_a_standin_outside_a_sandbox_session_refuses_and_touches_nothing(command: str, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "HOST_ROOT"}
    result = subprocess.run(
        [str(STANDINS / command), "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 127
    assert "HOST_ROOT is not set; refusing to run" in result.stderr
    assert list(tmp_path.iterdir()) == []
