"""From a paid order to a running tenant, over real SSH, against the sandbox."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, cast

import paramiko
import pytest
import requests
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from hub.models import Alert, AlertSeverity
from hub.pipeline.models import Job, JobStatus, StepKind, StepStatus
from provisioning.models import Order, OrderMode, OrderStatus, Server, ServerProvider, ServerStatus
from provisioning.services.orders import order_create
from rollouts.models import Release, Rollout, RolloutStatus
from rollouts.services import release_create, rollout_create
from sandbox.control import Sandbox
from tenants.models import Tenant, TenantStatus
from tests.conftest import WorkerProcess, job_of, wait_for
from tests.provisioning.conftest import dns_records, hetzner_servers, pool_server

# Customer domains live in the sandbox's Cloudflare zone.
ZONE = "hub-sandbox.test"

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The first call each script makes to a stand-in, in the order the pipeline runs them:
# the agent (10) is handed the server before the steps that act as the tenant (06-09).
SCRIPT_MARKERS = [
    ("01-system", lambda c: c["cmd"] == "hostnamectl"),
    ("02-docker", lambda c: c["cmd"] == "docker" and c["args"][:1] == ["version"]),
    ("03-nginx", lambda c: c["cmd"] == "apt-get" and "nginx" in c["args"]),
    ("04-firewall", lambda c: c["cmd"] == "ufw"),
    ("05-ssh-hardening", lambda c: c["cmd"] == "sshd" and "-t" in c["args"]),
    ("10-agent", lambda c: c["cmd"] == "systemctl" and "hub-agent" in " ".join(c["args"])),
    ("06-tls", lambda c: c["cmd"] == "certbot"),
    ("07-backups", lambda c: c["cmd"] == "systemctl" and "cron" in c["args"]),
    ("08-hardening", lambda c: c["cmd"] == "sysctl"),
    (
        "09-tools",
        lambda c: c["cmd"] == "docker" and "compose" in c["args"] and "/opt/hub/tools/" in " ".join(c["args"]),
    ),
]


def wait_order(order: Order, statuses: tuple[str, ...], *, timeout: float = 120) -> Order:
    def reached() -> Order | None:
        order.refresh_from_db()
        return order if order.status in statuses else None

    try:
        return wait_for(reached, timeout=timeout, interval=0.25, message=f"order {order.pk} to reach {statuses}")
    except AssertionError:
        steps = [(s.name, s.status, s.attempts, s.error[:200]) for s in job_of(order).steps.order_by("position")]
        raise AssertionError(f"order {order.pk} is {order.status}; steps: {steps}") from None


def place(name: str, **kwargs: Any) -> Order:
    domain = f"{name}.{ZONE}"
    defaults: dict[str, Any] = {
        "plan": "build",
        "region": "eu",
        "tools": ["nextcloud", "ghost"],
        "customer_email": f"owner@{domain}",
    }
    return order_create(domain=domain, **{**defaults, **kwargs})


def docker_state(root: Path) -> dict[str, Any]:
    return json.loads((root / "var/lib/sandbox-docker/state.json").read_text())


def script_order(calls: list[dict[str, Any]]) -> list[str]:
    seen = []
    for name, matches in SCRIPT_MARKERS:
        index = next((i for i, call in enumerate(calls) if matches(call)), None)
        assert index is not None, f"{name} left no trace on the host"
        seen.append((index, name))
    return [name for _, name in sorted(seen)]


def test_order_with_a_pool_server_reaches_fulfilled(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess, mail_dir: Path
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)

    order = wait_order(place("acme-one"), (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    assert order.server_id == server.pk
    server.refresh_from_db()
    assert server.status == ServerStatus.ALLOCATED and server.host_key.startswith("ssh-")
    records = {(r["type"], r["name"], r["content"]) for r in dns_records(sandbox)}
    assert ("A", f"acme-one.{ZONE}", host.addr) in records
    assert ("A", f"*.acme-one.{ZONE}", host.addr) in records
    assert script_order(sandbox.host(host.addr).calls()) == [name for name, _ in SCRIPT_MARKERS]
    handshakes = (host.root.parent / "sshd.log").read_text().count("Accepted publickey")
    assert handshakes == 1, "the probe and the ten scripts share one SSH connection"
    tenant = Tenant.objects.get(domain=f"acme-one.{ZONE}")
    assert tenant.status == TenantStatus.ACTIVE and tenant.registered_at is not None
    assert tenant.server_id == server.pk
    root = sandbox.host(host.addr).root
    # the tool stacks: a project per tool with its database, its .env made on the server
    nextcloud = yaml.safe_load((root / "opt/hub/tools/nextcloud/compose.yml").read_text())
    assert set(nextcloud["services"]) == {"nextcloud", "postgres"}
    ghost = yaml.safe_load((root / "opt/hub/tools/ghost/compose.yml").read_text())
    assert set(ghost["services"]) == {"ghost", "mysql"}
    assert ghost["services"]["ghost"]["ports"] == ["127.0.0.1:8083:2368"]
    env_file = root / "opt/hub/tools/ghost/.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert "MYSQL_DATABASE=ghost\n" in env_file.read_text() and "MYSQL_ROOT_PASSWORD=" in env_file.read_text()
    assert (
        "proxy_pass http://127.0.0.1:8083;"
        in (root / f"etc/nginx/sites-enabled/ghost.acme-one.{ZONE}.conf").read_text()
    )
    running = {c["name"]: c for c in docker_state(root)["containers"].values()}
    assert {"nextcloud-nextcloud-1", "nextcloud-postgres-1", "ghost-ghost-1", "ghost-mysql-1"} <= set(running)
    assert {"ai-openclaw-1", "ai-safety-wrapper-1", "ai-secrets-proxy-1"} <= set(running)
    assert all("@sha256:" in c["image"] for c in running.values())
    # what runs is what the tenant records, so rollouts select it correctly
    assert tenant.versions["ghost"] == "5.96.0" and tenant.versions["openclaw"] == "1.0.0"
    # the one-time token is spent: its file is gone once the agent registered
    wait_for(
        lambda: not (root / "etc/hub-agent/registration-token").exists(),
        timeout=20,
        message="the registration token file removed",
    )
    token = re.compile(rb"hrt_[A-Za-z0-9_-]{43}")
    left = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and token.search(p.read_bytes())]
    assert left == [], "a registration token is still on the server's disk"
    wait_for(
        lambda: any(f"acme-one.{ZONE} is ready" in p.read_text() for p in mail_dir.iterdir()),
        timeout=20,
        message="the welcome email",
    )
    assert order.welcome_sent_at is not None or Order.objects.get(pk=order.pk).welcome_sent_at is not None
    welcome = next(p.read_text() for p in mail_dir.iterdir() if f"acme-one.{ZONE} is ready" in p.read_text())
    # it carries the tenant's tool addresses and the app download links
    assert f"https://files.acme-one.{ZONE}/" in welcome and f"https://blog.acme-one.{ZONE}/" in welcome
    assert all(url in welcome for url in settings.APP_DOWNLOAD_LINKS.values())
    # The order turns FULFILLED inside the last step; the engine records the step
    # (and the job) right after.
    job = wait_for(
        lambda: Job.objects.filter(pk=job_of(order).pk, status=JobStatus.SUCCEEDED).first(),
        timeout=20,
        message="the job recorded as SUCCEEDED",
    )
    actions = job.steps.filter(kind=StepKind.ACTION)
    assert set(actions.values_list("status", flat=True)) == {StepStatus.SUCCEEDED}


def test_a_deprovisioned_tenant_loses_dns_and_data_and_its_server_returns_to_the_pool(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    from provisioning.services.deprovision import tenant_deprovision_start

    (host,) = fresh_hosts(1)
    server = pool_server(host)
    order = wait_order(place("acme-leaving"), (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    assert order.tenant_id is not None
    tenant = Tenant.objects.get(pk=order.tenant_id)
    root = sandbox.host(host.addr).root
    assert (root / "opt/hub/tools/nextcloud/compose.yml").exists()
    assert (root / "etc/hub/backup/password").exists()

    # when billing starts the deprovisioning twice (a redelivered task)
    job = tenant_deprovision_start(tenant_id=tenant.pk, reason="retention over")
    assert tenant_deprovision_start(tenant_id=tenant.pk, reason="retention over").pk == job.pk

    def done() -> bool:
        job.refresh_from_db()
        return job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.ROLLED_BACK)

    wait_for(done, timeout=90, interval=0.25, message="the deprovisioning job")
    assert job.status == JobStatus.SUCCEEDED, [(s.name, s.status, s.error[:200]) for s in job.steps.all()]
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.DEPROVISIONED
    assert not tenant.credentials.filter(revoked_at=None).exists()
    assert not [r for r in dns_records(sandbox) if r["name"].endswith(f"acme-leaving.{ZONE}")]
    # Not /opt/hub itself: the preparation that release_server starts may already have
    # made its empty skeleton again.
    assert not (root / "opt/hub/tools/nextcloud").exists() and not (root / "opt/hub/agent").exists()
    assert not (root / "etc/hub-agent").exists() and not (root / "var/lib/hub-agent").exists()
    assert (
        not (root / "etc/hub/certbot").exists()
        and not (root / "etc/letsencrypt/live/acme-leaving.hub-sandbox.test").exists()
    )
    assert not (root / "etc/hub/backup").exists(), "the backup repository's password and key are gone"
    # the contract server is prepared again and goes back into the pool, untouched
    wait_for(
        lambda: Server.objects.get(pk=server.pk).status == ServerStatus.AVAILABLE,
        timeout=90,
        interval=0.25,
        message="the wiped server back in the pool",
    )
    assert Server.objects.get(pk=server.pk).touched is False


def test_empty_pool_and_auto_buys_a_hetzner_server(sandbox: Sandbox, provisioning_worker: WorkerProcess) -> None:
    order = place("acme-auto", plan="lite", region="us", tools=["uptime_kuma"])

    order = wait_order(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    (bought,) = hetzner_servers(sandbox, order=str(order.pk))
    assert bought["labels"]["managed-by"] == "hub"
    assert bought["server_type"]["name"] == "cpx21"
    assert bought["datacenter"]["location"]["name"] == "ash"
    assert bought["image"]["name"] == "debian-12"
    assert order.server_id is not None
    server = Server.objects.get(pk=order.server_id)
    assert server.provider == ServerProvider.HETZNER and server.provider_id == str(bought["id"])
    assert server.ipv4 == bought["public_net"]["ipv4"]["ip"]
    assert script_order(sandbox.host(server.ipv4).calls()) == [name for name, _ in SCRIPT_MARKERS], "set up over SSH"
    assert Tenant.objects.get(domain=f"acme-auto.{ZONE}").registered_at is not None


def test_an_identical_dns_record_already_there_is_reused_not_doubled(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    (host,) = fresh_hosts(1)
    pool_server(host)
    env = sandbox.env
    response = requests.post(
        f"{env['CLOUDFLARE_API_BASE']}/zones/{env['CLOUDFLARE_ZONE_ID']}/dns_records",
        headers={"Authorization": f"Bearer {env['CLOUDFLARE_API_TOKEN']}"},
        json={"type": "A", "name": f"acme-again.{ZONE}", "content": host.addr, "ttl": 300, "proxied": False},
        timeout=5,
    )
    response.raise_for_status()
    existing = response.json()["result"]["id"]

    order = wait_order(place("acme-again"), (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    (apex,) = dns_records(sandbox, f"acme-again.{ZONE}")
    assert apex["id"] == existing
    assert len(dns_records(sandbox, f"*.acme-again.{ZONE}")) == 1


def test_empty_pool_and_manual_waits_for_staff_then_goes_on(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    order = place("acme-manual", plan="scale", mode=OrderMode.MANUAL, tools=[])
    wait_order(order, (OrderStatus.AWAITING_SERVER,))
    wait_for(lambda: job_of(order).steps.get(name="allocate_server").status == StepStatus.RETRY_WAIT, timeout=20)
    time.sleep(1.0)
    order.refresh_from_db()
    assert order.status == OrderStatus.AWAITING_SERVER and order.server_id is None
    assert hetzner_servers(sandbox, order=str(order.pk)) == []

    (host,) = fresh_hosts(1)
    server = pool_server(host, tier="scale")
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-for-tests")
    client = Client()
    client.force_login(staff)
    response = client.post(f"/admin/provisioning/order/{order.pk}/assign-server/", {"server": server.pk})
    assert response.status_code == 302

    order = wait_order(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    assert order.server_id == server.pk


def test_a_script_that_keeps_failing_rolls_back_and_quarantines_the_touched_pool_server(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)
    sandbox.host(host.addr).fail("sysctl", 99)

    order = wait_order(place("acme-broken"), (OrderStatus.ROLLED_BACK, OrderStatus.FAILED, OrderStatus.FULFILLED))

    assert order.status == OrderStatus.ROLLED_BACK
    assert "setup_08-hardening" in order.failure_reason and "injected failure" in order.failure_reason
    assert dns_records(sandbox, f"acme-broken.{ZONE}") == []
    assert dns_records(sandbox, f"*.acme-broken.{ZONE}") == []
    server.refresh_from_db()
    assert server.status == ServerStatus.QUARANTINED
    steps = {s.name: s for s in job_of(order).steps.all()}
    assert steps["setup_08-hardening"].status == StepStatus.FAILED
    assert steps["setup_08-hardening"].attempts == steps["setup_08-hardening"].max_attempts > 1
    assert steps["setup_09-tools"].status == StepStatus.SKIPPED
    assert steps["undo create_dns"].status == StepStatus.SUCCEEDED
    assert steps["undo allocate_server"].status == StepStatus.SUCCEEDED
    assert steps["create_dns"].status == StepStatus.COMPENSATED


def test_a_failing_order_deletes_the_server_it_bought(sandbox: Sandbox, provisioning_worker: WorkerProcess) -> None:
    order = place("acme-bought-broken", plan="enterprise", tools=[])
    # The host appears when the emulator creates the server; break it before step 8.
    bought = wait_for(
        lambda: [s for s in hetzner_servers(sandbox, order=str(order.pk)) if s["public_net"]["ipv4"]["ip"]],
        timeout=30,
        interval=0.02,
    )
    sandbox.host(bought[0]["public_net"]["ipv4"]["ip"]).fail("sysctl", 99)

    order = wait_order(order, (OrderStatus.ROLLED_BACK, OrderStatus.FAILED, OrderStatus.FULFILLED))

    assert order.status == OrderStatus.ROLLED_BACK
    assert hetzner_servers(sandbox, order=str(order.pk)) == []
    assert Server.objects.get(provider_id=str(bought[0]["id"])).status == ServerStatus.DELETED
    assert dns_records(sandbox, f"acme-bought-broken.{ZONE}") == []


def test_a_changed_host_key_refuses_the_connection_and_raises_a_hard_alert(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    (host,) = fresh_hosts(1)
    server = pool_server(host)
    impostor = paramiko.Ed25519Key.from_private_key_file(sandbox.env["HUB_SSH_PRIVATE_KEY_PATH"])
    Server.objects.filter(pk=server.pk).update(host_key=f"{impostor.get_name()} {impostor.get_base64()}")

    order = wait_order(place("acme-mitm"), (OrderStatus.ROLLED_BACK, OrderStatus.FAILED, OrderStatus.FULFILLED))

    assert order.status == OrderStatus.ROLLED_BACK
    assert "host key" in order.failure_reason
    alert = Alert.objects.get(subject_type="server", subject_id=str(server.pk), kind="ssh_host_key_mismatch")
    assert alert.severity == AlertSeverity.HARD
    server.refresh_from_db()
    assert server.status == ServerStatus.QUARANTINED
    assert sandbox.host(host.addr).calls() == [], "nothing ran on a host that failed verification"


def test_twenty_orders_against_a_pool_of_ten(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    pool = [pool_server(host) for host in fresh_hosts(10)]
    orders = [place(f"crowd-{i}", tools=["uptime_kuma"]) for i in range(20)]

    for order in orders:
        wait_order(order, (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED), timeout=300)

    assert {o.status for o in orders} == {OrderStatus.FULFILLED}, [(o.pk, o.failure_reason) for o in orders]
    servers = [o.server_id for o in orders]
    assert len(set(servers)) == 20, "no server is shared"
    from_pool = [o for o in orders if o.server_id in {s.pk for s in pool}]
    assert len(from_pool) == 10
    # Every order is FULFILLED (asserted above), so each has its server.
    bought = Server.objects.filter(pk__in=cast(list[int], servers), provider=ServerProvider.HETZNER)
    assert bought.count() == 10
    assert len(hetzner_servers(sandbox, **{"managed-by": "hub"})) >= 10
    assert Server.objects.filter(pk__in=[s.pk for s in pool], status=ServerStatus.ALLOCATED).count() == 10


def test_a_netcup_server_registered_through_the_api_is_prepared_into_the_pool(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    (host,) = fresh_hosts(1)
    staff = get_user_model().objects.create_superuser("pool-admin", "pool@example.com", "pw-for-tests")
    client = Client()
    client.force_login(staff)

    response = client.post(
        "/api/v1/servers/",
        {"region": "eu", "tier": "build", "ipv4": host.addr, "ssh_port": host.port, "name": "netcup-rs2000-1"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    server = Server.objects.get(pk=response.json()["id"])
    assert response.json()["status"] == ServerStatus.PREPARING

    wait_for(lambda: Server.objects.get(pk=server.pk).status == ServerStatus.AVAILABLE, timeout=90)
    server.refresh_from_db()
    assert server.host_key.startswith("ssh-") and not server.touched
    calls = sandbox.host(host.addr).calls()
    assert any(c["cmd"] == "ufw" for c in calls) and not any(c["cmd"] == "certbot" for c in calls)
    duplicate = client.post(
        "/api/v1/servers/", {"region": "eu", "ipv4": host.addr, "ssh_port": host.port}, content_type="application/json"
    )
    assert duplicate.status_code == 409 and duplicate.json()["error"] == "duplicate"
    bad = client.post(
        "/api/v1/servers/", {"region": "mars", "ipv4": "300.1.1.1", "colour": "red"}, content_type="application/json"
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid"
    assert Server.objects.count() == 1


def test_a_new_tenant_runs_the_release_of_the_last_completed_rollout_else_the_default(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    # given: nextcloud 30 rolled out to the fleet (COMPLETED); ghost only has its default
    v2 = release_create(
        component="nextcloud", version="30.0.1", image="nextcloud:30.0.1@sha256:" + "2" * 64, actor="ci"
    )
    rollout = rollout_create(release_id=v2.pk, actor="ci")
    Rollout.objects.filter(pk=rollout.pk).update(status=RolloutStatus.COMPLETED, finished_at=timezone.now())
    ghost_default = Release.objects.get(component="ghost", is_default=True)
    (host,) = fresh_hosts(1)
    pool_server(host)

    order = wait_order(place("acme-current"), (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))

    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    root = sandbox.host(host.addr).root
    nextcloud = yaml.safe_load((root / "opt/hub/tools/nextcloud/compose.yml").read_text())["services"]["nextcloud"]
    assert nextcloud["image"] == "nextcloud@sha256:" + "2" * 64
    assert nextcloud["labels"]["hub.version"] == "30.0.1"
    ghost = yaml.safe_load((root / "opt/hub/tools/ghost/compose.yml").read_text())["services"]["ghost"]
    assert ghost["image"] == "ghost@" + ghost_default.image.split("@", 1)[1]
    running = docker_state(root)["containers"]
    assert running["nextcloud-nextcloud-1"]["image"] == "nextcloud@sha256:" + "2" * 64
    assert order.tenant_id is not None
    tenant = Tenant.objects.get(pk=order.tenant_id)
    assert tenant.versions["nextcloud"] == "30.0.1"
    assert tenant.versions["ghost"] == ghost_default.version
    steps = list(job_of(order).steps.filter(kind=StepKind.ACTION).order_by("position").values_list("name", flat=True))
    assert steps[:2] == ["pin_releases", "allocate_server"]


def test_a_component_without_a_release_stops_the_order_before_a_server_is_taken(
    sandbox: Sandbox, fresh_hosts: Any, provisioning_worker: WorkerProcess
) -> None:
    Release.objects.filter(component="openclaw").delete()
    (host,) = fresh_hosts(1)
    server = pool_server(host)

    order = wait_order(place("acme-unreleased"), (OrderStatus.ROLLED_BACK, OrderStatus.FAILED, OrderStatus.FULFILLED))

    assert order.status == OrderStatus.ROLLED_BACK
    assert "no release of openclaw" in order.failure_reason
    steps = {s.name: s for s in job_of(order).steps.filter(kind=StepKind.ACTION)}
    assert steps["pin_releases"].status == StepStatus.FAILED and steps["pin_releases"].attempts == 1
    assert steps["allocate_server"].status not in (StepStatus.SUCCEEDED, StepStatus.COMPENSATED)
    alert = Alert.objects.get(subject_type="component", subject_id="openclaw", kind="release_missing")
    assert f"order {order.pk}" in alert.message
    assert Server.objects.get(pk=server.pk).status == ServerStatus.AVAILABLE
    assert order.server_id is None and hetzner_servers(sandbox, order=str(order.pk)) == []
    assert sandbox.host(host.addr).calls() == [], "nothing ran on a server"
