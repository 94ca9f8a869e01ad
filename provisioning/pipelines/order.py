"""The actions and compensations of the provisioning pipeline. Each one is idempotent:
it may run again after a worker died half-way, and then finds its work done."""

from __future__ import annotations

import base64
import io
import tarfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hub.alerts.services import alert_raise
from hub.models import Alert, AlertSeverity, AlertStatus
from hub.pipeline.context import StepContext
from hub.pipeline.models import JobStatus
from hub.pipeline.spec import PermanentStepError, StepDeferred
from hub.queue import enqueue_on_commit
from provisioning.integrations import hetzner
from provisioning.models import Order, OrderMode, OrderStatus, Server, ServerProvider, ServerStatus
from provisioning.providers import Allocation, backend_for
from provisioning.services import remote, stacks
from provisioning.services.backups import backup_script_env
from provisioning.services.orders import order_set_status
from provisioning.services.pool import server_set_status, server_take_available
from provisioning.services.releases import releases_resolve
from provisioning.services.welcome import SEND_WELCOME
from tenants.models import Tenant
from tenants.services import registration_token_issue, tenant_create
from tenants.services.lifecycle import agent_access_revoke, tenant_activate


def _order(ctx: StepContext) -> Order:
    return Order.objects.select_related("server", "tenant").get(pk=int(ctx.subject_id))


def _server(order: Order) -> Server:
    if order.server is None:
        raise PermanentStepError(f"order {order.pk} has no server")
    return order.server


# --- 0. what it installs -------------------------------------------------------------


def pin_releases(ctx: StepContext) -> dict[str, Any]:
    """The release of every component the order installs (its tools, their databases,
    the AI stack), pinned in the job before any server is taken: every later step, and
    a retry, installs the same digests. A component without a release stops the order
    here, with staff alerted: a guessed tag is never installed."""
    if ctx.context.get("releases"):
        ctx.log("releases already pinned for this order")
        return {}
    order = _order(ctx)
    pins, missing = releases_resolve(list(order.tools))
    if missing:
        for component in missing:
            alert_raise(
                subject_type="component",
                subject_id=component,
                kind="release_missing",
                severity=AlertSeverity.MEDIUM,
                message=(
                    f"no release of {component}: order {order.pk} ({order.domain}) cannot be provisioned. "
                    "Mark a release of it as the default (admin: Rollouts > Releases) or complete a rollout."
                ),
            )
        raise PermanentStepError(
            f"no release of {', '.join(missing)}: neither a completed rollout nor a default release "
            "(staff mark one in the admin: Rollouts > Releases)"
        )
    for pin in pins.values():
        ctx.log(f"{pin.component} {pin.version}: {pin.image}")
    return {"releases": {name: pin.as_json() for name, pin in pins.items()}}


def _pins(ctx: StepContext) -> dict[str, stacks.Pin]:
    pinned = ctx.context.get("releases")
    if not pinned:
        raise PermanentStepError("the order's releases were never pinned (the job has no pin_releases step)")
    return stacks.pins_from_json(pinned)


# --- 1. a server --------------------------------------------------------------------


def allocate_server(ctx: StepContext) -> dict[str, Any]:
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=int(ctx.subject_id))
        order_set_status(order, OrderStatus.AWAITING_SERVER)
        if order.server_id:
            ctx.log(f"server {order.server_id} already allocated")
            return {"server_id": order.server_id}
        server = server_take_available(region=order.region, tier=order.plan)
        if server is not None:
            order.server = server
            order.save(update_fields=["server", "updated_at"])
            ctx.log(f"took pool server {server.pk} ({server.ipv4}:{server.ssh_port})")
            return {"server_id": server.pk, "server_from_pool": True}
        mode = order.mode
    if mode == OrderMode.MANUAL:
        ctx.log("pool empty; MANUAL order waits for staff to assign a server")
        raise StepDeferred("waiting for staff to assign a server", delay=settings.PROVISIONING_MANUAL_POLL_SECONDS)
    return _buy_server(ctx, order)


def _buy_server(ctx: StepContext, order: Order) -> dict[str, Any]:
    ctx.log(f"pool empty for {order.region}/{order.plan}; buying on Hetzner Cloud")
    bought = backend_for(ServerProvider.HETZNER).allocate(
        name=f"hub-order-{order.pk}",
        tier=order.plan,
        region=order.region,
        labels={"order": str(order.pk)},
        ssh_public_key=remote.hub_public_key(),
    )
    ctx.log(f"hetzner server {bought.provider_id} ({bought.ipv4})")
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        server = hetzner_server_row(bought, region=order.region, tier=order.plan, bought_for_order=order)
        order.server = server
        order.save(update_fields=["server", "updated_at"])
    return {"server_id": server.pk, "server_from_pool": False}


