"""The steps of a tenant's move to another server: recovery (its server is lost) and
migration (from a living server). Both take a target of the tenant's region and tier,
set it up with the provisioning scripts, hand it a second agent, restore the tenant's
latest backup from its off-site repository, then switch DNS and the agent keys to the
target in one step, and only then release the source.

Until the switch the tenant stays where it was: every step before it is undone in
reverse (the target returned to the pool, quarantined or deleted at Hetzner; the
second agent's key revoked; a migrated tenant out of maintenance again). After the
switch there is nothing to undo: the compensations see `switched_at` and leave the
tenant on the target. Each step is idempotent and finds its work again through the
TenantMove row (the server it took, the keys that worked before)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub.pipeline.context import StepContext
from hub.pipeline.services import job_start
from hub.pipeline.spec import PermanentStepError, StepDeferred
from provisioning.integrations import cloudflare, hetzner
from provisioning.models import MoveKind, Order, Server, ServerProvider, ServerStatus, TenantMove
from provisioning.pipeline_names import PREPARE_SERVER
from provisioning.pipelines.order import agent_bundle_b64, hetzner_server_row, server_answering, tools_env
from provisioning.providers import backend_for
from provisioning.services import dns, remote, stacks
from provisioning.services.backups import backup_script_env
from provisioning.services.pool import server_set_status, server_take_available
from provisioning.services.releases import releases_resolve
from tenants.models import AgentCredential, Command, CommandStatus, Tenant, TenantStatus
from tenants.services import heartbeat_flush, registration_token_issue
from tenants.services.agents import agent_key_revoke
from tenants.services.lifecycle import (
    tenant_maintenance_enter,
    tenant_maintenance_leave,
    tenant_server_switch,
)

ACTOR = "provisioning"
STATUS_MARK = "HUB-BACKUP-STATUS "


def _move(ctx: StepContext) -> TenantMove:
    return TenantMove.objects.select_related("tenant", "source_server", "target_server").get(job_id=ctx.job_id)


def _target(move: TenantMove) -> Server:
    if move.target_server is None:
        raise PermanentStepError(f"move {move.pk} has no target server")
    return move.target_server


def _order(move: TenantMove) -> Order | None:
    """The order the tenant was born from: its tools, its setup's settings."""
    return Order.objects.filter(tenant_id=move.tenant_id).order_by("-id").first()


def _tools(move: TenantMove) -> list[str]:
    order = _order(move)
    return list(order.tools) if order else []


def _switched(ctx: StepContext, move: TenantMove) -> bool:
    if move.switched_at is not None:
        ctx.log(
            f"the tenant switched to server {move.target_server_id} at {move.switched_at:%H:%M:%S}: nothing to undo"
        )
        return True
    return False


def script_env(move: TenantMove) -> dict[str, str]:
    order = _order(move)
    return {
        "HUB_DOMAIN": move.tenant.domain,
        "HUB_ADMIN_EMAIL": settings.HUB_ADMIN_EMAIL,
        "HUB_URL": settings.HUB_PUBLIC_URL,
        "HUB_ORDER_ID": str(order.pk) if order else "",
    }


# --- 0. what it installs -------------------------------------------------------------


def pin_releases(ctx: StepContext) -> dict[str, Any]:
    """The releases the target gets for what the restore does not bring back (the AI
    stack, the tools' compose files): the current ones, pinned once for every retry."""
    if ctx.context.get("releases"):
        return {}
    move = _move(ctx)
    pins, missing = releases_resolve(_tools(move))
    if missing:
        raise PermanentStepError(f"no release of {', '.join(missing)}: mark a default release in the admin")
    return {"releases": {name: pin.as_json() for name, pin in pins.items()}}


def _pins(ctx: StepContext) -> dict[str, stacks.Pin]:
    return stacks.pins_from_json(ctx.context.get("releases") or {})


# --- 1. the target ------------------------------------------------------------------


def _server_labels(move: TenantMove) -> dict[str, str]:
    return {"move": str(move.pk)}


