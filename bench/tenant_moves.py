"""Benchmark 6: a tenant outlives its server. One build-tier tenant against the sandbox,
in one run: provisioned fresh (the pool empty, so on a server bought at Hetzner), backed
up now, recovered after its Hetzner server was deleted, then migrated to a Netcup
contract server. Wall time of the recovery and of the migration next to the fresh
provisioning of the same tenant, and the migration's downtime (maintenance start to the
first heartbeat from the target), with the Hub under gunicorn and one threads worker."""

from __future__ import annotations

import time
from typing import Any

import requests

from bench.common import (
    VAR,
    Process,
    Result,
    bench_env,
    free_port,
    fresh_database,
    start_gunicorn,
    start_worker,
    wait_for,
)
from bench.provisioning import FAST, ZONE

RECOVERY_GOAL = 1.5
DOWNTIME_GOAL = 60.0
TOOLS = ["nextcloud", "ghost"]
# The slowest steps of each run, for the notes.
STEPS: dict[str, str] = {}
JOB_ENDS = ("SUCCEEDED", "ROLLED_BACK", "FAILED", "CANCELLED")


def _wait_job(job_id: int, timeout: float) -> Any:
    from hub.pipeline.models import Job

    job = wait_for(
        lambda: Job.objects.filter(pk=job_id, status__in=JOB_ENDS).first(),
        timeout=timeout,
        interval=0.1,
        message=f"job {job_id} to end",
    )
    if job.status != "SUCCEEDED":
        steps = [(s.name, s.status, s.error[-200:]) for s in job.steps.exclude(status="SUCCEEDED")]
        raise RuntimeError(f"{job.pipeline} job {job.pk} ended {job.status}: {job.error} {steps}")
    return job


def _slowest_steps(job_id: int, count: int = 6) -> str:
    from hub.pipeline.models import Step

    steps = [
        (s.name, (s.finished_at - s.started_at).total_seconds())
        for s in Step.objects.filter(job_id=job_id, started_at__isnull=False, finished_at__isnull=False)
        if s.started_at and s.finished_at
    ]
    steps.sort(key=lambda item: -item[1])
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps[:count])


def _provision(timeout: float) -> tuple[int, float]:
    from provisioning.models import Order
    from provisioning.services.orders import order_create
    from sandbox.releases import seed_releases

    seed_releases(actor="bench")
    started = time.monotonic()
    order = order_create(
        plan="build", region="eu", domain=f"moving.{ZONE}", tools=TOOLS, customer_email=f"owner@moving.{ZONE}"
    )
    done = wait_for(
        lambda: Order.objects.filter(pk=order.pk, status__in=("FULFILLED", "ROLLED_BACK", "FAILED")).first(),
        timeout=timeout,
        interval=0.1,
        message="the order to end",
    )
    if done.status != "FULFILLED":
        raise RuntimeError(f"order {order.pk} {done.status}: {done.failure_reason}")
    assert done.tenant_id is not None and done.job_id is not None
    STEPS["fresh"] = _slowest_steps(done.job_id)
    return done.tenant_id, time.monotonic() - started


def _delete_at_hetzner(box: Any, provider_id: str) -> None:
    env = box.env
    requests.delete(
        f"{env['HCLOUD_API_ENDPOINT']}/servers/{provider_id}",
        headers={"Authorization": f"Bearer {env['HCLOUD_TOKEN']}"},
        timeout=10,
    ).raise_for_status()


