"""The certbot stand-in on a real sandbox host: DNS-01 through --manual hooks, with the
Cloudflare emulator as the DNS the CA looks at, and certbot's own refusals.

The hooks here write the TXT record with the emulator's token, passed on the SSH
command line: a test fixture, not what a tenant server does (tests/provisioning/
test_tls.py shows the Hub doing it for the server, with no credential on it)."""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from sandbox.control import Sandbox, SandboxHost
from tests.sandbox.helpers import ssh_connect, ssh_run

# The hook writes (or, with "remove", deletes) the TXT value in the zone through the
# Cloudflare API, and notes the environment certbot gave it.
HOOK = r"""#!/usr/bin/python3
import json, os, sys, urllib.request
base, token, zone = os.environ["CF_BASE"], os.environ["CF_TOKEN"], os.environ["CF_ZONE"]
env = {k: v for k, v in os.environ.items() if k.startswith("CERTBOT_")}
with open(os.environ["HOST_ROOT"] + "/root/hook-runs.jsonl", "a") as log:
    log.write(json.dumps({"action": sys.argv[1], "env": env}) + "\n")
name = "_acme-challenge." + env["CERTBOT_DOMAIN"]
def call(method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=5))
if sys.argv[1] == "put":
    call("POST", f"/zones/{zone}/dns_records", {"type": "TXT", "name": name, "content": env["CERTBOT_VALIDATION"]})
    print("put " + env["CERTBOT_VALIDATION"])
elif sys.argv[1] == "remove":
    for record in call("GET", f"/zones/{zone}/dns_records?type=TXT&name={name}")["result"]:
        if record["content"] == env["CERTBOT_VALIDATION"]:
            call("DELETE", f"/zones/{zone}/dns_records/{record['id']}")
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


@pytest.fixture
def zone(sandbox: Sandbox) -> dict[str, Any]:
    return sandbox.add_zone(f"cert-{uuid.uuid4().hex[:8]}.example")


@pytest.fixture
def hook(host: SandboxHost) -> Path:
    path = host.root / "etc" / "hub" / "test-hook"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HOOK)
    path.chmod(0o755)
    (host.root / "root" / "hook-runs.jsonl").unlink(missing_ok=True)
    return path


def certbot(
    ssh: paramiko.SSHClient,
    sandbox: Sandbox,
    zone: dict[str, Any],
    args: str,
    *,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    variables = {
        "CF_BASE": sandbox.env["CLOUDFLARE_API_BASE"],
        "CF_TOKEN": sandbox.env["CLOUDFLARE_API_TOKEN"],
        "CF_ZONE": zone["id"],
        **(env or {}),
    }
    prefix = " ".join(f"{key}={shlex.quote(value)}" for key, value in variables.items())
    return ssh_run(ssh, f"{prefix} certbot {args}")


def issue_args(domain: str, hook: Path, *extra: str) -> str:
    return " ".join(
        [
            "certonly --non-interactive --agree-tos -m ops@example.com --manual --preferred-challenges dns",
            f"--manual-auth-hook '{hook} put' --manual-cleanup-hook '{hook} remove'",
            f"-d {domain} -d '*.{domain}'",
            *extra,
        ]
    )


def hook_runs(host: SandboxHost) -> list[dict[str, Any]]:
    path = host.root / "root" / "hook-runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def txt_values(sandbox: Sandbox, domain: str) -> list[str]:
    return sandbox.resolve(f"_acme-challenge.{domain}", "TXT")


def san(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout


def days_left(cert: Path) -> int:
    for days in (89, 60, 30, 9, 0):
        checked = subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-checkend", str(days * 86400)],
            capture_output=True,
            timeout=10,
        )
        if checked.returncode == 0:
            return days
    return -1


def test_certbot_issues_a_wildcard_certificate_through_the_manual_dns_hooks(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any], hook: Path
) -> None:
    domain = zone["name"]

    code, out, err = certbot(ssh, sandbox, zone, issue_args(domain, hook))

    assert code == 0, err
    assert "Successfully received certificate." in out
    live = host.root / "etc" / "letsencrypt" / "live" / domain
    assert "DNS:" + domain in san(live / "fullchain.pem") and "DNS:*." + domain in san(live / "fullchain.pem")
    assert (live / "cert.pem").is_symlink() and (live / "privkey.pem").resolve().name == "privkey1.pem"
    # the auth hook ran once per challenge, as certbot runs it, then the cleanup hook
    runs = hook_runs(host)
    assert [r["action"] for r in runs] == ["put", "put", "remove", "remove"]
    puts = [r["env"] for r in runs[:2]]
    assert [e["CERTBOT_DOMAIN"] for e in puts] == [domain, domain], "a wildcard's challenge is at its base domain"
    assert [e["CERTBOT_REMAINING_CHALLENGES"] for e in puts] == ["1", "0"]
    assert {e["CERTBOT_ALL_DOMAINS"] for e in puts} == {f"{domain},{domain}"}
    assert len({e["CERTBOT_VALIDATION"] for e in puts}) == 2 and "CERTBOT_TOKEN" not in puts[0]
    assert runs[2]["env"]["CERTBOT_AUTH_OUTPUT"] == f"put {puts[0]['CERTBOT_VALIDATION']}"
    # the CA found both values while they were there; the cleanup removed them
    seen = [json.loads(line) for line in (host.root / "var/log/sandbox/certbot.jsonl").read_text().splitlines()[-10:]]
    looked = [entry for entry in seen if entry["event"] == "validation"][-2:]
    assert [entry["expected"] in entry["seen"] for entry in looked] == [True, True]
    assert txt_values(sandbox, domain) == []
    # and the renewal configuration remembers how
    renewal = (host.root / "etc" / "letsencrypt" / "renewal" / f"{domain}.conf").read_text()
    assert "authenticator = manual" in renewal and f"manual_auth_hook = {hook} put" in renewal
    assert f"manual_cleanup_hook = {hook} remove" in renewal and "pref_challs = dns-01," in renewal


def test_certbot_renew_renews_only_what_is_due_through_the_same_hooks_then_deploys(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any], hook: Path
) -> None:
    domain = zone["name"]
    marker = host.root / "root" / "deployed"
    deploy = host.root / "etc" / "letsencrypt" / "renewal-hooks" / "deploy" / "mark"
    deploy.parent.mkdir(parents=True, exist_ok=True)
    deploy.write_text('#!/bin/sh\necho "$RENEWED_LINEAGE $RENEWED_DOMAINS" >> "$HOME/deployed"\n')
    deploy.chmod(0o755)
    marker.unlink(missing_ok=True)
    # given a certificate with 10 days left
    code, _, err = certbot(ssh, sandbox, zone, issue_args(domain, hook), env={"SANDBOX_CERT_DAYS": "10"})
    assert code == 0, err
    cert = host.root / "etc" / "letsencrypt" / "live" / domain / "cert.pem"
    assert days_left(cert) == 9
    runs_before = len(hook_runs(host))

    # when certbot.timer runs `certbot renew`
    code, out, err = certbot(ssh, sandbox, zone, "renew")

    # then it renewed through the hooks and ran the deploy hooks
    assert code == 0, err
    assert "Congratulations, all renewals succeeded" in out
    assert [r["action"] for r in hook_runs(host)[runs_before:]] == ["put", "put", "remove", "remove"]
    assert days_left(cert) == 89 and cert.resolve().name == "cert2.pem"
    assert marker.read_text().split() == [f"/etc/letsencrypt/live/{domain}", domain, f"*.{domain}"]

    # and the next run has nothing to do
    runs_before = len(hook_runs(host))
    code, out, _ = certbot(ssh, sandbox, zone, "renew")
    assert code == 0 and "not due for renewal" in out and "No renewals were attempted." in out
    assert len(hook_runs(host)) == runs_before


# --- what certbot refuses ---------------------------------------------------------------


def no_certificate(host: SandboxHost, domain: str) -> bool:
    return not (host.root / "etc" / "letsencrypt" / "live" / domain).exists()


def test_a_hook_that_does_not_exist_stops_certbot_before_anything(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any], hook: Path
) -> None:
    missing = hook.parent / "no-such-hook"

    code, _, err = certbot(ssh, sandbox, zone, issue_args(zone["name"], missing))

    assert code == 1
    assert f"Unable to find manual-auth-hook command {missing} in the PATH." in err
    assert no_certificate(host, zone["name"]) and hook_runs(host) == []


def test_a_hook_that_is_not_executable_stops_certbot(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any], hook: Path
) -> None:
    hook.chmod(0o644)

    code, _, err = certbot(ssh, sandbox, zone, issue_args(zone["name"], hook))

    assert code == 1
    assert f"{hook}-hook command manual-auth exists, but is not executable." in err
    assert no_certificate(host, zone["name"]) and hook_runs(host) == []


def test_without_manual_non_interactive_certbot_has_no_plugin(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any], hook: Path
) -> None:
    args = issue_args(zone["name"], hook).replace("--manual ", "")

    code, _, err = certbot(ssh, sandbox, zone, args)

    assert code == 1
    assert "Missing command line flags. For non-interactive execution, you will need to specify a plugin" in err
    assert no_certificate(host, zone["name"]) and hook_runs(host) == []


def test_manual_non_interactive_needs_an_auth_hook(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any]
) -> None:
    code, _, err = certbot(
        ssh,
        sandbox,
        zone,
        f"certonly -n --agree-tos -m ops@example.com --manual --preferred-challenges dns -d {zone['name']}",
    )

    assert code == 1
    assert "An authentication script must be provided with --manual-auth-hook" in err
    assert no_certificate(host, zone["name"])


def test_a_plugin_debian_does_not_ship_is_not_there(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any]
) -> None:
    code, _, err = certbot(
        ssh, sandbox, zone, f"certonly -n --agree-tos -m ops@example.com --dns-cloudflare -d {zone['name']}"
    )

    assert code == 1 and "The requested dns-cloudflare plugin does not appear to be installed" in err
    assert no_certificate(host, zone["name"])


def test_no_certificate_when_the_txt_record_is_not_there_after_the_auth_hook(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any], hook: Path
) -> None:
    lazy = hook.parent / "lazy-hook"
    lazy.write_text("#!/bin/sh\necho 'did nothing'\n")
    lazy.chmod(0o755)

    code, out, err = certbot(ssh, sandbox, zone, issue_args(zone["name"], lazy))

    assert code == 1
    assert f"No TXT record found at _acme-challenge.{zone['name']}" in out
    assert "Some challenges have failed." in err
    assert no_certificate(host, zone["name"])


def test_no_certificate_while_the_zone_is_not_delegated(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, hook: Path
) -> None:
    pending = sandbox.add_zone(f"cert-{uuid.uuid4().hex[:8]}.example", status="pending")

    code, out, _ = certbot(ssh, sandbox, pending, issue_args(pending["name"], hook))

    assert code == 1 and f"No TXT record found at _acme-challenge.{pending['name']}" in out
    assert [r["action"] for r in hook_runs(host)] == ["put", "put", "remove", "remove"]
    assert no_certificate(host, pending["name"])


def test_a_wildcard_needs_dns_01(
    ssh: paramiko.SSHClient, sandbox: Sandbox, host: SandboxHost, zone: dict[str, Any], hook: Path
) -> None:
    args = issue_args(zone["name"], hook).replace("--preferred-challenges dns", "--preferred-challenges http")

    code, _, err = certbot(ssh, sandbox, zone, args)

    assert code == 1
    assert "You may need to use an authenticator plugin that can do challenges over DNS." in err
    assert no_certificate(host, zone["name"]) and hook_runs(host) == []