def take_server(ctx: StepContext) -> dict[str, Any]:
    """The server staff named, else a pool server of the tenant's region and tier (of
    the provider asked for, if any), else one bought at Hetzner (not for a migration
    to Netcup: contract servers come from staff)."""
    with transaction.atomic():
        move = TenantMove.objects.select_for_update(of=("self",)).select_related("tenant").get(job_id=ctx.job_id)
        if move.target_server_id:
            ctx.log(f"server {move.target_server_id} already taken")
            return {"target_server_id": move.target_server_id}
        tenant = move.tenant
        server: Server | None
        if move.wanted_server_id:
            server = Server.objects.select_for_update().get(pk=move.wanted_server_id)
            if server.status != ServerStatus.AVAILABLE:
                raise PermanentStepError(f"server {server.pk} is {server.status}, not AVAILABLE")
            server_set_status(server, ServerStatus.ALLOCATED, actor=ACTOR, reason=f"target of move {move.pk}")
        else:
            server = server_take_available(
                region=tenant.region, tier=tenant.plan, provider=move.wanted_provider or None
            )
        if server is not None:
            move.target_server = server
            move.save(update_fields=["target_server"])
            ctx.log(f"took {server.provider} server {server.pk} ({server.ipv4}:{server.ssh_port})")
            return {"target_server_id": server.pk}
        if move.wanted_provider and move.wanted_provider != ServerProvider.HETZNER:
            raise PermanentStepError(f"no AVAILABLE {move.wanted_provider} server in {tenant.region}/{tenant.plan}")
    ctx.log(f"pool empty for {tenant.region}/{tenant.plan}; buying on Hetzner Cloud")
    bought = backend_for(ServerProvider.HETZNER).allocate(
        name=f"hub-move-{move.pk}",
        tier=tenant.plan,
        region=tenant.region,
        labels=_server_labels(move),
        ssh_public_key=remote.hub_public_key(),
    )
    ctx.log(f"hetzner server {bought.provider_id} ({bought.ipv4})")
    with transaction.atomic():
        move = TenantMove.objects.select_for_update().get(pk=move.pk)
        server = hetzner_server_row(bought, region=tenant.region, tier=tenant.plan)
        move.target_server = server
        move.save(update_fields=["target_server"])
    return {"target_server_id": server.pk, "target_bought": True}


def _bought_for(move: TenantMove, server: Server) -> bool:
    return server.provider == ServerProvider.HETZNER and server.labels.get("move") == str(move.pk)


def release_target(ctx: StepContext) -> None:
    """Undo the take: a server bought for the move is deleted at Hetzner; a pool server
    a script touched is quarantined for staff; an untouched one goes back."""
    move = _move(ctx)
    if _switched(ctx, move):
        return
    server = move.target_server
    if server is None:
        for leftover in hetzner.servers_with_labels(
            {**_server_labels(move), hetzner.MANAGED_LABEL[0]: hetzner.MANAGED_LABEL[1]}
        ):
            hetzner.server_delete(provider_id=leftover.provider_id)
            ctx.log(f"deleted hetzner server {leftover.provider_id} bought by an attempt that recorded nothing")
        return
    if _bought_for(move, server):
        backend_for(server.provider).deallocate(server)
        ctx.log(f"deleted hetzner server {server.provider_id}")
        new_status = ServerStatus.DELETED
    elif server.touched:
        new_status = ServerStatus.QUARANTINED
        ctx.log(f"server {server.pk} was set up for the move: quarantined for a check")
    else:
        new_status = ServerStatus.AVAILABLE
        ctx.log(f"server {server.pk} untouched: back to the pool")
    with transaction.atomic():
        locked = Server.objects.select_for_update().get(pk=server.pk)
        if locked.status == ServerStatus.ALLOCATED:
            server_set_status(locked, new_status, actor=ACTOR, reason=f"move {move.pk} rolled back")
        TenantMove.objects.filter(pk=move.pk).update(target_server=None)