def release_server(ctx: StepContext) -> None:
    """Undo the allocation: a server bought for this order is deleted at Hetzner; a
    pool server that a script touched is quarantined, an untouched one goes back."""
    order = _order(ctx)
    if order.server is None:
        bought = hetzner.servers_with_labels(
            {"order": str(order.pk), hetzner.MANAGED_LABEL[0]: hetzner.MANAGED_LABEL[1]}
        )
        for leftover in bought:
            hetzner.server_delete(provider_id=leftover.provider_id)
            ctx.log(f"deleted hetzner server {leftover.provider_id} bought by an attempt that recorded nothing")
        return
    server = order.server
    if server.bought_for_order_id == order.pk:
        backend_for(server.provider).deallocate(server)
        ctx.log(f"deleted hetzner server {server.provider_id}")
        new_status = ServerStatus.DELETED
    elif server.touched or _untrusted(server):
        new_status = ServerStatus.QUARANTINED
        ctx.log(f"pool server {server.pk} was touched or failed verification: quarantined for a check")
    else:
        new_status = ServerStatus.AVAILABLE
        ctx.log(f"pool server {server.pk} untouched: back to the pool")
    with transaction.atomic():
        locked = Server.objects.select_for_update().get(pk=server.pk)
        server_set_status(locked, new_status, reason=f"order {order.pk} rolled back")
        Order.objects.filter(pk=order.pk).update(server=None, updated_at=timezone.now())


def _untrusted(server: Server) -> bool:
    return Alert.objects.filter(
        subject_type="server", subject_id=str(server.pk), kind="ssh_host_key_mismatch", status=AlertStatus.OPEN
    ).exists()


def hetzner_server_row(bought: Allocation, *, region: str, tier: str, **extra: Any) -> Server:
    """The Hub's row for a server just bought at Hetzner, ALLOCATED; the same row when a
    retried step bought the same server again (the label finds it)."""
    server, _ = Server.objects.get_or_create(
        provider=ServerProvider.HETZNER,
        provider_id=bought.provider_id,
        defaults={
            "region": region,
            "tier": tier,
            "ipv4": bought.ipv4 or "0.0.0.0",
            "ssh_port": settings.HCLOUD_SSH_PORT,
            "name": bought.name,
            "labels": bought.labels,
            "status": ServerStatus.ALLOCATED,
            **extra,
        },
    )
    return server


def server_answering(ctx: StepContext, server: Server) -> float:
    """Wait (deferring the step) until the server runs and answers SSH, within
    PROVISIONING_SSH_WAIT_SECONDS of the first try; returns when that first try was."""
    if server.provider == ServerProvider.HETZNER and server.provider_id:
        ready = hetzner.server_wait_ready(provider_id=server.provider_id)
        if ready.ipv4 and ready.ipv4 != server.ipv4:
            Server.objects.filter(pk=server.pk).update(ipv4=ready.ipv4)
            server.ipv4 = ready.ipv4
    started = float(ctx.context.get("ssh_wait_started") or time.time())
    try:
        remote.probe(server, log=ctx.log)
    except remote.ssh.SshError as exc:
        if time.time() - started > settings.PROVISIONING_SSH_WAIT_SECONDS:
            raise PermanentStepError(f"SSH never answered on {server.ipv4}:{server.ssh_port}: {exc}") from exc
        ctx.log(f"SSH not answering yet: {exc}")
        raise StepDeferred("waiting for SSH", delay=3) from exc
    return started


def wait_server_ready(ctx: StepContext) -> dict[str, Any]:
    order = _order(ctx)
    server = _server(order)
    started = server_answering(ctx, server)
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        order_set_status(locked, OrderStatus.SERVER_READY)
    ctx.log(f"{server.ipv4}:{server.ssh_port} answers SSH")
    return {"ssh_wait_started": started}


# --- 2. DNS: provisioning/services/dns.py (create_dns, delete_dns) -----------------------


# --- 3. setup over SSH --------------------------------------------------------------


def script_env(order: Order) -> dict[str, str]:
    return {
        "HUB_DOMAIN": order.domain,
        "HUB_ADMIN_EMAIL": settings.HUB_ADMIN_EMAIL,
        "HUB_URL": settings.HUB_PUBLIC_URL,
        "HUB_ORDER_ID": str(order.pk),
    }


def tools_env(order: Order, pins: dict[str, stacks.Pin]) -> dict[str, str]:
    """09-tools' files, generated and checked here: per tool one word each for its
    compose file, its vhost and its .env spec (base64), in HUB_STACK_<tool>."""
    env = {"HUB_TOOL_NAMES": " ".join(order.tools)}
    for name in order.tools:
        try:
            stack = stacks.tool_stack(name, domain=order.domain, pins=pins)
        except stacks.StackInvalid as exc:
            raise PermanentStepError(str(exc)) from exc
        env[f"HUB_STACK_{name}"] = " ".join(stacks.b64(text) for text in (stack.compose, stack.vhost, stack.env_spec))
    return env


