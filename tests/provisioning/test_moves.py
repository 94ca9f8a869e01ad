"""A tenant outlives its server, against the sandbox: backed up now, recovered onto a new
server after its Hetzner server was deleted (with the worker SIGKILLed half way),
migrated from Hetzner to a Netcup contract server (after a first attempt whose restore
failed left it serving where it was), and the monthly overflow check that picks whom
to migrate. One tenant per test; real workers, sshd hosts, restic and emulators."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.utils import timezone

from hub.freeze import fleet_freeze_set
from hub.models import Alert, AlertSeverity, AlertStatus, AuditEvent
from hub.pipeline.models import Job, JobStatus, StepStatus
from hub.pipeline.reaper import pipeline_reap
from provisioning.models import MoveKind, OrderStatus, Server, ServerProvider, ServerStatus, TenantMove
from provisioning.services.moves import overflow_check, overflow_report
from sandbox.control import Sandbox, SandboxHost
from tenants.models import AgentCredential, BackupReport, Command, CommandType, Tenant, TenantStatus
from tenants.services import tenant_create
from tests.conftest import WorkerProcess, wait_for
from tests.provisioning.conftest import dns_records, hetzner_servers, pool_server
from tests.provisioning.test_backups import READ_BACK, STACKS_WITH_DATA, shell
from tests.provisioning.test_provisioning import ZONE, docker_state, place, wait_order

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FINAL = (JobStatus.SUCCEEDED, JobStatus.ROLLED_BACK, JobStatus.FAILED, JobStatus.CANCELLED)
HEARTBEAT = {"disk_percent": 10.0, "memory_percent": 20.0, "load": 0.1, "uptime_seconds": 60}


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess], hub_settings: dict[str, str]) -> Callable[..., WorkerProcess]:
    def start(name: str) -> WorkerProcess:
        return start_worker(queues="provisioning,default", concurrency=6, pool="threads", name=name, env=hub_settings)

    return start


def staff() -> Client:
    user = get_user_model().objects.filter(username="moves-staff").first() or get_user_model().objects.create_superuser(
        "moves-staff", "staff@example.com", "pw-for-tests"
    )
    client = Client()
    client.force_login(user)
    return client


def wait_job(job_id: int, *, timeout: float = 240, reap: bool = False) -> Job:
    def ended() -> Job | None:
        if reap:
            pipeline_reap()
        return Job.objects.filter(pk=job_id, status__in=FINAL).first()

    try:
        return wait_for(ended, timeout=timeout, interval=0.5, message=f"job {job_id} to end")
    except AssertionError:
        steps = [(s.name, s.status, s.attempts, s.error[-300:]) for s in Job.objects.get(pk=job_id).steps.all()]
        raise AssertionError(f"job {job_id} did not end: {steps}") from None


def tenant_on_hetzner(sandbox: Sandbox, name: str) -> tuple[Tenant, SandboxHost]:
    """A tenant provisioned with the pool empty: on a server bought at Hetzner."""
    order = wait_order(place(name), (OrderStatus.FULFILLED, OrderStatus.ROLLED_BACK, OrderStatus.FAILED))
    assert order.status == OrderStatus.FULFILLED, order.failure_reason
    assert order.tenant_id is not None
    tenant = Tenant.objects.select_related("server").get(pk=order.tenant_id)
    assert tenant.server is not None and tenant.server.provider == ServerProvider.HETZNER
    host = sandbox.host(tenant.server.ipv4)
    code, out = shell(host, sandbox, STACKS_WITH_DATA)
    assert code == 0, out
    return tenant, host


def api_key(host: SandboxHost) -> str:
    return (host.root / "var/lib/hub-agent/api_key").read_text().strip()


def heartbeat_status(hub_settings: dict[str, str], key: str) -> int:
    response = requests.post(
        f"{hub_settings['HUB_PUBLIC_URL']}/api/v1/agent/heartbeat",
        json=HEARTBEAT,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    return response.status_code


def a_records(sandbox: Sandbox, domain: str) -> set[tuple[str, str]]:
    return {(r["name"], r["content"]) for r in dns_records(sandbox) if r["type"] == "A" and r["name"].endswith(domain)}


def assert_lives_on(sandbox: Sandbox, hub_settings: dict[str, str], tenant: Tenant, old_key: str) -> SandboxHost:
    """Active on its new server with its data, DNS and a new agent key; the old one refused."""
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.ACTIVE and tenant.server is not None
    host = sandbox.host(tenant.server.ipv4)
    code, out = shell(host, sandbox, READ_BACK)
    assert code == 0, out
    assert out.splitlines() == ["1|written before the backup", "7\ta post from before the backup", "a photo"]
    ip = tenant.server.ipv4
    assert a_records(sandbox, tenant.domain) == {(tenant.domain, ip), (f"*.{tenant.domain}", ip)}
    new_key = api_key(host)
    assert new_key != old_key
    assert heartbeat_status(hub_settings, new_key) == 200
    assert heartbeat_status(hub_settings, old_key) == 401
    return host


def test_backup_now_then_recover_a_lost_hetzner_server_with_the_worker_killed_half_way(
    sandbox: Sandbox, hub_settings: dict[str, str], worker: Callable[..., WorkerProcess]
) -> None:
    doomed = worker("doomed")
    tenant, old_host = tenant_on_hetzner(sandbox, "acme-lost")
    lost = tenant.server
    assert lost is not None

    # backup now: the run is in the tenant's history once the job ends
    answer = staff().post(f"/api/v1/tenants/{tenant.pk}/backup/", {}, content_type="application/json")
    assert answer.status_code == 202, answer.content
    backup_job = wait_job(answer.json()["job"]["id"])
    assert backup_job.status == JobStatus.SUCCEEDED, backup_job.error
    report = BackupReport.objects.get(pk=backup_job.context["backup_report_id"])
    assert report.tenant_id == tenant.pk and report.outcome == "SUCCESS" and report.remote_sync is not None
    assert report.remote_sync == {"status": "success", "uploaded_mb": report.remote_sync["uploaded_mb"]}

    # the server is lost
    old_key = api_key(old_host)
    env = sandbox.env
    requests.delete(
        f"{env['HCLOUD_API_ENDPOINT']}/servers/{lost.provider_id}",
        headers={"Authorization": f"Bearer {env['HCLOUD_TOKEN']}"},
        timeout=10,
    ).raise_for_status()
    # the new server's first status read hangs for a while: the worker dies meanwhile
    sandbox.hetzner_fault(status=503, method="GET", path="/v1/servers/", delay=4)

    answer = staff().post(
        f"/api/v1/tenants/{tenant.pk}/recover/", {"reason": "the VPS is gone"}, content_type="application/json"
    )
    assert answer.status_code == 202, answer.content
    move = TenantMove.objects.get(pk=answer.json()["move"])
    job_id = move.job_id
    assert move.kind == MoveKind.RECOVER and job_id is not None and job_id == answer.json()["job"]["id"]
    wait_for(
        lambda: Job.objects.get(pk=job_id).steps.get(name="wait_server_ready").status == StepStatus.RUNNING,
        timeout=60,
        message="the recovery waiting for its new server",
    )
    doomed.kill()
    rescuer = worker("rescuer")
    job = wait_job(job_id, reap=True)
    rescuer.stop()

    assert job.status == JobStatus.SUCCEEDED, job.error
    move.refresh_from_db()
    assert move.target_server is not None
    assert [s["id"] for s in hetzner_servers(sandbox, move=str(move.pk))] == [int(move.target_server.provider_id)]
    assert Server.objects.filter(labels__move=str(move.pk)).count() == 1, "exactly one new server"
    assert_lives_on(sandbox, hub_settings, tenant, old_key)
    assert tenant.server_id == move.target_server_id
    lost.refresh_from_db()
    assert lost.status == ServerStatus.DELETED
    assert move.switched_at is not None and move.target_heartbeat_at is not None
    # the recovery's timeline is on the tenant's admin page
    page = staff().get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert "recover_tenant" in page and "wait_target_heartbeat" in page and "restore" in page


def test_migrate_from_hetzner_to_netcup_after_a_failed_restore_left_the_source_serving(
    sandbox: Sandbox, fresh_hosts: Any, hub_settings: dict[str, str], worker: Callable[..., WorkerProcess]
) -> None:
    running = worker("migrations")
    try:
        tenant, source_host = tenant_on_hetzner(sandbox, "acme-overflow")
        source = tenant.server
        assert source is not None
        first_host, second_host = fresh_hosts(2)
        first, second = pool_server(first_host), pool_server(second_host)
        old_key = api_key(source_host)

        # the restore on the first target fails every time
        stop = f"docker compose -f {first_host.root}/opt/hub/tools/nextcloud/compose.yml stop"
        sandbox.host(first_host.addr).fail(stop, 10)
        answer = staff().post(
            f"/api/v1/tenants/{tenant.pk}/migrate/", {"server": first.pk}, content_type="application/json"
        )
        assert answer.status_code == 202, answer.content
        failed = wait_job(answer.json()["job"]["id"])

        assert failed.status == JobStatus.ROLLED_BACK, failed.error
        assert "restore" in failed.error
        alert = Alert.objects.get(subject_type="tenant", subject_id=str(tenant.pk), kind="tenant_migrate_failed")
        assert alert.status == AlertStatus.OPEN and alert.severity == AlertSeverity.MEDIUM
        assert f"stays on server {source.pk}" in alert.message
        tenant.refresh_from_db()
        assert tenant.status == TenantStatus.ACTIVE and tenant.server_id == source.pk
        assert a_records(sandbox, tenant.domain) == {(tenant.domain, source.ipv4), (f"*.{tenant.domain}", source.ipv4)}
        first.refresh_from_db()
        assert first.status == ServerStatus.QUARANTINED
        # out of maintenance: the source's agent started its tools again, and still answers
        leave = Command.objects.get(tenant=tenant, type=CommandType.MAINTENANCE, payload__enter=False)
        wait_for(lambda: Command.objects.get(pk=leave.pk).status == "SUCCEEDED", timeout=30, message="resumed")
        states = {c["name"]: c["state"] for c in docker_state(source_host.root)["containers"].values()}
        assert states["nextcloud-nextcloud-1"] == states["ghost-ghost-1"] == "running"
        assert heartbeat_status(hub_settings, old_key) == 200
        assert (
            not AgentCredential.objects.filter(tenant=tenant, revoked_at=None)
            .exclude(pk__in=TenantMove.objects.get(job=failed).source_credential_ids or [])
            .exists()
        ), "the first target's agent key is revoked"

        # then a migration to any free Netcup server goes through
        answer = staff().post(
            f"/api/v1/tenants/{tenant.pk}/migrate/", {"provider": "NETCUP"}, content_type="application/json"
        )
        assert answer.status_code == 202, answer.content
        job = wait_job(answer.json()["job"]["id"])
    finally:
        running.stop()

    assert job.status == JobStatus.SUCCEEDED, job.error
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED, "the later migration made it: staff need not act"
    move = TenantMove.objects.get(job=job)
    assert move.target_server_id == second.pk
    assert_lives_on(sandbox, hub_settings, tenant, old_key)
    # the Hetzner source is deleted, and only after the switch
    source.refresh_from_db()
    assert source.status == ServerStatus.DELETED
    assert [s for s in hetzner_servers(sandbox) if str(s["id"]) == source.provider_id] == []
    deleted = AuditEvent.objects.get(object_type="server", object_id=str(source.pk), new=ServerStatus.DELETED)
    assert move.switched_at is not None and deleted.created_at > move.switched_at
    # the downtime: maintenance start to the first heartbeat from the target
    assert move.maintenance_started_at is not None and move.target_heartbeat_at is not None
    assert move.downtime_seconds == pytest.approx(
        (move.target_heartbeat_at - move.maintenance_started_at).total_seconds()
    )
    assert job.context["downtime_seconds"] == move.downtime_seconds


# --- the monthly overflow check (no migration runs to its end here) ------------------


@pytest.fixture
def overflow_fleet(provisioning_worker: WorkerProcess) -> Iterator[dict[str, Tenant]]:
    """Tenants on made-up Hetzner servers; two free Netcup eu/build servers whose SSH
    refuses (the moves the check starts wait there until the test cancels them)."""

    def server(provider: str, region: str = "eu", tier: str = "build", status: str = ServerStatus.ALLOCATED) -> Server:
        return Server.objects.create(
            provider=provider, region=region, tier=tier, ipv4="127.0.0.1", ssh_port=1, status=status
        )

    def tenant(name: str, provider: str, region: str = "eu", plan: str = "build") -> Tenant:
        return tenant_create(
            domain=f"{name}.{ZONE}",
            plan=plan,
            region=region,
            server_id=server(provider, region, plan).pk,
            status=TenantStatus.ACTIVE,
        )

    fleet = {
        name: tenant(name, provider, region, plan)
        for name, provider, region, plan in [
            ("oldest", ServerProvider.HETZNER, "eu", "build"),
            ("older", ServerProvider.HETZNER, "eu", "build"),
            ("newest", ServerProvider.HETZNER, "eu", "build"),
            ("scale", ServerProvider.HETZNER, "eu", "scale"),
            ("daytime", ServerProvider.HETZNER, "us", "build"),
            ("contract", ServerProvider.NETCUP, "eu", "build"),
        ]
    }
    for region in ("eu", "eu", "eu", "us"):
        server(ServerProvider.NETCUP, region=region, status=ServerStatus.AVAILABLE)
    yield fleet


def test_the_monthly_check_migrates_the_eligible_overflow_tenants_within_the_cap_once(
    overflow_fleet: dict[str, Tenant],
) -> None:
    def moved() -> list[str]:
        return sorted(TenantMove.objects.values_list("tenant__domain", flat=True))

    report = {row.tenant.domain: row.extra_eur_per_month for row in overflow_report()}
    assert report[f"oldest.{ZONE}"] == pytest.approx(15.59 - 14.50)
    assert report[f"scale.{ZONE}"] == pytest.approx(29.09 - 26.00)
    assert f"contract.{ZONE}" not in report
    page = staff().get("/admin/provisioning/tenantmove/").content.decode()
    assert f"oldest.{ZONE}" in page and "Tenants on Hetzner overflow (5;" in page

    night = {"eu": "0-24", "us": "0-0"}
    with override_settings(OVERFLOW_MIGRATIONS_MAX=2, OVERFLOW_NIGHT_HOURS=night):
        # frozen, nothing starts
        fleet_freeze_set(frozen=True, actor="tests")
        assert overflow_check().skipped == "the fleet is frozen"
        fleet_freeze_set(frozen=False, actor="tests")
        assert moved() == []

        # two runs overlapping: one of them works, the cap holds, nobody moves twice
        runs: list[Any] = []
        threads = [threading.Thread(target=lambda: runs.append(_in_thread(overflow_check))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert moved() == [f"older.{ZONE}", f"oldest.{ZONE}"]
        # a later run while both still move: the cap is full
        assert overflow_check().started == []
        assert moved() == [f"older.{ZONE}", f"oldest.{ZONE}"]

    assert sum(len(run.started) for run in runs) == 2
    for move in TenantMove.objects.select_related("job"):
        assert move.kind == MoveKind.MIGRATE and move.wanted_provider == ServerProvider.NETCUP
        assert move.job is not None and move.job.status in (JobStatus.PENDING, JobStatus.RUNNING)


def _in_thread(call: Callable[[], Any]) -> Any:
    from django.db import connection

    try:
        return call()
    finally:
        connection.close()


# --- bad input ----------------------------------------------------------------------


def test_the_endpoints_answer_bad_input_with_a_json_4xx_and_change_nothing(provisioning_worker: WorkerProcess) -> None:
    server = Server.objects.create(
        provider=ServerProvider.HETZNER, region="eu", tier="build", ipv4="127.0.0.1", status=ServerStatus.ALLOCATED
    )
    tenant = tenant_create(domain=f"acme-bad.{ZONE}", server_id=server.pk, status=TenantStatus.ACTIVE)
    netcup_scale = Server.objects.create(
        provider=ServerProvider.NETCUP, region="eu", tier="scale", ipv4="127.0.0.2", status=ServerStatus.AVAILABLE
    )
    client = staff()
    before = (
        Job.objects.count(),
        TenantMove.objects.count(),
        AuditEvent.objects.filter(action__startswith="tenant.").count(),
    )
    cases = [
        ("backup", 999999, {}, 404),
        ("recover", 999999, {}, 404),
        ("migrate", 999999, {"provider": "NETCUP"}, 404),
        ("recover", "abc", {}, 404),
        ("backup", tenant.pk, {"now": True}, 400),
        ("backup", tenant.pk, [1, 2], 400),
        ("recover", tenant.pk, {"reason": 7}, 400),
        ("migrate", tenant.pk, {}, 400),
        ("migrate", tenant.pk, {"server": "1"}, 400),
        ("migrate", tenant.pk, {"server": 1, "provider": "NETCUP"}, 400),
        ("migrate", tenant.pk, {"provider": "AWS"}, 400),
        ("migrate", tenant.pk, {"server": 999999}, 400),
        ("migrate", tenant.pk, {"server": netcup_scale.pk}, 409),
        ("migrate", tenant.pk, {"server": server.pk}, 409),
    ]
    for action, tenant_id, body, expected in cases:
        answer = client.post(f"/api/v1/tenants/{tenant_id}/{action}/", body, content_type="application/json")
        assert answer.status_code == expected, (action, tenant_id, body, answer.content)
        assert answer["Content-Type"] == "application/json" and "error" in answer.json()
    answer = client.post(f"/api/v1/tenants/{tenant.pk}/recover/", "{not json", content_type="application/json")
    assert answer.status_code == 400 and "error" in answer.json()
    assert Client().post(f"/api/v1/tenants/{tenant.pk}/recover/", {}, content_type="application/json").status_code in (
        401,
        403,
    )
    after = (
        Job.objects.count(),
        TenantMove.objects.count(),
        AuditEvent.objects.filter(action__startswith="tenant.").count(),
    )
    assert after == before
    tenant.refresh_from_db()
    assert tenant.server_id == server.pk and tenant.status == TenantStatus.ACTIVE
    assert timezone.now() - timedelta(minutes=5) < tenant.created_at