def wait_server_ready(ctx: StepContext) -> dict[str, Any]:
    move = _move(ctx)
    server = _target(move)
    started = server_answering(ctx, server)
    ctx.log(f"{server.ipv4}:{server.ssh_port} answers SSH")
    return {"ssh_wait_started": started}


# --- 2. setup over SSH --------------------------------------------------------------


def run_setup_script(name: str):
    def action(ctx: StepContext) -> None:
        move = _move(ctx)
        server = _target(move)
        env = script_env(move)
        if name == "09-tools":
            order = _order(move)
            if order is not None:
                env.update(tools_env(order, _pins(ctx)))
        if name == "07-backups":
            env.update(backup_script_env(tenant_id=move.tenant_id, log=ctx.log))
        Server.objects.filter(pk=server.pk, touched=False).update(touched=True)
        ctx.log(f"running {name} on {server.ipv4}:{server.ssh_port}")
        remote.run_on_server(server, name=name, script=remote.step_script(name), env=env, log=ctx.log)

    action.__name__ = f"run_{name}"
    return action


# --- 3. maintenance and the final backup (a migration) -------------------------------


def _command_tag(move: TenantMove) -> str:
    return f"move-{move.pk}"


def _wait_command(ctx: StepContext, command_id: str, *, what: str) -> None:
    command = Command.objects.get(pk=command_id)
    if command.status == CommandStatus.SUCCEEDED:
        ctx.log(f"the agent {what}: {(command.result or {}).get('output', '')}")
        return
    if command.status in (CommandStatus.FAILED, CommandStatus.EXPIRED):
        raise PermanentStepError(f"the agent did not {what}: {command.status} {(command.result or {}).get('output')}")
    waited = (timezone.now() - command.created_at).total_seconds()
    if waited > settings.MOVE_COMMAND_WAIT_SECONDS:
        raise PermanentStepError(f"the agent did not answer within {settings.MOVE_COMMAND_WAIT_SECONDS}s ({what})")
    raise StepDeferred(f"waiting for the agent to {what} ({waited:.0f}s so far)", delay=0.25)


def enter_maintenance(ctx: StepContext) -> dict[str, Any]:
    """The tenant in MAINTENANCE: its agent stops every tool container but the
    databases, so nothing is written after the final backup."""
    move = _move(ctx)
    command_id = tenant_maintenance_enter(
        tenant_id=move.tenant_id, actor=ACTOR, reason=f"migrating (move {move.pk})", tag=_command_tag(move)
    )
    if move.maintenance_started_at is None:
        TenantMove.objects.filter(pk=move.pk, maintenance_started_at=None).update(maintenance_started_at=timezone.now())
    _wait_command(ctx, command_id, what="enter maintenance")
    return {"maintenance_command": command_id}


def leave_maintenance(ctx: StepContext) -> None:
    """Undo: the source serves again as it was (its agent starts what it stopped)."""
    move = _move(ctx)
    if _switched(ctx, move):
        return
    tenant = Tenant.objects.get(pk=move.tenant_id)
    if tenant.status != TenantStatus.MAINTENANCE:
        ctx.log(f"tenant is {tenant.status}: not in maintenance")
        return
    command_id = tenant_maintenance_leave(
        tenant_id=move.tenant_id, actor=ACTOR, reason=f"move {move.pk} rolled back", tag=_command_tag(move)
    )
    ctx.log(f"tenant ACTIVE again on server {move.source_server_id}; agent told to start its tools ({command_id})")


def backup_status(server: Server, *, log: Any) -> dict[str, Any]:
    """Run the server's backup now and read the backup-status.json it wrote."""
    script = (
        "set -uo pipefail\n"
        'ROOT="${HOST_ROOT:-}"\n'
        'code=0\n"$ROOT/opt/hub/bin/backup" || code=$?\n'
        'echo "backup exited $code"\n'
        f"printf '{STATUS_MARK}%s\\n' \"$(tr -d '\\n' < \"$ROOT/var/backups/hub/backup-status.json\")\"\n"
    )
    lines = remote.run_on_server(server, name="backup-now", script=script, env={}, log=log)
    for line in reversed(lines):
        text = line.strip()
        if text.startswith(STATUS_MARK):
            try:
                status = json.loads(text[len(STATUS_MARK) :])
            except ValueError as exc:
                raise PermanentStepError(f"backup-status.json is not JSON: {exc}") from exc
            if isinstance(status, dict):
                return status
    raise PermanentStepError("the backup wrote no backup-status.json")