def _moves(box: Any, timeout: float) -> dict[str, float]:
    from provisioning.models import Server, ServerProvider, ServerStatus, TenantMove
    from provisioning.services.moves import backup_now_start, tenant_migrate_start, tenant_recover_start
    from tenants.models import Tenant

    tenant_id, fresh = _provision(timeout)
    started = time.monotonic()
    _wait_job(backup_now_start(tenant_id=tenant_id, actor="bench").pk, timeout)
    backup = time.monotonic() - started

    lost = Tenant.objects.select_related("server").get(pk=tenant_id).server
    assert lost is not None
    _delete_at_hetzner(box, lost.provider_id)
    started = time.monotonic()
    move = tenant_recover_start(tenant_id=tenant_id, actor="bench", reason="bench: server deleted")
    assert move.job_id is not None
    _wait_job(move.job_id, timeout)
    recovery = time.monotonic() - started
    STEPS["recovery"] = _slowest_steps(move.job_id)

    host = box.hosts[0]
    Server.objects.create(
        provider=ServerProvider.NETCUP,
        region="eu",
        tier="build",
        ipv4=host.addr,
        ssh_port=host.port,
        status=ServerStatus.AVAILABLE,
        name=f"netcup-{host.addr}",
    )
    started = time.monotonic()
    move = tenant_migrate_start(tenant_id=tenant_id, actor="bench", provider=ServerProvider.NETCUP)
    assert move.job_id is not None
    _wait_job(move.job_id, timeout)
    migration = time.monotonic() - started
    STEPS["migration"] = _slowest_steps(move.job_id)
    move = TenantMove.objects.get(pk=move.pk)
    return {
        "fresh": fresh,
        "backup": backup,
        "recovery": recovery,
        "migration": migration,
        "downtime": move.downtime_seconds if move.downtime_seconds is not None else float("nan"),
    }


def run(quick: bool) -> Result:
    from django.test import override_settings

    from sandbox.control import Sandbox

    timeout = 300 if quick else 900
    result = Result("tenant moves: recovery and migration of one build-tier tenant vs its fresh provisioning")
    box = Sandbox(
        state_dir=VAR / "sandbox-moves",
        hosts_count=1,
        ssh_port=free_port(),
        hetzner_port=free_port(),
        cloudflare_port=free_port(),
        action_seconds=0.2,
        exit_with_parent=True,
    ).up(timeout=120)
    web: Process | None = None
    worker: Process | None = None
    try:
        port = free_port()
        env = bench_env(
            **box.env,
            **{**FAST, "AGENT_HEARTBEAT_INTERVAL": "2"},
            HUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=str(VAR / "mail"),
        )
        typed: dict[str, Any] = {k: v for k, v in box.env.items() if k not in ("HCLOUD_SSH_PORT", "BACKUP_TARGET_PORT")}
        typed.update(
            HCLOUD_SSH_PORT=int(box.env["HCLOUD_SSH_PORT"]), BACKUP_TARGET_PORT=int(box.env["BACKUP_TARGET_PORT"])
        )
        with fresh_database(), override_settings(**typed, HUB_PUBLIC_URL=env["HUB_PUBLIC_URL"]):
            web = start_gunicorn("moves-web", port=port, workers=1, threads=8, env=env)
            worker = start_worker("moves", queues="provisioning,default", pool="threads", concurrency=8, env=env)
            times = _moves(box, timeout)
    finally:
        if worker is not None:
            worker.stop()
        if web is not None:
            web.stop()
        box.down()
    recovery_factor = times["recovery"] / times["fresh"]
    result.add("fresh provisioning (Hetzner, pool empty)", f"{times['fresh']:.1f} s", "")
    result.add("backup now (run and reported)", f"{times['backup']:.1f} s", "")
    result.add("recovery (server deleted -> new Hetzner server)", f"{times['recovery']:.1f} s", "")
    result.add(
        "  / fresh provisioning",
        f"{recovery_factor:.2f}x",
        f"<= {RECOVERY_GOAL}x",
        recovery_factor <= RECOVERY_GOAL,
    )
    result.add("migration (Hetzner -> Netcup)", f"{times['migration']:.1f} s", "")
    result.add("  / fresh provisioning", f"{times['migration'] / times['fresh']:.2f}x", "")
    result.add(
        "  downtime (maintenance -> first heartbeat from the target)",
        f"{times['downtime']:.1f} s",
        f"< {DOWNTIME_GOAL:.0f} s",
        times["downtime"] < DOWNTIME_GOAL,
    )
    result.ratio = (
        f"recovery / fresh = {recovery_factor:.2f}x, migration / fresh = {times['migration'] / times['fresh']:.2f}x"
    )
    result.notes.append(
        f"tools {', '.join(TOOLS)}; no added waits in the stand-ins; agent heartbeat every 2 s; "
        "the Hub web, the worker, the sshd hosts and restic all share the same 2 cores"
    )
    result.notes.extend(f"slowest steps, {what}: {steps}" for what, steps in STEPS.items())
    if quick:
        result.notes.append("quick mode: same run, shorter timeouts")
    return result