def run_setup_script(name: str):
    def action(ctx: StepContext) -> None:
        order = _order(ctx)
        server = _server(order)
        env = script_env(order)
        if name == "09-tools":
            env.update(tools_env(order, _pins(ctx)))
        with transaction.atomic():
            order_set_status(Order.objects.select_for_update().get(pk=order.pk), OrderStatus.PROVISIONING)
            Server.objects.filter(pk=server.pk, touched=False).update(touched=True)
        if name == "07-backups" and order.tenant_id is not None:
            env.update(backup_script_env(tenant_id=order.tenant_id, log=ctx.log))
        ctx.log(f"running {name} on {server.ipv4}:{server.ssh_port}")
        remote.run_on_server(server, name=name, script=remote.step_script(name), env=env, log=ctx.log)

    action.__name__ = f"run_{name}"
    return action


# --- 4. hand over to the agent -----------------------------------------------------


def agent_bundle_b64() -> str:
    """The agent's code as the Hub runs it, shipped to the server with the step."""
    source = Path(settings.AGENT_SOURCE_DIR) / "agent"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source, arcname="agent", filter=lambda info: None if "__pycache__" in info.name else info)
    return base64.b64encode(buffer.getvalue()).decode()


def agent_handover(ctx: StepContext) -> dict[str, Any]:
    order = _order(ctx)
    server = _server(order)
    pins = _pins(ctx)
    try:
        ai_compose = stacks.ai_compose(pins=pins)
    except stacks.StackInvalid as exc:
        raise PermanentStepError(str(exc)) from exc
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.tenant_id is None:
            tenant = tenant_create(
                domain=order.domain,
                plan=order.plan,
                region=order.region,
                server_id=server.pk,
                versions={name: pin.version for name, pin in pins.items()},
                actor="provisioning",
            )
            locked.tenant = tenant
            locked.save(update_fields=["tenant", "updated_at"])
        tenant_id = locked.tenant_id
        assert tenant_id is not None  # created just above when it was missing
        _, token = registration_token_issue(
            tenant_id=tenant_id, actor="provisioning", ttl_seconds=settings.PROVISIONING_REGISTRATION_TOKEN_TTL
        )
    env = {
        **script_env(order),
        "HUB_REGISTRATION_TOKEN": token,
        "HUB_AGENT_BUNDLE_B64": agent_bundle_b64(),
        "HUB_AI_COMPOSE_B64": stacks.b64(ai_compose),
        "HUB_HEARTBEAT_INTERVAL": str(settings.AGENT_HEARTBEAT_INTERVAL),
    }
    ctx.log(
        f"tenant {tenant_id}: registration token issued (expires in {settings.PROVISIONING_REGISTRATION_TOKEN_TTL}s)"
    )
    remote.run_on_server(server, name="10-agent", script=remote.step_script("10-agent"), env=env, log=ctx.log)
    return {"tenant_id": tenant_id, "agent_wait_started": time.time()}


def revoke_agent(ctx: StepContext) -> None:
    order = _order(ctx)
    if order.tenant_id is None:
        return
    agent_access_revoke(tenant_id=order.tenant_id, actor="provisioning", reason=f"order {order.pk} rolled back")
    ctx.log(f"tenant {order.tenant_id}: registration tokens and keys revoked")


def wait_agent_registered(ctx: StepContext) -> dict[str, Any]:
    order = _order(ctx)
    assert order.tenant_id is not None  # agent_handover, before this step, gave it one
    tenant = Tenant.objects.get(pk=order.tenant_id)
    if tenant.registered_at is not None:
        ctx.log(f"agent registered from {tenant.agent_hostname} (version {tenant.agent_version})")
        return {"agent_registered_at": tenant.registered_at.isoformat()}
    waited = time.time() - float(ctx.context.get("agent_wait_started") or time.time())
    if waited > settings.PROVISIONING_AGENT_WAIT_SECONDS:
        raise PermanentStepError(f"the agent did not register within {settings.PROVISIONING_AGENT_WAIT_SECONDS}s")
    # The registration wakes this step (wake_on in provisioning.pipelines); the poll is the fallback.
    raise StepDeferred(
        f"waiting for the agent to register ({waited:.0f}s so far)", delay=settings.PROVISIONING_AGENT_POLL_SECONDS
    )


def jobs_waiting_for_agent(tenant_id: str) -> list[int]:
    """The provisioning jobs that may wait for this tenant's agent to register."""
    return list(
        Order.objects.filter(tenant_id=int(tenant_id), job__status=JobStatus.RUNNING).values_list("job_id", flat=True)
    )


def fulfil(ctx: StepContext) -> None:
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=int(ctx.subject_id))
        assert order.tenant_id is not None  # agent_handover, before this step, gave it one
        tenant_activate(tenant_id=order.tenant_id, actor="provisioning")
        order_set_status(order, OrderStatus.FULFILLED)
        enqueue_on_commit(SEND_WELCOME, order.pk)
    ctx.log("order fulfilled; welcome email on its way")