def backup_failure(status: dict[str, Any]) -> str:
    """Why the run is no good backup ('' when it is)."""
    remote_sync = status.get("remote_sync") or {}
    if remote_sync.get("status") != "success":
        return f"the off-site upload {remote_sync.get('status')}: {remote_sync.get('error', '')}"
    failed = {
        name: d.get("error", "") for name, d in (status.get("databases") or {}).items() if d.get("status") != "success"
    }
    if failed:
        return "databases failed: " + ", ".join(f"{name} ({error})" for name, error in failed.items())
    return ""


def final_backup(ctx: StepContext) -> dict[str, Any]:
    """The source's last backup, taken in maintenance: what the target restores."""
    move = _move(ctx)
    status = backup_status(move.source_server, log=ctx.log)
    failure = backup_failure(status)
    if failure:
        raise PermanentStepError(f"the final backup failed: {failure}")
    ctx.log(
        f"final backup {status.get('last_run')} uploaded ({(status.get('remote_sync') or {}).get('uploaded_mb')} MB)"
    )
    return {"final_backup_at": status.get("last_run")}


# --- 4. a second agent on the target ------------------------------------------------


def agent_handover(ctx: StepContext) -> dict[str, Any]:
    """The target's agent registers with a token that leaves the source's keys working
    until the switch (a migrated tenant's agent answers its commands until then)."""
    move = _move(ctx)
    server = _target(move)
    with transaction.atomic():
        locked = TenantMove.objects.select_for_update().get(pk=move.pk)
        if locked.source_credential_ids is None:
            locked.source_credential_ids = list(
                AgentCredential.objects.filter(tenant_id=move.tenant_id, revoked_at=None).values_list("pk", flat=True)
            )
            locked.save(update_fields=["source_credential_ids"])
        _, token = registration_token_issue(
            tenant_id=move.tenant_id,
            actor=ACTOR,
            ttl_seconds=settings.PROVISIONING_REGISTRATION_TOKEN_TTL,
            keeps_other_keys=True,
        )
    try:
        ai_compose = stacks.ai_compose(pins=_pins(ctx))
    except stacks.StackInvalid as exc:
        raise PermanentStepError(str(exc)) from exc
    env = {
        **script_env(move),
        "HUB_REGISTRATION_TOKEN": token,
        "HUB_AGENT_BUNDLE_B64": agent_bundle_b64(),
        "HUB_AI_COMPOSE_B64": stacks.b64(ai_compose),
        "HUB_HEARTBEAT_INTERVAL": str(settings.AGENT_HEARTBEAT_INTERVAL),
    }
    Server.objects.filter(pk=server.pk, touched=False).update(touched=True)
    remote.run_on_server(server, name="10-agent", script=remote.step_script("10-agent"), env=env, log=ctx.log)
    return {"agent_wait_started": time.time()}


def _target_credentials(move: TenantMove) -> Any:
    return AgentCredential.objects.filter(tenant_id=move.tenant_id, revoked_at=None).exclude(
        pk__in=move.source_credential_ids or []
    )


def revoke_target_agent(ctx: StepContext) -> None:
    """Undo the handover: the target's key and any unused token end; the source's
    keys, untouched, keep working."""
    move = _move(ctx)
    if _switched(ctx, move) or move.source_credential_ids is None:
        return
    from tenants.models import RegistrationToken

    now = timezone.now()
    RegistrationToken.objects.filter(
        tenant_id=move.tenant_id, used_at=None, expires_at__gt=now, keeps_other_keys=True
    ).update(expires_at=now)
    for credential_id in _target_credentials(move).values_list("pk", flat=True):
        agent_key_revoke(
            tenant_id=move.tenant_id, actor=ACTOR, reason=f"move {move.pk} rolled back", credential_id=credential_id
        )
    ctx.log("the target's agent key revoked; the source's keys still work")


def wait_agent_registered(ctx: StepContext) -> dict[str, Any]:
    move = _move(ctx)
    credential = _target_credentials(move).order_by("-id").first()
    if credential is not None:
        ctx.log(f"the target's agent registered (key {credential.key_prefix}…)")
        return {"target_credential_id": credential.pk}
    waited = time.time() - float(ctx.context.get("agent_wait_started") or time.time())
    if waited > settings.PROVISIONING_AGENT_WAIT_SECONDS:
        raise PermanentStepError(f"the agent did not register within {settings.PROVISIONING_AGENT_WAIT_SECONDS}s")
    raise StepDeferred(f"waiting for the target's agent to register ({waited:.0f}s so far)", delay=0.25)


# --- 5. the data --------------------------------------------------------------------


def restore(ctx: StepContext) -> dict[str, Any]:
    """The latest snapshot of the tenant's off-site repository onto the target: every
    tool's stack files, volumes and databases (the server's `restore`, 07-backups)."""
    move = _move(ctx)
    server = _target(move)
    lines = remote.run_on_server(
        server,
        name="restore",
        script='set -euo pipefail\n"${HOST_ROOT:-}/opt/hub/bin/restore"\n',
        env={},
        log=ctx.log,
    )
    restored = [line.split(":", 1)[0] for line in lines if line.strip().endswith(": restored")]
    return {"restored_tools": restored}


# --- 6. the switch ------------------------------------------------------------------


def _point_dns(ctx: StepContext, move: TenantMove, ipv4: str) -> list[str]:
    domain = move.tenant.domain
    zone = cloudflare.zone_for_domain(domain, fresh=True)
    if zone is None:
        raise PermanentStepError(f"{domain} is in no zone of the account")
    names = dns.record_names(domain=domain, tools=_tools(move), wildcard=dns.wildcard_allowed(zone.name))
    dns.a_records_point(zone=zone, domain=domain, names=names, ipv4=ipv4, log=ctx.log)
    return names


def switch(ctx: StepContext) -> dict[str, Any]:
    """DNS to the target, read back; then, in one transaction, the tenant on the target
    server, the source's agent keys revoked (only the target's agent is the tenant's
    now) and a migrated tenant out of maintenance."""
    move = _move(ctx)
    server = _target(move)
    if move.switched_at is None:
        _point_dns(ctx, move, server.ipv4)
    with transaction.atomic():
        locked = TenantMove.objects.select_for_update().get(pk=move.pk)
        if locked.switched_at is None:
            tenant_server_switch(
                tenant_id=move.tenant_id, server_id=server.pk, actor=ACTOR, reason=f"{move.kind.lower()} {move.pk}"
            )
            for credential_id in locked.source_credential_ids or []:
                agent_key_revoke(
                    tenant_id=move.tenant_id,
                    actor=ACTOR,
                    reason=f"the tenant moved to server {server.pk}",
                    credential_id=credential_id,
                )
            if Tenant.objects.get(pk=move.tenant_id).status == TenantStatus.MAINTENANCE:
                tenant_maintenance_leave(
                    tenant_id=move.tenant_id,
                    actor=ACTOR,
                    reason=f"serving from server {server.pk}",
                    tag=_command_tag(move),
                    tell_agent=False,
                )
            locked.switched_at = timezone.now()
            locked.save(update_fields=["switched_at"])
    return {"switched_at": locked.switched_at.isoformat() if locked.switched_at else None}


def point_dns_back(ctx: StepContext) -> None:
    """Undo a switch that failed half way: the records point at the source again."""
    move = _move(ctx)
    if _switched(ctx, move):
        return
    _point_dns(ctx, move, move.source_server.ipv4)


def wait_target_heartbeat(ctx: StepContext) -> dict[str, Any]:
    """The tenant answers from the target: a heartbeat received after the switch (the
    source's keys no longer work, so it can only be the target's agent)."""
    move = _move(ctx)
    if move.target_heartbeat_at is None:
        heartbeat_flush()
        tenant = Tenant.objects.get(pk=move.tenant_id)
        assert move.switched_at is not None  # the switch, before this step, set it
        if tenant.last_heartbeat_at is None or tenant.last_heartbeat_at <= move.switched_at:
            waited = (timezone.now() - move.switched_at).total_seconds()
            if waited > settings.MOVE_HEARTBEAT_WAIT_SECONDS:
                raise PermanentStepError(f"no heartbeat from the target within {settings.MOVE_HEARTBEAT_WAIT_SECONDS}s")
            raise StepDeferred(f"waiting for a heartbeat from the target ({waited:.0f}s so far)", delay=0.25)
        downtime = (
            (tenant.last_heartbeat_at - move.maintenance_started_at).total_seconds()
            if move.maintenance_started_at
            else None
        )
        TenantMove.objects.filter(pk=move.pk).update(
            target_heartbeat_at=tenant.last_heartbeat_at, downtime_seconds=downtime
        )
        move.refresh_from_db()
    ctx.log(
        f"heartbeat from the target at {move.target_heartbeat_at:%H:%M:%S}"
        + (f"; downtime {move.downtime_seconds:.1f}s" if move.downtime_seconds is not None else "")
    )
    return {"downtime_seconds": move.downtime_seconds}


# --- 7. the source ------------------------------------------------------------------


def release_source(ctx: StepContext) -> dict[str, Any]:
    """Hetzner: deleted. Netcup: a lost one QUARANTINED for staff to look at; one a
    migration left is wiped and prepared again for the pool."""
    move = _move(ctx)
    source = move.source_server
    with transaction.atomic():
        locked = Server.objects.select_for_update().get(pk=source.pk)
        if locked.status not in (ServerStatus.ALLOCATED, ServerStatus.RELEASING):
            ctx.log(f"server {locked.pk} already {locked.status}")
            return {"source_status": locked.status}
        if locked.provider == ServerProvider.HETZNER:
            gone = backend_for(locked.provider).deallocate(locked)
            ctx.log(f"hetzner server {locked.provider_id} {'deleted' if gone else 'was already gone'}")
            server_set_status(locked, ServerStatus.DELETED, actor=ACTOR, reason=f"tenant {move.tenant_id} moved")
            return {"source_status": locked.status}
        if move.kind == MoveKind.RECOVER:
            server_set_status(
                locked, ServerStatus.QUARANTINED, actor=ACTOR, reason=f"lost; tenant {move.tenant_id} recovered"
            )
            ctx.log(f"server {locked.pk} quarantined for staff")
            return {"source_status": locked.status}
        if locked.status == ServerStatus.ALLOCATED:
            server_set_status(locked, ServerStatus.RELEASING, actor=ACTOR, reason=f"wiping after move {move.pk}")
    remote.run_on_server(
        source,
        name="90-wipe",
        script=remote.step_script("90-wipe"),
        env={"HUB_DOMAIN": move.tenant.domain},
        log=ctx.log,
    )
    with transaction.atomic():
        locked = Server.objects.select_for_update().get(pk=source.pk)
        server_set_status(locked, ServerStatus.PREPARING, actor=ACTOR, reason=f"wiped after move {move.pk}")
        locked.touched = False
        locked.save(update_fields=["touched"])
        job = job_start(
            pipeline=PREPARE_SERVER,
            subject_type="server",
            subject_id=locked.pk,
            idempotency_key=f"prepare:server:{locked.pk}:after-move:{move.pk}",
        )
    ctx.log(f"server {locked.pk} wiped: preparing it again for the pool (job {job.pk})")
    return {"source_status": ServerStatus.PREPARING}


def finish(ctx: StepContext) -> dict[str, Any]:
    move = _move(ctx)
    TenantMove.objects.filter(pk=move.pk, finished_at=None).update(finished_at=timezone.now())
    ctx.log(f"tenant {move.tenant_id} lives on server {move.target_server_id}")
    return {"tenant_server_id": move.target_server_id}
